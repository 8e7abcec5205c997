"""The command line against a shell glob, planted links, poisoned caches and odd outputs.

A command line of hundreds of paths, ``--files-from``, annotation copies that must not
write through a planted link or over an existing file, cache rows damaged on disk (a
face box of 1e30, features of 3e38, a thousand rows for one image), ``--n-jobs 1000``,
``embed --out`` to a link, a device or a missing folder, animated images, an InsightFace
pack that cannot be downloaded, a cache path that is not a cache. Each runs the real
command (``skagegender.cli.main`` or a child process) on real photos.
"""

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
import tomllib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image

from skagegender.cli import main
from skagegender.embedding import CACHED_FACES_LIMIT
from skagegender.embedding._cache import DamagedCacheWarning

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _jsonl(out):
    return [json.loads(line) for line in out.splitlines()]


def _requirement(name):
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(Requirement(d) for d in deps if Requirement(d).name == name)


# -- item 1: a long command line, --files-from ---------------------------------

def test_onnxruntime_releases_that_crash_on_long_command_lines_are_excluded():
    spec = _requirement("onnxruntime").specifier
    for crashing in ("1.29.0", "1.29.1", "1.30.0", "1.30.1"):
        assert crashing not in spec
    for fine in ("1.28.0", "1.31.1", "1.32.0"):
        assert fine in spec
    installed = version("onnxruntime")
    assert not installed.startswith(("1.29.", "1.30.")), installed


@pytest.mark.slow
def test_a_command_line_over_32_kb_runs_and_reports_every_input(tmp_path, portrait):
    folder = tmp_path / ("d" * 100)
    folder.mkdir()
    paths = []
    for i in range(600):
        path = folder / f"an_empty_file_with_a_long_name_{i:04d}_{'x' * 20}.jpg"
        path.touch()
        paths.append(str(path))
    paths.append(portrait)
    assert sum(len(p) + 1 for p in paths) > 32 * 1024 * 3
    done = subprocess.run([sys.executable, "-m", "skagegender", "predict", "--jsonl", *paths],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr[-2000:]  # 1: some inputs could not be read
    records = _jsonl(done.stdout)
    assert [r["path"] for r in records] == paths
    assert all(r["error"] == "the file is empty (0 bytes)" for r in records[:-1])
    assert records[-1]["error"] is None and len(records[-1]["faces"]) == 1


@pytest.mark.slow
def test_files_from_a_list_and_from_standard_input(tmp_path, portrait, capsys, monkeypatch):
    import io

    empty = tmp_path / "empty.jpg"
    empty.touch()
    odd = tmp_path / "odd name \udcff.jpg"  # undecodable byte, as a shell would pass it
    shutil.copy(portrait, odd)
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\n".join([os.fsencode(empty) + b"\r", b"", os.fsencode(odd)]) + b"\n")
    code, out, err = _run(capsys, ["predict", portrait, "--files-from", str(listing),
                                   "--jsonl"])
    records = _jsonl(out)
    assert code == 1, err
    assert [r["path"] for r in records] == [portrait, str(empty), str(odd)]
    assert [len(r["faces"]) for r in records] == [1, 0, 1]

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(listing.read_bytes())))
    code, out, err = _run(capsys, ["embed", "--files-from", "-", "--out",
                                   str(tmp_path / "e.npz"), "--json"])
    assert code == 1 and json.loads(out)["n_images"] == 2, err
    with np.load(tmp_path / "e.npz", allow_pickle=False) as data:
        assert data["paths"].tolist() == [str(empty), str(odd)]


def test_files_from_problems_are_usage_errors(tmp_path, capsys):
    code, _, err = _run(capsys, ["predict", "--files-from", str(tmp_path / "missing.txt")])
    assert code == 2 and "missing.txt" in err
    with pytest.raises(SystemExit) as info:  # argparse's usage error
        main(["predict"])
    assert info.value.code == 2 and "or --files-from FILE" in capsys.readouterr().err
    empty_list = tmp_path / "empty.txt"
    empty_list.write_bytes(b"\n\n")
    code, _, err = _run(capsys, ["predict", "--files-from", str(empty_list)])
    assert code == 2 and "no paths given" in err
    long_line = tmp_path / "zero.txt"
    long_line.write_bytes(b"x" * 200_000)  # no newline: not a list (e.g. /dev/zero)
    code, _, err = _run(capsys, ["predict", "--files-from", str(long_line)])
    assert code == 2 and "not a list of paths" in err


# -- item 2: annotation copies ---------------------------------------------------

