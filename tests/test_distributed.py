"""The same extraction on a real Dask cluster (2 worker processes) through joblib."""

import numpy as np
import pytest

from skagegender.embedding import ArcFaceEmbedder

distributed = pytest.importorskip("dask.distributed")
joblib = pytest.importorskip("joblib")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=50,
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


@pytest.mark.slow
def test_dask_backend_matches_serial_run_in_order(utkface_paths, tmp_path, client):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    blank = np.full((160, 160, 3), 90, np.uint8)
    # Bad items in the middle of chunks: order and per-item failures must survive.
    items = utkface_paths[:12] + [str(bad)] + utkface_paths[12:20] + [blank, "nope.jpg"]
    serial = ArcFaceEmbedder(batch_size=4).embed(items)
    with joblib.parallel_config(backend="dask"):
        remote = ArcFaceEmbedder(batch_size=4).embed(items)
    assert remote.errors == serial.errors
    assert [e is not None for e in remote.errors].count(True) == 3
    assert "not a recognised image" in remote.errors[12]
    assert remote.errors[21].endswith("no face found") and "no such file" in remote.errors[22]
    np.testing.assert_allclose(remote.features, serial.features, rtol=0, atol=1e-6)
    for a, b in zip(serial.faces, remote.faces):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-4)

    # The cache lives with the caller: workers compute, the client process commits.
    cache = tmp_path / "cache"
    with joblib.parallel_config(backend="dask"):
        cached = ArcFaceEmbedder(batch_size=4, cache=cache).embed(items)
    np.testing.assert_allclose(cached.features, serial.features, rtol=0, atol=1e-6)
    again = ArcFaceEmbedder(batch_size=4, cache=cache).embed(items)
    np.testing.assert_array_equal(again.features, cached.features)
    assert again.errors[:22] == serial.errors[:22]


def _backbones_built_here():
    from skagegender.embedding import _backbones

    return len(_backbones._cache)


@pytest.mark.slow
def test_dask_backend_spreads_chunks_over_both_workers(utkface_paths, client):
    with joblib.parallel_config(backend="dask"):
        features = ArcFaceEmbedder(batch_size=2, n_jobs=-1).transform(utkface_paths[:16])
    assert features.shape == (16, 128) and np.isfinite(features).all()
    # Each worker process rebuilt the backbone once (per-process cache) and did work.
    built = client.run(_backbones_built_here)
    assert len(built) == 2 and all(n >= 1 for n in built.values()), built
