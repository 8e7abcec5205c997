"""Smoke runs of the training scripts and ``benchmarks/accuracy.py`` on tiny data.

Each script runs end to end as a subprocess on a folder of symbolic links to 240
UTKFace images and the 127 FG-NET images of subjects 001-010 of the shared data (never copies), with
``--limit`` keeping a seeded subset of the UTKFace ones; caches, maps, models and
results go to temporary folders (never over the shipped model or the committed
results). The tests read back what the run measured and check that it is sane.
"""

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from test_benchmarks import _link
from test_benchmarks import _run as run_script

REPO = Path(__file__).resolve().parents[1]
N_LINKED = 240  # UTKFace images in the tiny data folder
LIMIT = 50  # of which train_compact.py uses a seeded subset of this many
# the fine-tuned SFace layer needs at least one batch (128) of training faces
LIMIT_TORCH, N_CALIBRATION = 200, 20
N_FGNET = 127


def _run(argv, timeout=900):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # keeps SKAGEGENDER_HOME and the rest
    return run_script(argv, REPO, timeout, env=env)


@pytest.fixture(scope="module")
def tiny_data(shared_data, fgnet_ten, tmp_path_factory):
    """A data folder of links: UTKFace/ (240 images spread over the ages) and FGNET/
    (subjects 001-010)."""
    root = tmp_path_factory.mktemp("tiny-data")
    paths = sorted((shared_data / "UTKFace").glob("*.jpg"))
    _link(paths[3 :: len(paths) // N_LINKED][:N_LINKED], root / "UTKFace")
    for sub in ("images", "points"):
        _link(sorted((fgnet_ten / sub).iterdir()), root / "FGNET" / sub)
    return root


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Embedding cache and frozen-maps folders shared by the tests of this module."""
    root = tmp_path_factory.mktemp("caches")
    return root / "emb-cache", root / "maps-cache"


SCRIPTS = ("scripts/train_compact.py", "scripts/train_pretrained.py", "benchmarks/accuracy.py")


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_use_no_machine_path_and_run_on_tiny_data_elsewhere(name):
    source = (REPO / name).read_text()
    assert not re.search(r"[\"']/(?:home|root|work|opt|usr|tmp|mnt)/", source)
    assert "--limit" in source and "--out" in source


def _sane_mae(value):
    return math.isfinite(value) and 0 <= value < 40


def _check_compact_results(results, n_utk):
    result = json.loads((results / "compact_model.json").read_text())
    assert set(result["models"]) >= {"compact", "compact+dlib_age", "default", "peer"}
    assert result["shipped"] in ("compact", "compact+dlib_age")
    assert set(result["calibration_cv_mae"]) == {"compact", "compact+dlib_age"}
    compact = result["models"][result["shipped"]]
    held_out = compact["utkface"]["n"]
    assert 0 < held_out < n_utk  # the held-out fifth of the subset
    for model in ("compact", "compact+dlib_age", "default", "peer"):
        assert result["models"][model]["utkface"]["n"] == held_out
        assert _sane_mae(result["models"][model]["utkface"]["mae"])
        assert result["models"][model]["fgnet_001_010"]["n"] == N_FGNET
    assert 0 <= compact["utkface"]["interval_coverage"] <= 1
    assert 0 <= compact["utkface"]["gender_accuracy"] <= 1
    assert len(compact["fgnet_001_010"]["per_subject_mae"]) == 10
    assert "(**shipped fast**)" in (results / "compact_model.md").read_text()
    return result


@pytest.mark.slow
def test_train_compact_prepares_evaluates_and_ships_on_tiny_data(tiny_data, tmp_path):
    """prep (crops, the teacher's targets), then ship with the packaged network."""
    import shutil

    from skagegender.embedding import COMPACT
    from skagegender.model import AgeGenderModel

    work, results, out = tmp_path / "work", tmp_path / "results", tmp_path / "fast.skag"
    script = REPO / "scripts" / "train_compact.py"
    _run([script, "prep", "--data", tiny_data, "--work", work, "--limit", LIMIT])
    teacher = sorted((work / "teacher").glob("*.npz"))
    assert [p.name for p in teacher] == ["utkface-degraded_000.npz", "utkface_000.npz"]
    with np.load(teacher[1]) as targets:  # the teacher's P(female), not its confidence
        assert len(targets["age"]) == LIMIT and (targets["female"] < 0.5).any()
    (work / "models").mkdir()
    shutil.copy(COMPACT.asset.path(), work / "models" / "smoke.onnx")
    _run([script, "ship", "--data", tiny_data, "--work", work, "--limit", LIMIT, "--tag",
          "smoke", "--results", results, "--out", out])
    result = _check_compact_results(results, LIMIT)
    model = AgeGenderModel.load(out)
    shipped = {"compact": ("compact",), "compact+dlib_age": ("compact", "dlib_age")}
    assert model.embedder_.layers == shipped[result["shipped"]]
    assert model.meta_["accuracy"]["utkface_mae"] == pytest.approx(
        result["models"][result["shipped"]]["utkface"]["mae"], abs=1e-3)
    face, = model.predict_faces(str(next((tiny_data / "FGNET" / "images").iterdir())))
    assert math.isfinite(face["age"]) and face["age_interval"] is not None


@pytest.mark.slow
def test_train_compact_trains_resumes_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    pytest.importorskip("torch")
    work, results = tmp_path / "work", tmp_path / "results"
    script = REPO / "scripts" / "train_compact.py"
    common = ["--data", tiny_data, "--work", work, "--limit", LIMIT_TORCH]
    _run([script, "prep", *common])
    train = [script, "train", *common, "--epochs", 2, "--batch-size", 32, "--threads", 1,
             "--tag", "tiny"]
    first = _run([*train, "--stop-after-steps", 3])
    assert "exported" not in first  # stopped early: a checkpoint, no network yet
    assert (work / "runs" / "tiny" / "checkpoint.pt").is_file()
    second = _run(train)
    assert "'epoch': 2" in second and "exported" in second
    assert (work / "models" / "tiny.onnx").is_file()
    _run([script, "evaluate", *common, "--tag", "tiny", "--results", results, "--no-peer"])
    result = json.loads((results / "compact_model.json").read_text())
    assert _sane_mae(result["models"]["compact"]["utkface"]["mae"])
    # the levers table: the run beside its size, speed and accuracy in every domain
    stdout = _run([script, "levers", *common, "--tags", "tiny", "--results", results])
    levers = json.loads((results / "compact_levers.json").read_text())
    run = levers["runs"]["tiny"]
    assert (run["width"], run["size"], run["epochs"]) == (0.5, 64, 2)
    assert 30e6 < run["multiply_adds"] < 70e6
    assert all(ms > 0 for ms in run["ms_per_face"].values()) and "onnxruntime" in run["ms_per_face"]
    assert set(run["domains"]) == {"utkface", "utkface_degraded", "fgnet"}
    assert all(_sane_mae(report["mae"]) for report in run["domains"].values())
    assert len(run["domains"]["fgnet"]["per_subject_mae"]) == 10
    assert "| tiny | 0.5 | 64 |" in (results / "compact_levers.md").read_text()
    assert "tiny: utkface" in stdout


@pytest.mark.slow
def test_train_pretrained_runs_end_to_end_on_tiny_data(tiny_data, caches, tmp_path):
    pytest.importorskip("torch")
    from skagegender.model import AgeGenderModel

    out = tmp_path / "default.skag"
    stdout = _run([REPO / "scripts" / "train_pretrained.py", "--data", tiny_data,
                   "--cache", caches[0], "--maps", caches[1], "--limit", LIMIT_TORCH,
                   "--n-calibration", N_CALIBRATION, "--n-jobs", 1, "--out", out])
    assert "calibration rows" in stdout
    model = AgeGenderModel.load(out)
    n_train = LIMIT_TORCH - N_CALIBRATION
    assert f"{n_train} of {LIMIT_TORCH} images" in model.meta_["trained_on"]
    assert model.meta_["calibrated_on"].startswith(f"{N_CALIBRATION} held-out")
    # training faces + degraded copies of them + FG-NET x FGNET_WEIGHT
    assert n_train < model.meta_["n_training_rows"] < n_train * 2 + N_FGNET * 100
    # the written model predicts: two FG-NET photos (a child, an adult) get plausible ages
    ages = model.predict([str(tiny_data / "FGNET" / "images" / n)
                          for n in ("001A02.JPG", "002A29.JPG")])
    assert np.isfinite(ages).all() and (ages >= 0).all() and (ages <= 100).all()


@pytest.mark.slow
def test_accuracy_benchmark_runs_end_to_end_on_tiny_data(tiny_data, caches, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "results"
    _run([REPO / "benchmarks" / "accuracy.py", "--data", tiny_data, "--cache", caches[0],
          "--maps", caches[1], "--limit", LIMIT_TORCH, "--n-jobs", 1, "--timing-images", 0,
          "--tag", "smoke", "--out-dir", out])
    result = json.loads((out / "accuracy-smoke.json").read_text())
    utk, deg, fg = result["utkface_cv"], result["utkface_degraded"], result["fgnet"]
    assert utk["n"] == LIMIT_TORCH and fg["n"] == N_FGNET
    assert deg["n"] == round(6000 * LIMIT_TORCH / 18978)  # copies in proportion
    for r in (utk, deg, fg):
        assert _sane_mae(r["mae"])
        assert 0 <= r["cs5"] <= 1 and 0 <= r["one_class_off"] <= 1
    assert 0 <= utk["gender_accuracy"] <= 1
    # 80 % intervals measured on every domain, FG-NET per subject too
    overall = utk["uncertainty"]["interval"][0]
    assert overall["n"] <= LIMIT_TORCH and 0 <= overall["coverage"] <= 1
    assert len(fg["uncertainty"]["interval_by_subject"]) == 10
    assert result["seconds_per_image"] is None
    assert f"{LIMIT_TORCH} images" in result["protocol"]
    assert f"| utkface_cv | {LIMIT_TORCH} |" in (out / "accuracy-smoke.md").read_text()


@pytest.mark.slow
def test_accuracy_calibration_study_runs_end_to_end_on_tiny_data(tiny_data, caches, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "results"
    _run([REPO / "benchmarks" / "accuracy.py", "--calibration-study", "--data", tiny_data,
          "--cache", caches[0], "--maps", caches[1], "--limit", LIMIT_TORCH, "--n-jobs", 1,
          "--out-dir", out])
    result = json.loads((out / "uncertainty.json").read_text())
    # the calibration rows in proportion to the limit (2,100 of 18,978), 30 % of them
    # degraded, FG-NET once each
    n_utk = round(LIMIT_TORCH * 2100 / 18978)
    utk, deg, fg = result["utkface_cv"], result["utkface_degraded"], result["fgnet"]
    assert (utk["n"], deg["n"], fg["n"]) == (n_utk, n_utk * 3 // 10, N_FGNET)
    for domain in (utk, deg, fg):
        overall = domain["uncertainty"]["interval"][0]
        assert overall["group"] == "all" and overall["n"] == domain["n"]
        assert 0 <= overall["coverage"] <= 1 and overall["mean_width"] > 0
    assert len(fg["uncertainty"]["interval_by_subject"]) == 10
    # three gender probabilities of the same rows: uncalibrated, cross-fitted, frozen
    for key in ("gender_uncalibrated", "gender", "gender_held_out_fold"):
        overall = utk["uncertainty"][key][0]
        assert overall["n"] == n_utk and 0.5 <= overall["mean_confidence"] <= 1
        assert 0 <= overall["ece"] <= 1
    assert "gender" not in fg["uncertainty"]
    assert f"| utkface_cv | all | {n_utk} |" in (out / "uncertainty.md").read_text()


@pytest.mark.slow
def test_accuracy_benchmark_levers_on_tiny_data(tiny_data, caches, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "results"
    levers = ["--layer-augment", "--layer-balance", "--layer-fgnet", 10, "--gate-sigma", 1,
              "--gate-fgnet-weight", 5]
    _run([REPO / "benchmarks" / "accuracy.py", "--data", tiny_data, "--cache", caches[0],
          "--maps", caches[1], "--limit", LIMIT_TORCH, "--n-jobs", 1, "--timing-images", 0,
          "--out-dir", out, *levers])
    tag = "layer-augment-balance-fgnet10-gate-s1-w5"
    assert sorted(p.name for p in out.iterdir()) == [f"accuracy-{tag}.json",
                                                      f"accuracy-{tag}.md"]
    result = json.loads((out / f"accuracy-{tag}.json").read_text())
    assert result["tag"] == tag
    assert result["options"] == {"layer_augment": True, "layer_balance": True,
                                 "layer_fgnet": 10, "gate_sigma": 1, "gate_fgnet_weight": 5}
    command = " ".join(str(a) for a in levers)
    assert result["command"] == f"python benchmarks/accuracy.py {command}"
    assert "weight 10" in result["protocol"] and "FG-NET weight 5" in result["protocol"]
    for name in ("utkface_cv", "utkface_degraded", "fgnet"):
        assert _sane_mae(result[name]["mae"])
        assert 0 <= result[name]["cs5"] <= 1
    spread = result["fgnet"]["subject_mae"]
    assert spread["n_subjects"] == 10 == len(result["fgnet"]["mae_by_subject"])
    assert math.isfinite(spread["mean"]) and math.isfinite(spread["sd"]) and spread["sd"] >= 0
    text = (out / f"accuracy-{tag}.md").read_text()
    assert text.splitlines()[:3] == [f"# Accuracy ({tag})", "",
                                     f"Levers: `python benchmarks/accuracy.py {command}`"]
    assert "FG-NET MAE per subject: mean" in text


# -- benchmarks/accuracy.py's layer levers, on small random maps (needs torch) ------


@pytest.fixture(scope="module")
def accuracy_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("accuracy_benchmark",
                                                  REPO / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_balance_weights_are_inverse_square_root_frequency_with_mean_one(accuracy_module):
    weight = accuracy_module.balance_weights(np.array([20.0, 20.3, 20.9, 60.0]))
    assert weight.mean() == pytest.approx(1.0)
    # three faces aged 20 (1-year bins), one aged 60: weights 1/sqrt(3) : 1
    assert weight[0] == weight[1] == weight[2]
    assert weight[3] / weight[0] == pytest.approx(np.sqrt(3))


@pytest.fixture(scope="module")
def lever_data():
    """160 UTKFace-like rows of random maps, 40 degraded copies, 20 FG-NET rows."""
    from sklearn.utils import Bunch

    rng = np.random.default_rng(0)

    def maps(n):
        return rng.gamma(1.0, 0.5, size=(n, 1024, 7, 7)).astype(np.float16)

    utk = Bunch(age=rng.uniform(1, 80, 160),
                gender=np.where(rng.random(160) < 0.5, "female", "male").astype(object))
    utk_maps = (maps(160), np.ones(160, bool))
    source = np.r_[np.arange(20), np.arange(140, 160)]  # copies of rows 0-19 and 140-159
    degraded = (source, maps(40), np.ones(40, bool))
    fgnet = (maps(20), np.ones(20, bool), rng.uniform(1, 60, 20), np.full(20, np.nan))
    return utk, utk_maps, degraded, fgnet


def _lever_outputs(module, data, train, fgnet_rows=None, **levers):
    pytest.importorskip("torch")
    utk, utk_maps, degraded, fgnet = data
    layer = module.train_layer(utk, utk_maps, train,
                               module.LayerLevers(**levers, degraded=degraded, fgnet=fgnet),
                               fgnet_rows)
    return layer.outputs(utk_maps[0][:16])


@pytest.mark.slow
def test_layer_levers_train_on_the_rows_they_name(accuracy_module, lever_data):
    train = np.arange(140)  # copies of rows 0-19 are training rows, of 140-159 not
    plain = _lever_outputs(accuracy_module, lever_data, train)
    # no lever, or an FG-NET lever without FG-NET rows: the recipe's layer, exactly
    np.testing.assert_array_equal(
        _lever_outputs(accuracy_module, lever_data, train, np.zeros(0, int), fgnet_weight=10),
        plain)
    for levers, rows in (({"augment": True}, None), ({"balance": True}, None),
                         ({"fgnet_weight": 10}, np.arange(10))):
        changed = _lever_outputs(accuracy_module, lever_data, train, rows, **levers)
        assert np.isfinite(changed).all()
        assert np.abs(changed - plain).max() > 1e-4, levers


@pytest.mark.slow
def test_layer_augment_uses_only_the_copies_of_training_rows(accuracy_module, lever_data):
    utk, utk_maps, (source, deg_maps, found), fgnet = lever_data
    train = np.arange(140)
    augmented = _lever_outputs(accuracy_module, lever_data, train, augment=True)
    # the copies of rows 140-159 (outside train) replaced by other maps: same layer
    other = deg_maps.copy()
    other[source >= 140] = deg_maps[::-1][source >= 140]
    again = _lever_outputs(accuracy_module, (utk, utk_maps, (source, other, found), fgnet),
                           train, augment=True)
    np.testing.assert_array_equal(again, augmented)
