"""One hardened zip reader for model files and feature files.

The same hostile archive is given to both readers (``load_model_file`` and the
``tune --features`` reader): each must refuse it, for the same reason, in its own words.
"""

import io
import struct
import warnings
import zipfile

import numpy as np
import pytest

from skagegender._archive import (
    MAX_DIRECTORY_BYTES,
    ArchiveError,
    NotZipError,
    open_zip,
    read_member,
    zip_members,
)
from skagegender.cli._tune_inputs import _read_features, _TuneError
from skagegender.model import ModelFileError, load_model_file


def _npy(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array))
    return buffer.getvalue()


def _zip(members, compression=zipfile.ZIP_STORED):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return buffer.getvalue()


def _features():
    return [("X.npy", _npy(np.zeros((4, 3)))), ("age.npy", _npy([20.0, 30.0, 40.0, 50.0]))]


def _patched(data, **fields):
    """``data`` with every central directory entry's flags or method replaced."""
    data = bytearray(data)
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        if "flags" in fields:
            data[at + 8:at + 10] = struct.pack("<H", fields["flags"])
        if "method" in fields:
            data[at + 10:at + 12] = struct.pack("<H", fields["method"])
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


def _as_zip64(data, entries=None):
    """``data`` rewritten with a zip64 end record (declaring ``entries`` members)."""
    at = data.rfind(b"PK\x05\x06")
    count, size, offset = struct.unpack("<HLL", data[at + 10:at + 20])
    entries = count if entries is None else entries
    record = struct.pack("<4sQHHLLQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries,
                         size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, at, 1)
    end = struct.pack("<4sHHHHLLH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                      0xFFFFFFFF, 0)
    return data[:at] + record + locator + end


def _both_refuse(tmp_path, data):
    """The messages of the model file reader and the feature file reader for ``data``."""
    path = tmp_path / "hostile.zip"
    path.write_bytes(data)
    with pytest.raises(ModelFileError) as model:
        load_model_file(path)
    with pytest.raises(_TuneError) as features:
        _read_features(path, ("X", "age"), ("groups",), 2**24)
    return str(model.value), str(features.value)


HOSTILE = {
    "member named twice": (lambda: _zip([*_features(), ("X.npy", b"")]),
                           "holds the member 'X.npy' twice"),
    "encrypted member": (lambda: _patched(_zip(_features()), flags=0x1),
                         "member 'X.npy' is encrypted"),
    "unknown compression": (lambda: _patched(_zip(_features()), method=99),
                            "member 'X.npy' uses compression method 99"),
    "not a zip": (lambda: b"X,age\n1,2\n", "not a zip archive"),
    "11,000 members": (lambda: _zip([(f"{i:06d}", b"") for i in range(11_000)]),
                       "declares 11,000 members in a zip directory of"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_both_readers_refuse_a_hostile_archive_for_the_same_reason(tmp_path, case):
    make, reason = HOSTILE[case]
    data = make()
    model, features = _both_refuse(tmp_path, data)
    assert reason in model and reason in features
    # the reason is the archive reader's own, whatever the reader's wording around it
    with (pytest.raises(ArchiveError) as direct,
          open_zip(io.BytesIO(data), len(data), max_members=10_000) as archive):
        zip_members(archive, max_members=10_000)
    assert reason in str(direct.value)
    assert str(tmp_path / "hostile.zip") in model and str(tmp_path / "hostile.zip") in features


def test_each_reader_names_its_own_member_cap(tmp_path):
    model, features = _both_refuse(tmp_path, HOSTILE["11,000 members"][0]())
    assert "at most 10,000 members" in model and "at most 256 members" in features
    # 300 members: a feature file is refused, a model file gets past the count
    data = _zip([(f"{i:06d}", b"") for i in range(300)])
    model, features = _both_refuse(tmp_path, data)
    assert "at most 256 members" in features
    assert "at most" not in model and "expected exactly the members" in model


def test_zip64_is_read_for_feature_files_only(tmp_path):
    data = _as_zip64(_zip(_features()))
    path = tmp_path / "f.npz"
    path.write_bytes(data)
    arrays = _read_features(path, ("X", "age"), ("groups",), 2**24)
    assert arrays["X"].shape == (4, 3) and list(arrays["age"]) == [20.0, 30.0, 40.0, 50.0]
    with pytest.raises(ModelFileError, match="is a zip64 archive"):
        load_model_file(path)
    # the zip64 end record's count is the one checked
    path.write_bytes(_as_zip64(_zip(_features()), entries=70_000))
    with pytest.raises(_TuneError, match="declares 70,000 members"):
        _read_features(path, ("X", "age"), ("groups",), 2**24)


def test_zip64_locator_without_its_record_is_not_a_zip():
    data = _as_zip64(_zip(_features()))
    at = data.rfind(b"PK\x06\x06")
    data = data[:at] + b"XX" + data[at + 2:]
    with pytest.raises(NotZipError, match="without its zip64 end record"):
        open_zip(io.BytesIO(data), len(data), max_members=10, allow_zip64=True)


def test_a_large_directory_is_refused_before_zipfile_reads_it():
    # few members with long names: the directory, not the count, is over the cap
    name = "n" * 60_000
    data = _zip([(f"{i}{name}", b"") for i in range(20)])
    with pytest.raises(ArchiveError, match=f"declares 20 members in a zip directory of 1,2.* "
                       f"at most 100 members and {MAX_DIRECTORY_BYTES:,} bytes"):
        open_zip(io.BytesIO(data), len(data), max_members=100)


def test_read_member_checks_declared_and_actual_size():
    data = _zip([("big", b"\0" * 100_000)], compression=zipfile.ZIP_DEFLATED)
    with open_zip(io.BytesIO(data), len(data), max_members=1) as archive:
        info = zip_members(archive, max_members=1)["big"]
        assert read_member(archive, info, 100_000) == b"\0" * 100_000
        with pytest.raises(ArchiveError, match="declares 100,000 bytes decompressed"):
            read_member(archive, info, 99_999)
        info.file_size = 10  # a member that lies about its size
        with pytest.raises(ArchiveError, match="'big' is damaged"):
            read_member(archive, info, 50)