@pytest.mark.slow
def test_a_planted_link_is_never_written_through_and_existing_files_are_kept(
        tmp_path, portrait, capsys):
    photos = tmp_path / "photos"
    (photos / "a").mkdir(parents=True)
    (photos / "b").mkdir()
    one, two = photos / "a" / "face.png", photos / "b" / "face.png"
    shutil.copy(portrait, one)
    shutil.copy(portrait, two)
    out_dir = tmp_path / "annotated"
    out_dir.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    # The old writer saved to NAME.partial (following a link there) and renamed it.
    (out_dir / "face.png.partial").symlink_to(victim)
    (out_dir / "face-2.png").symlink_to(victim)  # the second input's name

    code, out, _err = _run(capsys, ["predict", str(one), str(two), "--annotate",
                                   str(out_dir), "--jsonl"])
    assert victim.read_text() == "precious"
    records = _jsonl(out)
    assert records[0]["error"] is None and records[0]["annotated"] == str(out_dir / "face.png")
    written = out_dir / "face.png"
    assert written.is_file() and not written.is_symlink()
    assert Image.open(written).size == Image.open(portrait).size
    assert "it exists (pass --overwrite" in records[1]["error"] and code == 1
    assert (out_dir / "face-2.png").is_symlink()

    # An existing copy is kept unless --overwrite; a link is never replaced.
    before = written.read_bytes()
    written.write_bytes(b"mine")
    code, out, _ = _run(capsys, ["predict", str(one), "--annotate", str(out_dir), "--jsonl"])
    assert code == 1 and written.read_bytes() == b"mine"
    code, out, _ = _run(capsys, ["predict", str(one), str(two), "--annotate", str(out_dir),
                                 "--jsonl", "--overwrite"])
    records = _jsonl(out)
    assert records[0]["error"] is None and written.read_bytes() == before
    assert "link or special file, not replaced" in records[1]["error"]
    assert victim.read_text() == "precious" and (out_dir / "face-2.png").is_symlink()
    leftovers = [p.name for p in out_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


# -- item 3: damaged cache rows --------------------------------------------------

def _cache_rows(folder):
    db = sqlite3.connect(folder / "embeddings.sqlite")
    return db, db.execute("SELECT backbone_key, item_key, features, face FROM embeddings "
                          "WHERE status = 0").fetchall()


@pytest.mark.slow
@pytest.mark.shared_data
def test_poisoned_cache_rows_are_recomputed_and_the_batch_completes(
        tmp_path, utkface_paths, capsys):
    photos = utkface_paths[:4]
    cache = tmp_path / "cache"
    code, out, err = _run(capsys, ["predict", *photos, "--cache", str(cache), "--jsonl"])
    assert code == 0, err
    clean = _jsonl(out)
    assert all(len(r["faces"]) == 1 for r in clean)

    db, rows = _cache_rows(cache)
    by_item = {item.rsplit(":", 1)[0]: (bb, item, feats, face) for bb, item, feats, face in rows}
    assert len(by_item) == 4
    (_, item0, feats0, face0), (_, item1, feats1, _), (_, item2, _, face2), (bb3, item3, _, _) = (
        by_item[k] for k in sorted(by_item))
    values = list(struct.unpack("<15f", face0))
    values[:4] = [1e30, 1e30, 2e30, 2e30]  # a box of 1e30: a cv2.error under --annotate
    db.execute("UPDATE embeddings SET face = ? WHERE item_key = ?",
               [struct.pack("<15f", *values), item0])
    inf_like = np.full(len(feats1) // 4, 3e38, np.float32).tobytes()  # "contains infinity"
    db.execute("UPDATE embeddings SET features = ? WHERE item_key = ?", [inf_like, item1])
    values = list(struct.unpack("<15f", face2))
    values[:4] = [5000, 5000, 5100, 5100]  # finite, but off this 200 x 200 image
    values[5:] = [5050] * 10
    db.execute("UPDATE embeddings SET face = ? WHERE item_key = ?",
               [struct.pack("<15f", *values), item2])
    stem3 = item3.rsplit(":", 1)[0]  # more faces than an image has: no "no more" row
    db.execute("DELETE FROM embeddings WHERE item_key LIKE ?", [stem3 + ":%"])
    db.executemany("INSERT INTO embeddings VALUES (?, ?, 0, ?, ?, NULL)",
                   [(bb3, f"{stem3}:{j}", feats0, face0) for j in range(CACHED_FACES_LIMIT + 5)])
    db.commit()
    db.close()

    start = time.perf_counter()
    with pytest.warns(DamagedCacheWarning, match="2 damaged rows") as caught:
        code, out, err = _run(capsys, ["predict", *photos, "--cache", str(cache), "--jsonl",
                                       "--annotate", str(tmp_path / "annotated")])
    assert len(caught) == 1  # the box of 1e30 and the features of 3e38, read as damaged
    assert time.perf_counter() - start < 60
    assert code == 0, err
    again = _jsonl(out)
    for before, after in zip(clean, again):
        assert after["error"] is None and len(after["faces"]) == 1
        assert after["faces"][0]["box"] == pytest.approx(before["faces"][0]["box"], abs=1e-3)
        assert after["faces"][0]["age"] == pytest.approx(before["faces"][0]["age"], abs=1e-3)
    assert "held damaged faces for 2 inputs" in err  # the box off the image, the 1005 rows
    # The rows were written again, whole: a third run reads them without complaint.
    code, out, err = _run(capsys, ["predict", *photos, "--cache", str(cache), "--jsonl"])
    assert code == 0 and "damaged" not in err
    assert [r["faces"][0]["age"] for r in _jsonl(out)] == pytest.approx(
        [r["faces"][0]["age"] for r in clean], abs=1e-3)


def test_the_embedding_cache_ignores_rows_beyond_the_networks_range(tmp_path):
    from skagegender.embedding import EmbeddingCache, Outcome

    with EmbeddingCache(tmp_path, "bb", dim=3) as cache:
        cache.put([("big", np.full(3, 3e38, np.float32), None, Outcome("ok")),
                   ("fine", np.ones(3, np.float32), None, Outcome("ok"))])
        assert len(cache) == 1  # rows beyond the range are not stored
    db = sqlite3.connect(tmp_path / "embeddings.sqlite")
    db.execute("INSERT INTO embeddings VALUES ('bb', 'big', 0, ?, NULL, NULL)",
               [np.full(3, 3e38, np.float32).tobytes()])
    db.commit()
    db.close()
    with EmbeddingCache(tmp_path, "bb", dim=3) as cache, pytest.warns(
            DamagedCacheWarning, match="1 damaged rows"):
        assert list(cache.get(["big", "fine"])) == ["fine"]


# -- item 6: --n-jobs ---------------------------------------------------------------

def test_n_jobs_is_capped_at_the_tasks_and_the_cores():
    from joblib import cpu_count

    from skagegender._utils import capped_n_jobs

    assert capped_n_jobs(1000, 2) == min(2, cpu_count())
    assert capped_n_jobs(-1, 10**6) == cpu_count()
    assert capped_n_jobs(None, 5) == capped_n_jobs(1, 5) == 1
    assert capped_n_jobs(8, 0) == 1


@pytest.mark.slow
def test_n_jobs_1000_on_two_images_starts_two_workers_and_says_so(tmp_path, portrait):
    second = tmp_path / "second.png"
    shutil.copy(portrait, second)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "skagegender", "predict", portrait,
                           str(second), "--n-jobs", "1000", "--jsonl"],
                          capture_output=True, text=True, timeout=120, check=False)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    assert [len(r["faces"]) for r in _jsonl(done.stdout)] == [1, 1]
    assert "warning: --n-jobs 1000: starting" in done.stderr and "(2 inputs" in done.stderr
    assert seconds < 60


