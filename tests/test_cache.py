"""The embedding disk cache: reuse, keys, invalidation, and a run killed mid-way."""

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from skagegender.embedding import ArcFaceEmbedder, EmbeddingCache, Outcome
from skagegender.embedding._cache import (
    FILENAME,
    CacheError,
    DamagedCacheWarning,
    item_key,
)


@pytest.fixture
def count_computed(monkeypatch):
    """Count the images that reach the backbone (cache misses) in this process."""
    counter = {"images": 0}
    original = ArcFaceEmbedder._embed_chunk

    def counting(self, images):
        counter["images"] += len(images)
        return original(self, images)

    monkeypatch.setattr(ArcFaceEmbedder, "_embed_chunk", counting)
    return counter


def _rows(folder):
    with sqlite3.connect(os.path.join(folder, FILENAME)) as db:
        return db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]


@pytest.mark.slow
def test_second_run_reads_everything_back(utkface_paths, tmp_path, count_computed):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    blank = np.full((200, 200, 3), 127, np.uint8)  # decodes, but has no face
    items = utkface_paths[:10] + [str(bad), blank]
    embedder = ArcFaceEmbedder(cache=tmp_path / "cache", batch_size=4)
    first = embedder.embed(items)
    assert count_computed["images"] == 12
    assert first.found.sum() == 10 and first.errors[11].endswith("no face found")
    assert [o.kind for o in first.outcomes[10:]] == ["load_error", "no_face"]

    second = embedder.embed(items)
    assert count_computed["images"] == 12  # nothing recomputed
    np.testing.assert_array_equal(first.features, second.features)
    assert second.outcomes == first.outcomes  # kinds read back, not parsed from messages
    for i, (a, b) in enumerate(zip(first.faces[:10], second.faces[:10])):
        np.testing.assert_allclose(a.box, b.box, rtol=1e-6)
        np.testing.assert_allclose(a.landmarks, b.landmarks, rtol=1e-6)
        assert a.score == pytest.approx(b.score)
        np.testing.assert_array_equal(b.embedding, second.features[i])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        np.testing.assert_array_equal(embedder.transform(items), first.features)
    assert count_computed["images"] == 12


