"""The embedding disk cache: reuse, keys, invalidation, and a run killed mid-way."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from skagegender.embedding import ArcFaceEmbedder, EmbeddingCache
from skagegender.embedding._cache import FILENAME, item_key


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


def test_second_run_reads_everything_back(utkface_paths, tmp_path, count_computed):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    blank = np.full((200, 200, 3), 127, np.uint8)  # decodes, but has no face
    items = utkface_paths[:10] + [str(bad), blank]
    embedder = ArcFaceEmbedder(cache=tmp_path / "cache", batch_size=4)
    first = embedder.embed(items)
    assert count_computed["images"] == 12
    assert first.found.sum() == 10 and first.errors[11].endswith("no face found")

    second = embedder.embed(items)
    assert count_computed["images"] == 12  # nothing recomputed
    np.testing.assert_array_equal(first.features, second.features)
    assert second.errors == first.errors
    for i, (a, b) in enumerate(zip(first.faces[:10], second.faces[:10])):
        np.testing.assert_allclose(a.box, b.box, rtol=1e-6)
        np.testing.assert_allclose(a.landmarks, b.landmarks, rtol=1e-6)
        assert a.score == pytest.approx(b.score)
        np.testing.assert_array_equal(b.embedding, second.features[i])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        np.testing.assert_array_equal(embedder.transform(items), first.features)
    assert count_computed["images"] == 12


def test_keys_follow_the_file_and_the_options(utkface_paths, tmp_path, count_computed):
    photo = tmp_path / "face.jpg"
    photo.write_bytes(open(utkface_paths[0], "rb").read())
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
    ArcFaceEmbedder(cache=cache, min_score=0.7).transform([str(photo)])
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
    path.write_bytes(open(utkface_paths[1], "rb").read())  # size changes: new key
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
