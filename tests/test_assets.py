"""The converted-model cache: checksums recorded at conversion, damage repaired; the record
of verified files: each file version hashed once, changed files hashed again and refused."""

import hashlib
import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest

from skagegender.embedding import _assets
from skagegender.embedding._assets import (
    YUNET,
    PackagedModel,
    converted_model,
    make_session,
    packaged_session,
    sha256_file,
    verified_path,
)

YUNET_DIMS = {2: "height", 3: "width"}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty model cache, so that each test converts its own files."""
    monkeypatch.setenv("SKAGEGENDER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _convert():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound cache converts or reuses silently
        return converted_model(YUNET, symbolic_dims=YUNET_DIMS)


def _detects(path):
    session = make_session(path)
    outputs = session.run(None, {"input": np.zeros((1, 3, 64, 96), np.float32)})
    return len(outputs) == 12


def _checksum(path):
    return path.with_name(path.name + ".sha256")


def test_conversion_records_its_checksum(home):
    path = _convert()
    assert path.parent == home / "models"
    recorded = _checksum(path).read_text()
    assert recorded == f"{sha256_file(path)}  {path.name}\n"  # sha256sum -c reads it
    assert _convert() == path and _detects(path)


def test_truncated_conversion_is_converted_again(home):
    path = _convert()
    good = path.read_bytes()
    with open(path, "r+b") as f:
        f.truncate(len(good) // 2)
    with pytest.raises(Exception, match="(?i)protobuf"):  # the fault: every run failed so
        make_session(path)
    with pytest.warns(RuntimeWarning, match="is damaged.*converting it again"):
        again = converted_model(YUNET, symbolic_dims=YUNET_DIMS)
    assert again == path and path.read_bytes() == good and _detects(path)
    _convert()  # repaired: no further warning


def test_changed_byte_with_size_and_mtime_kept_is_caught(home):
    path = _convert()
    good = path.read_bytes()
    _convert()  # hashed (and remembered) once
    st = path.stat()
    with open(path, "r+b") as f:  # flip one weight byte in place
        f.seek(len(good) // 2)
        f.write(bytes([good[len(good) // 2] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.warns(RuntimeWarning, match="is damaged"):
        converted_model(YUNET, symbolic_dims=YUNET_DIMS)
    assert path.read_bytes() == good


def test_missing_or_garbled_checksum(home):
    path = _convert()
    good = path.read_bytes()
    _checksum(path).unlink()  # e.g. killed between the two writes: converted again, quietly
    assert _convert() == path and _checksum(path).is_file()
    _checksum(path).write_bytes(os.urandom(300))
    with pytest.warns(RuntimeWarning, match="is damaged"):
        converted_model(YUNET, symbolic_dims=YUNET_DIMS)
    assert path.read_bytes() == good and _convert() == path


def test_each_file_is_hashed_once_per_process(home):
    path = _convert()
    opened = []

    def audit(event, args):
        if event == "open" and args and str(args[0]) == str(path):
            opened.append(args[0])

    sys.addaudithook(audit)  # hooks cannot be removed; this one only watches one path
    for _ in range(3):
        assert converted_model(YUNET, symbolic_dims=YUNET_DIMS) == path
    assert len(opened) == 1
    # A rewrite is seen (the change time moves), so the file is hashed again.
    path.write_bytes(path.read_bytes())
    opened.clear()
    converted_model(YUNET, symbolic_dims=YUNET_DIMS)
    assert len(opened) == 1


# -- the record of verified files: hashed once per file version, not at every start --------


#: The record is used where the change time cannot be set back (see _assets).
posix_only = pytest.mark.skipif(os.name != "posix", reason="the record is used on POSIX only")


def _new_process():
    """Forget what this process hashed or read, as a fresh process would."""
    _assets._digests.clear()
    _assets._records.clear()


class _Opens:
    """Counts this process's opens of one file (audit hooks cannot be removed)."""

    def __init__(self):
        self.path, self.count = None, 0
        sys.addaudithook(self._hook)

    def _hook(self, event, args):
        if event == "open" and self.path is not None and args and str(args[0]) == self.path:
            self.count += 1

    def watch(self, path):
        self.path, self.count = str(path), 0
        return self


_opens = _Opens()


@pytest.fixture
def weights(tmp_path, monkeypatch, home):
    """A packaged 'network' in an importable package of its own, and its asset."""
    package = tmp_path / "site" / "weightspkg_for_tests"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    data = os.urandom(300_000)
    (package / "models" / "net.onnx").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    asset = PackagedModel(package="weightspkg_for_tests", relpath="models/net.onnx",
                          sha256=hashlib.sha256(data).hexdigest(), licence="CC0-1.0")
    _new_process()
    yield asset
    _new_process()


def _record(home):
    return json.loads((home / "verified.json").read_text())["files"]