@pytest.mark.slow
def test_keys_follow_the_file_and_the_options(utkface_paths, tmp_path, count_computed):
    photo = tmp_path / "face.jpg"
    photo.write_bytes(Path(utkface_paths[0]).read_bytes())
    cache = tmp_path / "cache"
    ArcFaceEmbedder(cache=cache).transform([str(photo)])
    assert count_computed["images"] == 1
    # Another path spelling of the same file hits; a touched file misses.
    ArcFaceEmbedder(cache=cache).transform([os.path.join(tmp_path, ".", "face.jpg")])
    assert count_computed["images"] == 1
    st = photo.stat()
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ArcFaceEmbedder(cache=cache).transform([str(photo)])
    assert count_computed["images"] == 2
    # An option that changes the rows gets its own entries; one that does not, shares.
    ArcFaceEmbedder(cache=cache, flip_augment=True).transform([str(photo)])
    ArcFaceEmbedder(cache=cache, min_score=0.8).transform([str(photo)])
    assert count_computed["images"] == 4
    ArcFaceEmbedder(cache=cache, batch_size=3, n_threads=1).transform([str(photo)])
    assert count_computed["images"] == 4
    # Content keys: equal arrays and bytes share a key, a changed pixel does not.
    a = np.zeros((5, 5, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1
    assert item_key(a) == item_key(a.copy()) != item_key(b)
    assert item_key(b"abc") == item_key(bytearray(b"abc")) != item_key(b"abd")
    assert item_key(str(tmp_path / "missing.jpg")) is None


def test_fixed_file_is_recomputed_and_missing_file_not_cached(utkface_paths, tmp_path,
                                                              count_computed):
    path = tmp_path / "later.jpg"
    path.write_bytes(b"\xff\xd8\xff truncated")
    embedder = ArcFaceEmbedder(cache=tmp_path / "cache")
    assert "not a recognised image" in embedder.embed([str(path)]).errors[0]
    assert "not a recognised image" in embedder.embed([str(path)]).errors[0]
    assert count_computed["images"] == 1  # the load error was cached
    path.write_bytes(Path(utkface_paths[1]).read_bytes())  # size changes: new key
    assert embedder.embed([str(path)]).errors[0] is None
    missing = str(tmp_path / "missing.jpg")
    before = count_computed["images"]
    embedder.embed([missing])
    embedder.embed([missing])
    assert count_computed["images"] == before + 2


_CHILD = textwrap.dedent(
    """
    import sys, time
    from skagegender.embedding import ArcFaceEmbedder

    original = ArcFaceEmbedder._embed_chunk

    def slow(self, images):  # leave the parent time to kill us mid-run
        time.sleep(0.15)
        return original(self, images)

    ArcFaceEmbedder._embed_chunk = slow
    paths = sys.argv[2:]
    ArcFaceEmbedder(cache=sys.argv[1], batch_size=4).transform(paths)
    print("finished")
    """
)


@pytest.mark.slow
def test_killed_run_resumes_without_loss_or_corruption(shared_data, tmp_path, count_computed):
    paths = sorted(str(p) for p in (shared_data / "UTKFace").glob("*.jpg"))[:60]
    cache = str(tmp_path / "cache")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, cache, *paths],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed_at = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if os.path.exists(os.path.join(cache, FILENAME)):
                try:
                    killed_at = _rows(cache)
                except sqlite3.OperationalError:  # table not created yet
                    killed_at = 0
                if killed_at >= 12:
                    os.kill(child.pid, signal.SIGKILL)
                    break
            time.sleep(0.02)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]

    with sqlite3.connect(os.path.join(cache, FILENAME)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = _rows(cache)
    assert 12 <= stored < 60 and stored % 4 == 0  # whole chunks only

    resumed = ArcFaceEmbedder(cache=cache, batch_size=4).embed(paths)
    assert count_computed["images"] == 60 - stored
    reference = ArcFaceEmbedder(batch_size=4).embed(paths)
    assert resumed.errors == reference.errors
    np.testing.assert_allclose(resumed.features, reference.features, rtol=0, atol=1e-6)
    with EmbeddingCache(cache, "unused", dim=128) as opened:
        assert len(opened) == 0
    assert _rows(cache) == 60


# -- keys that follow the file ------------------------------------------------


def _same_size_jpegs(paths):
    """Two different photos padded to one length (JPEG decoders ignore trailing bytes)."""
    a, b = (Path(p).read_bytes() for p in paths[:2])
    size = max(len(a), len(b))
    return a.ljust(size, b"\0"), b.ljust(size, b"\0")


def test_rewrite_in_place_with_size_and_mtime_kept_is_recomputed(utkface_paths, tmp_path,
                                                                 count_computed):
    first, second = _same_size_jpegs(utkface_paths)
    photo = tmp_path / "face.jpg"
    photo.write_bytes(first)
    cache = tmp_path / "cache"
    embedder = ArcFaceEmbedder(cache=cache)
    old = embedder.embed([str(photo)]).features[0]
    st = photo.stat()
    with open(photo, "r+b") as f:  # same inode, same size, then the old mtime back
        f.write(second)
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (photo.stat().st_size, photo.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    new = embedder.embed([str(photo)]).features[0]
    assert count_computed["images"] == 2
    np.testing.assert_allclose(new, ArcFaceEmbedder().embed([utkface_paths[1]]).features[0],
                               atol=1e-6)
    assert not np.allclose(new, old, atol=1e-3)
    # Replaced by another file (another inode) of the same size and mtime: a new key too.
    other = tmp_path / "other.jpg"
    other.write_bytes(first)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = item_key(str(photo))
    os.replace(other, photo)
    assert item_key(str(photo)) != before


def test_a_larger_max_bytes_recomputes_a_refused_file(utkface_paths, tmp_path, count_computed):
    size = os.path.getsize(utkface_paths[0])
    cache = tmp_path / "cache"
    (error,) = ArcFaceEmbedder(cache=cache, max_bytes=size - 1).embed(utkface_paths[:1]).errors
    assert "max_bytes" in error
    assert ArcFaceEmbedder(cache=cache, max_bytes=size).embed(utkface_paths[:1]).found.all()
    assert count_computed["images"] == 2


_UNPRIVILEGED_CHILD = textwrap.dedent(
    """
    import json, os, sqlite3, sys  # imported before the drop: the stdlib may be root-only
    from skagegender.embedding import ArcFaceEmbedder

    embedder = ArcFaceEmbedder(cache=sys.argv[1]).fit()  # the models load before the drop
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    print(json.dumps(embedder.embed(sys.argv[2:]).errors))
    """
)


@pytest.mark.slow
def test_permission_denied_is_never_cached(utkface_paths, count_computed):
    # Root reads through chmod 000, so the child reads as user "nobody"; the folder
    # must be one that "nobody" can traverse (pytest's tmp_path is root-only).
    base = tempfile.mkdtemp(prefix="skagegender-perm-")
    try:
        os.chmod(base, 0o755)
        photo = os.path.join(base, "face.jpg")
        shutil.copyfile(utkface_paths[0], photo)
        os.chmod(photo, 0o600 if os.geteuid() == 0 else 0)
        cache = os.path.join(base, "cache")
        os.mkdir(cache)
        os.chmod(cache, 0o777)
        child = subprocess.run([sys.executable, "-c", _UNPRIVILEGED_CHILD, cache, photo],
                               capture_output=True, text=True, timeout=120, check=False)
        assert child.returncode == 0, child.stderr[-2000:]
        (error,) = json.loads(child.stdout.strip().splitlines()[-1])
        assert "Permission denied" in error
        assert _rows(cache) == 0  # the access failure was not stored
        os.chmod(photo, 0o644)  # chmod keeps the mtime
        result = ArcFaceEmbedder(cache=cache).embed([photo])
        assert result.errors == [None] and count_computed["images"] == 1
        assert _rows(cache) == 1
    finally:
        shutil.rmtree(base)


def test_put_skips_transient_errors_and_non_finite_rows(tmp_path):
    nan_row = np.full(3, np.nan, np.float32)
    ok = Outcome("ok")
    corrupt = Outcome("load_error", "b.jpg: not a recognised image format")
    # A message that reads like a missing face does not make a load error one.
    odd = Outcome("load_error", "c.jpg: no face found")
    with EmbeddingCache(tmp_path, "bb", dim=3) as cache:
        cache.put([("denied", None, None,
                    Outcome("load_error", "a.jpg: cannot read the file", transient=True)),
                   ("nan", nan_row, None, ok),
                   ("inf", np.array([1, np.inf, 0], np.float32), None, ok),
                   ("short", np.ones(2, np.float32), None, ok),
                   ("corrupt", None, None, corrupt),
                   ("odd", None, None, odd),
                   ("blank", None, None, Outcome.no_face("d.jpg")),
                   ("ok", np.ones(3, np.float32), None, ok)])
        stored = cache.get(["denied", "nan", "inf", "short", "corrupt", "odd", "blank", "ok"])
    assert set(stored) == {"corrupt", "odd", "blank", "ok"}
    assert stored["corrupt"] == (None, None, corrupt) and stored["odd"][2] == odd
    assert stored["blank"][2] == Outcome("no_face", "d.jpg: no face found")
    np.testing.assert_array_equal(stored["ok"][0], np.ones(3, np.float32))
    assert stored["ok"][2].ok


def test_cache_keys_of_earlier_versions_still_match():
    """Caches written before the key was built from a BackboneSpec are still read.

    They were written with the detection defaults of then (``min_score=0.6``,
    ``det_max_side=1024``, no ``det_retry_side``), which still give their key.
    """
    before = {"min_score": 0.6, "det_max_side": 1024, "det_retry_side": None}
    assert ArcFaceEmbedder(**before).cache_key() == (
        "2be20a31f159e7d5ffd80b37ef5870f1558ff9f77993cd339a4a499902b5f067")
    assert ArcFaceEmbedder(layers="age-gender-finetuned", **before).cache_key(
        faces="every") == "12ab423025928573173acf15610c761162c5f04aa6362c5a0450f113301508f1"
    assert ArcFaceEmbedder(min_score=0.5).cache_key() != ArcFaceEmbedder().cache_key()


# -- damaged and foreign cache files ------------------------------------------


@pytest.fixture
def two_faces(utkface_paths):
    """Two photos and their features computed without a cache."""
    paths = utkface_paths[:2]
    return paths, ArcFaceEmbedder().embed(paths).features


def _rebuilt_with_warning(cache, paths, expected):
    with pytest.warns(DamagedCacheWarning, match="damaged") as caught:
        result = ArcFaceEmbedder(cache=cache).embed(paths)
    np.testing.assert_allclose(result.features, expected, atol=1e-6)
    assert str(cache / FILENAME) in str(caught[0].message)
    return result


def test_garbage_cache_file_is_set_aside_and_rebuilt(tmp_path, two_faces):
    paths, expected = two_faces
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / FILENAME).write_bytes(os.urandom(5000))  # was: DatabaseError traceback
    _rebuilt_with_warning(cache, paths, expected)
    (aside,) = cache.glob(FILENAME + ".damaged-*")
    assert aside.stat().st_size == 5000
    assert _rows(cache) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is sound: no second warning
        ArcFaceEmbedder(cache=cache).embed(paths)


def test_truncated_cache_file_is_set_aside_and_rebuilt(tmp_path, two_faces, count_computed):
    paths, expected = two_faces
    cache = tmp_path / "cache"
    ArcFaceEmbedder(cache=cache).embed(paths + [np.full((50, 50, 3), 9, np.uint8)])
    with open(cache / FILENAME, "r+b") as f:  # keep the first page (the schema) only
        f.truncate(4096)
    _rebuilt_with_warning(cache, paths, expected)
    assert count_computed["images"] == 3 + 2
    assert len(list(cache.glob(FILENAME + ".damaged-*"))) == 1 and _rows(cache) == 2


def test_damaged_rows_are_recomputed(tmp_path, two_faces, count_computed):
    paths, expected = two_faces
    cache = tmp_path / "cache"
    ArcFaceEmbedder(cache=cache).embed(paths)
    with sqlite3.connect(cache / FILENAME) as db:
        # A face blob of the wrong length (was: struct.error), and a NaN feature row.
        keys = [k for (k,) in db.execute("SELECT item_key FROM embeddings ORDER BY item_key")]
        db.execute("UPDATE embeddings SET face = x'00000000' WHERE item_key = ?", [keys[0]])
        nan_row = np.full(expected.shape[1], np.nan, np.float32).tobytes()
        db.execute("UPDATE embeddings SET features = ? WHERE item_key = ?", [nan_row, keys[1]])
    with pytest.warns(DamagedCacheWarning, match="2 damaged rows"):
        result = ArcFaceEmbedder(cache=cache).embed(paths)
    assert result.found.all() and np.isfinite(result.features).all()
    np.testing.assert_allclose(result.features, expected, atol=1e-6)
    assert count_computed["images"] == 2 + 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the damaged rows were replaced
        ArcFaceEmbedder(cache=cache).embed(paths)
    assert count_computed["images"] == 4


def test_foreign_database_is_refused_and_left_alone(tmp_path, two_faces):
    paths, _ = two_faces
    cache = tmp_path / "cache"
    cache.mkdir()
    with sqlite3.connect(cache / FILENAME) as db:  # was: OperationalError on insert
        db.execute("CREATE TABLE embeddings (name TEXT, vector BLOB)")
        db.execute("INSERT INTO embeddings VALUES ('someone', x'00')")
    before = (cache / FILENAME).read_bytes()
    with pytest.raises(CacheError, match=f"{FILENAME}.*another program.*cache= another"):
        ArcFaceEmbedder(cache=cache).embed(paths)
    assert (cache / FILENAME).read_bytes() == before


def test_cache_path_that_is_not_a_folder_or_not_a_file(tmp_path, two_faces):
    paths, _ = two_faces
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")  # was: FileExistsError
    with pytest.raises(CacheError, match="notes.txt exists but is not a folder"):
        ArcFaceEmbedder(cache=taken).embed(paths)
    assert taken.read_text() == "mine"
    for kind in ("folder", "fifo"):
        cache = tmp_path / kind
        cache.mkdir()
        if kind == "folder":
            (cache / FILENAME).mkdir()
        else:
            os.mkfifo(cache / FILENAME)  # opening it would block
        with pytest.raises(CacheError, match="is not a regular file"):
            ArcFaceEmbedder(cache=cache).embed(paths)
        assert not stat.S_ISREG(os.stat(cache / FILENAME).st_mode)
