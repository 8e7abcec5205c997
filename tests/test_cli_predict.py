"""``skagegender predict``: streaming output, Ctrl-C, folders, --annotate, --cache, --n-jobs.

Every test runs the shipped model on real photos: UTKFace images from ``../shared/data``
and insightface's group photo ``t1.jpg`` (6 faces).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

from skagegender.cli import main


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def utk40(shared_data):
    """40 UTKFace photos (200 x 200, one face each), a seeded sample."""
    paths = sorted(str(p) for p in (shared_data / "UTKFace").glob("*.jpg"))
    keep = np.random.default_rng(1).choice(len(paths), size=40, replace=False)
    return [paths[i] for i in keep]


@pytest.mark.slow
def test_jsonl_streams_and_ctrl_c_keeps_the_finished_lines(utk40):
    # A real process and a real SIGINT once the first results are on stdout. The photos ten
    # times over (400 inputs, several seconds of work), so that a busy machine, which may
    # leave this process waiting, never lets the run finish before the signal.
    inputs = utk40 * 10
    # The child starts with SIGINT's default handling: a process that ignores SIGINT (some
    # test runners' workers do) passes that on, and Python then never raises
    # KeyboardInterrupt (the run went on to the end and exited 0).
    # stderr goes to a file: a full stderr pipe can never block the process
    with tempfile.TemporaryFile("w+") as err_file:
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "skagegender", "predict", "--jsonl", *inputs],
                stdout=subprocess.PIPE, stderr=err_file, text=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        try:
            first = [proc.stdout.readline() for _ in range(3)]
            # each line arrived on its own, before the run ended: it is streamed
            assert all(line.endswith("\n") for line in first)
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            # read on through the same buffered pipe: lines that came with the first
            # three wait in its buffer
            rest = proc.stdout.read()
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
        err_file.seek(0)
        err = err_file.read()
    assert proc.returncode == 130, err[-3000:]
    lines = first + rest.splitlines(keepends=True)
    records = [json.loads(line) for line in lines]  # every finished line is whole JSON
    done = len(records)
    assert 3 <= done < len(inputs), err[-3000:]
    assert [r["path"] for r in records] == inputs[:done]  # input order
    assert all(r["error"] is None and len(r["faces"]) == 1 for r in records)
    assert f"{done} of {len(inputs)} inputs done" in err, err[-3000:]


@pytest.mark.slow
def test_plain_mode_streams_results_and_sends_errors_to_stderr(group_photo, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.open(group_photo).save(folder / "group.png")
    for name in ("a.avif", "b.ico", "c.jp2"):  # formats skagegender does not read
        (folder / name).write_bytes(b"\0" * 64)
    bad = tmp_path / "bad\nname.jpg"  # a newline in a file name must not forge a line
    bad.write_bytes(b"not a jpeg")
    latin1 = tmp_path / os.fsdecode(b"caf\xe9.png")  # not UTF-8: printed as \xe9
    latin1.write_bytes(b"not a png")
    icon = tmp_path / "named.ico"  # named explicitly: tried, refused by the loader
    Image.new("RGB", (64, 64), "red").save(icon)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = _run(capsys, ["predict", str(bad), str(folder), str(icon), str(empty),
                                   str(latin1)])
    assert code == 1  # some inputs failed, the others are reported
    lines = out.splitlines()
    assert len(lines) == 6 and all(line.startswith(f"{folder / 'group.png'} face ")
                                   for line in lines)
    assert "ERROR" not in out and "bad" not in out
    assert "skipped 3 files with unsupported suffixes: .avif, .ico, .jp2" in err
    assert f"{tmp_path}/bad\\nname.jpg: not a recognised image" in err
    assert f"{icon}: unsupported format" in err
    assert f"{empty}: no image files in this folder" in err
    assert f"{tmp_path}/caf\\xe9.png: not a recognised image" in err
    assert len(err.splitlines()) == 5


def test_json_records_every_named_path_and_only_empty_folders_is_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image here")
    code, out, err = _run(capsys, ["predict", "--jsonl", str(empty)])
    assert code == 2 and out == ""
    assert "no image files in this folder" in err and "nothing to do" in err
    assert "skipped 1 file with unsupported suffixes: .txt" in err


@pytest.mark.slow
def test_annotate_draws_every_face_and_numbers_a_padded_copy_alike(group_photo, tmp_path,
                                                                   capsys):
    original = Image.open(group_photo).convert("RGB")
    pad_x, pad_y = 90, 50
    padded = Image.new("RGB", (original.width + pad_x + 20, original.height + pad_y), "gray")
    padded.paste(original, (pad_x, pad_y))
    other = tmp_path / "copy"  # the same file name in another folder
    other.mkdir()
    padded.save(other / "t1.jpg", quality=95)
    out_dir = tmp_path / "annotated"
    code, out, _ = _run(capsys, ["predict", "--json", "--annotate", str(out_dir), group_photo,
                                 str(other / "t1.jpg")])
    assert code == 0
    first, second = json.loads(out)
    assert first["annotated"] == str(out_dir / "t1.jpg")
    assert second["annotated"] == str(out_dir / "t1-2.jpg")  # no overwrite
    assert len(first["faces"]) == len(second["faces"]) == 6

    # numbered left to right by box centre, alike in both copies
    centres = [(f["box"][0] + f["box"][2]) / 2 for f in first["faces"]]
    assert centres == sorted(centres)
    for a, b in zip(first["faces"], second["faces"]):
        shifted = np.array(b["box"]) - [pad_x, pad_y, pad_x, pad_y]
        assert np.abs(shifted - a["box"]).max() < 0.1 * (a["box"][2] - a["box"][0])
        assert abs(a["age"] - b["age"]) < 8

    for record, source in ((first, original), (second, padded)):
        drawn = Image.open(record["annotated"])
        assert drawn.format == "JPEG" and drawn.size == source.size
        drawn = np.asarray(drawn.convert("RGB"), dtype=float)
        plain = np.asarray(source, dtype=float)
        for face in record["faces"]:
            x1, y1, _, y2 = (round(v) for v in face["box"])
            # the box's outline: a line of drawn pixels on the face's border
            edge = np.abs(drawn[y1:y2, x1 - 1:x1 + 2] - plain[y1:y2, x1 - 1:x1 + 2]).mean()
            assert edge > 20
        # far from every face (the bottom rows: the table) only JPEG noise
        assert np.abs(drawn[-60:] - plain[-60:]).mean() < 4


@pytest.mark.slow
def test_cache_and_n_jobs_give_the_same_records_in_order(utk40, group_photo, tmp_path, capsys):
    inputs = [group_photo, *utk40[:9]]
    code, plain, _ = _run(capsys, ["predict", "--jsonl", *inputs])
    assert code == 0
    expected = [json.loads(line) for line in plain.splitlines()]
    assert [r["path"] for r in expected] == inputs

    cache = tmp_path / "cache"
    code, first, _ = _run(capsys, ["predict", "--jsonl", "--cache", str(cache), *inputs])
    assert code == 0 and [json.loads(line) for line in first.splitlines()] == expected
    # every face of every image is stored
    from skagegender.embedding import FaceCache, item_key
    from skagegender.pretrained import load

    store = FaceCache(cache, load().embedder_)
    keys = [item_key(path) for path in inputs]
    stored = store.get(keys)
    assert [len(stored[key]) for key in keys] == [len(r["faces"]) for r in expected]
    # a rerun reads them instead of detecting: give the group photo's entry the faces
    # of the first UTKFace photo, and the rerun reports that one face for it
    store.put(keys[0], stored[keys[1]])
    store.close()
    code, second, _ = _run(capsys, ["predict", "--jsonl", "--cache", str(cache), *inputs])
    second = [json.loads(line) for line in second.splitlines()]
    assert code == 0 and second[1:] == expected[1:]
    assert second[0]["faces"] == expected[1]["faces"]

    code, parallel, _ = _run(capsys, ["predict", "--jsonl", "--n-jobs", "2", *inputs])
    assert code == 0 and [json.loads(line) for line in parallel.splitlines()] == expected