# -- item 7 and issue 25 item 6: output paths ----------------------------------------

@pytest.mark.slow
def test_embed_out_reports_the_file_written_and_refuses_links_and_devices(
        tmp_path, portrait, capsys):
    code, out, err = _run(capsys, ["embed", portrait, "--out", str(tmp_path / "a.jpg"),
                                   "--json"])
    assert code == 0, err
    assert json.loads(out)["out"] == str(tmp_path / "a.jpg.npz")
    assert (tmp_path / "a.jpg.npz").is_file() and not (tmp_path / "a.jpg").exists()

    victim = tmp_path / "victim.npz"
    victim.write_bytes(b"precious")
    link = tmp_path / "link.npz"
    link.symlink_to(victim)
    for out_path, reason in ((link, "symbolic link"), ("/dev/null", "special file"),
                             (tmp_path, "is a folder")):
        start = time.perf_counter()
        code, out, err = _run(capsys, ["embed", portrait, "--out", str(out_path), "--json"])
        assert code == 2 and out == "" and reason in err, err
        assert time.perf_counter() - start < 1.0  # refused before any embedding
    assert victim.read_bytes() == b"precious" and link.is_symlink()
    assert not os.path.exists("/dev/null.npz")


@pytest.mark.shared_data
def test_out_to_a_missing_folder_fails_before_any_work(tmp_path, portrait, capsys,
                                                       shared_data):
    missing = tmp_path / "missing" / "dir"
    start = time.perf_counter()
    code, _out, err = _run(capsys, ["embed", portrait, "--out", str(missing / "x.npz")])
    assert code == 2 and f"--out {missing / 'x.npz'}" in err and "does not exist" in err
    code, _, err = _run(capsys, ["train", "--dataset", "utkface", "--root",
                                   str(shared_data / "UTKFace"), "--limit", "20",
                                   "--out", str(missing / "m.skag")])
    assert code == 2 and f"--out {missing / 'm.skag'}" in err and ".tmp" not in err
    assert time.perf_counter() - start < 1.0
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = _run(capsys, ["embed", portrait, "--out", str(locked / "x.npz")])
        assert code == 2 and "cannot write in the folder" in err