@posix_only
def test_verified_weights_are_hashed_once_then_taken_from_the_record(weights, home):
    path = weights.path()
    opens = _opens.watch(path)
    assert verified_path(weights) == path and opens.count == 1
    entry = _record(home)[os.path.abspath(path)]
    st = path.stat()
    assert entry == {"sha256": weights.sha256, "dev": st.st_dev, "ino": st.st_ino,
                     "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
    for _ in range(3):
        _new_process()
        assert verified_path(weights) == path
    assert opens.count == 1  # later processes trust the record


@posix_only
def test_record_is_reused_by_a_new_process(weights, home, tmp_path):
    verified_path(weights)
    script = (
        "import sys\n"
        "opened = []\n"
        "sys.addaudithook(lambda e, a: opened.append(a[0]) if e == 'open' and a\n"
        "                 and str(a[0]).endswith('net.onnx') else None)\n"
        "from skagegender.embedding._assets import PackagedModel, verified_path\n"
        f"asset = PackagedModel('weightspkg_for_tests', 'models/net.onnx', {weights.sha256!r}, 'x')\n"
        "verified_path(asset)\n"
        "print(len(opened))\n"
    )
    env = {**os.environ, "SKAGEGENDER_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]


@posix_only
@pytest.mark.parametrize("change", ["in_place_same_size_and_mtime", "replaced_same_size_and_mtime"])
def test_changed_weights_are_hashed_again_and_refused(weights, home, change):
    path = weights.path()
    verified_path(weights)
    before = _record(home)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    st = path.stat()
    if change == "in_place_same_size_and_mtime":
        with open(path, "r+b") as f:
            f.write(data)
    else:
        other = path.with_name("other.onnx")
        other.write_bytes(data)
        os.replace(other, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    _new_process()
    opens = _opens.watch(path)
    for _ in range(2):  # refused every time, never recorded
        with pytest.raises(ValueError, match="sha256"):
            verified_path(weights)
        _new_process()
    assert opens.count == 2
    assert _record(home) == before
    with pytest.raises(ValueError, match="sha256"):
        packaged_session(weights)


def test_record_for_another_expected_digest_is_not_trusted(weights, home):
    verified_path(weights)
    _new_process()
    other = replace(weights, sha256="0" * 64)  # e.g. a new release expects other weights
    opens = _opens.watch(weights.path())
    with pytest.raises(ValueError, match="sha256"):
        verified_path(other)
    assert opens.count == 1


@posix_only
@pytest.mark.parametrize("record", [
    b"",
    os.urandom(500),
    b"[]",
    b'{"format": 1, "files": []}',
    b'{"format": 2, "files": {}}',
    b"[" * 100_000 + b"]" * 100_000,
    b" " * (2 << 20) + b"{}",
    "bad_entries",
    "lying_entry",
    "fifo",
    "folder",
])
def test_corrupt_or_hostile_record_means_a_new_hash(weights, home, record):
    path = weights.path()
    target = home / "verified.json"
    home.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    identity = {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
                "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
    name = os.path.abspath(path)
    if record == "bad_entries":
        entries = [5, None, {"sha256": weights.sha256}, {**identity, "sha256": 7},
                   {**identity, "ino": str(st.st_ino), "sha256": weights.sha256},
                   {**identity, "ino": True, "sha256": weights.sha256},
                   {**identity, "sha256": weights.sha256.upper()}]
        target.write_text(json.dumps({"format": 1, "files": {name: entries[-1],
                                                             **{str(i): e for i, e in
                                                                enumerate(entries)}}}))
    elif record == "lying_entry":  # this file, another identity
        target.write_text(json.dumps({"format": 1, "files": {
            name: {**identity, "ino": st.st_ino + 1, "sha256": weights.sha256}}}))
    elif record == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        os.mkfifo(target)
    elif record == "folder":
        target.mkdir()
    else:
        target.write_bytes(record)
    opens = _opens.watch(path)
    assert verified_path(weights) == path and opens.count == 1  # hashed, did not hang
    if record not in ("folder", "fifo"):  # rewritten with the file's entry
        assert _record(home)[name] == {**identity, "sha256": weights.sha256}
        _new_process()
        verified_path(weights)
        assert opens.count == 1


def test_unwritable_cache_folder_still_verifies(weights, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SKAGEGENDER_HOME", str(blocker / "home"))
    opens = _opens.watch(weights.path())
    for _ in range(2):
        _new_process()
        assert verified_path(weights) == weights.path()
    assert opens.count == 2
    with pytest.raises(ValueError, match="sha256"):
        verified_path(replace(weights, sha256="0" * 64))


@posix_only
def test_conversion_is_not_hashed_again_by_a_new_process(home):
    path = _convert()
    opens = _opens.watch(path)
    _new_process()
    assert _convert() == path and opens.count == 1  # hashed and recorded
    for _ in range(2):
        _new_process()
        assert _convert() == path
    assert opens.count == 1
    assert _record(home)[os.path.abspath(path)]["sha256"] == _checksum(path).read_text().split()[0]


def test_changed_conversion_is_caught_by_a_new_process(home):
    path = _convert()
    good = path.read_bytes()
    _new_process()
    _convert()  # recorded
    st = path.stat()
    with open(path, "r+b") as f:  # flip one weight byte in place, size and mtime kept
        f.seek(len(good) // 2)
        f.write(bytes([good[len(good) // 2] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    _new_process()
    with pytest.warns(RuntimeWarning, match="is damaged"):
        converted_model(YUNET, symbolic_dims=YUNET_DIMS)
    assert path.read_bytes() == good


def test_without_the_record_every_process_hashes(weights, home, monkeypatch):
    monkeypatch.setattr(_assets, "_RECORD_USABLE", False)  # as on Windows
    opens = _opens.watch(weights.path())
    for _ in range(2):
        _new_process()
        assert verified_path(weights) == weights.path()
    assert opens.count == 2 and not (home / "verified.json").exists()
