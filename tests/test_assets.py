"""The converted-model cache: checksums recorded at conversion, damage repaired."""

import os
import sys
import warnings

import numpy as np
import pytest

from skagegender.embedding._assets import (
    YUNET,
    converted_model,
    make_session,
    sha256_file,
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