# -- item 8: animations and multi-page files ------------------------------------------

@pytest.mark.slow
def test_animated_and_multi_page_images_say_which_frame_was_read(tmp_path, portrait, capsys):
    face = Image.open(portrait).convert("RGB")
    frames = [face, face.transpose(Image.Transpose.FLIP_LEFT_RIGHT), face.rotate(10)]
    files = {}
    for name, count, options in (("anim.gif", 3, {}), ("anim.webp", 3, {"lossless": True}),
                                 ("pages.tiff", 2, {})):
        files[name] = tmp_path / name
        frames[0].save(files[name], save_all=True, append_images=frames[1:count], **options)
    still = tmp_path / "still.gif"
    face.save(still)
    argv = [*map(str, files.values()), str(still)]
    code, out, err = _run(capsys, ["predict", *argv, "--jsonl"])
    assert code == 0, err
    records = _jsonl(out)
    assert [r.get("note") for r in records] == ["first frame of 3 read", "first frame of 3 read",
                                                 "first frame of 2 read", None]
    assert all(len(r["faces"]) == 1 for r in records)
    code, out, err = _run(capsys, ["predict", str(files["anim.gif"])])
    assert f"{files['anim.gif']}: first frame of 3 read" in err
    code, _, err = _run(capsys, ["embed", *argv, "--out", str(tmp_path / "e.npz")])
    with np.load(tmp_path / "e.npz", allow_pickle=False) as data:
        assert data["notes"].tolist() == ["first frame of 3 read", "first frame of 3 read",
                                          "first frame of 2 read", ""]


# -- item 9: an InsightFace pack that cannot be downloaded -----------------------------

@pytest.mark.slow
def test_a_missing_insightface_pack_offline_is_a_clear_error_and_stdout_stays_json(
        tmp_path, portrait):
    pytest.importorskip("insightface")
    env = {**os.environ, "INSIGHTFACE_HOME": str(tmp_path / "if"),
           # nothing listens there: the download fails at once, with or without internet
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    done = subprocess.run([sys.executable, "-m", "skagegender", "embed", portrait,
                           "--backbone", "buffalo_l", "--json", "--out",
                           str(tmp_path / "x.npz")],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.stdout == ""
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "InsightFace pack 'buffalo_l'" in done.stderr
    assert str(tmp_path / "if" / "models" / "buffalo_l") in done.stderr


# -- item 10: dependency floors ----------------------------------------------------------

def test_image_and_archive_dependencies_have_fixed_floors():
    pillow = _requirement("pillow").specifier
    for vulnerable in ("10.1.0", "10.2.0", "11.2.1", "12.2.0"):
        assert vulnerable not in pillow  # CVE-2023-50447, -2024-28219, -2025-48379, ...
    assert "12.3.0" in pillow
    assert "4.8.0.76" not in _requirement("opencv-python-headless").specifier
    assert "0.11.0" not in _requirement("skops").specifier


# -- item 11: a cache path that is not a cache ---------------------------------------------

@pytest.mark.slow
def test_a_cache_path_that_is_not_a_cache_is_a_usage_error(tmp_path, capsys):
    empty = tmp_path / "empty.jpg"
    empty.touch()
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    folder_inside = tmp_path / "c1"
    (folder_inside / "embeddings.sqlite").mkdir(parents=True)
    foreign = tmp_path / "c2"
    foreign.mkdir()
    db = sqlite3.connect(foreign / "embeddings.sqlite")
    db.execute("CREATE TABLE accounts (name TEXT)")
    db.commit()
    db.close()
    for cache, words in ((a_file, "is not a folder"), (folder_inside, "not a regular file"),
                         (foreign, "another program")):
        code, out, err = _run(capsys, ["predict", str(empty), "--cache", str(cache)])
        assert code == 2 and words in err and out == "", err
    assert a_file.read_text() == "not a folder"


def test_evaluate_json_turns_every_non_finite_number_into_null():
    from skagegender.cli._common import _json
    from skagegender.cli.evaluate import _rounded

    text = _json(_rounded({"mae": float("inf"), "per_group": {"0-12": [float("nan"),
                                                                      -float("inf"), 1.23456]}}))
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}")) == {
        "mae": None, "per_group": {"0-12": [None, None, 1.2346]}}
