"""Embedding on a Dask cluster of separate processes that loses a worker mid-run.

``dask scheduler`` and two ``dask worker`` processes are started as commands (through
``benchmarks/dask_scaling.py``'s launcher, which the benchmark measures with), not a
``LocalCluster`` inside the test process; the test process is the client. One worker is
killed with SIGKILL while it holds tasks: the run must finish with every image in the
cache once and the same rows as a run in one process, with the same progress bar.
"""

import importlib.util
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from skagegender.datasets import embed_dataset
from skagegender.embedding import ArcFaceEmbedder
from skagegender.embedding._cache import FILENAME, item_key

distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "dask_scaling.py"
N_IMAGES = 120
BATCH = 4


def _benchmark():
    spec = importlib.util.spec_from_file_location("dask_scaling", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cached_items(cache):
    """``(backbone key, item key)`` of every row in the cache (read while it is written)."""
    path = cache / FILENAME
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        try:
            return db.execute("SELECT backbone_key, item_key FROM embeddings").fetchall()
        except sqlite3.OperationalError:  # the table is being created
            return []


def test_a_cluster_that_loses_a_worker_mid_run_embeds_every_image_once(shared_data, tmp_path,
                                                                       capsys):
    root = shared_data / "UTKFace"
    embedder = ArcFaceEmbedder(batch_size=BATCH)
    # One process, no Dask: the reference rows and the progress bar as on one machine.
    reference, data = embed_dataset("utkface", root, embedder=embedder, limit=N_IMAGES,
                                    progress=True)
    one_machine = capsys.readouterr().err
    assert f"{N_IMAGES}/{N_IMAGES}" in one_machine

    cache = tmp_path / "cache"
    outcome = {}

    def run():
        try:
            with joblib.parallel_config(backend="dask"):
                outcome["features"], outcome["data"] = embed_dataset(
                    "utkface", root, embedder=embedder, cache=cache, limit=N_IMAGES,
                    progress=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            outcome["error"] = exc

    with _benchmark().dask_cluster(2, tmp_path / "cluster") as (client, workers):
        names = {info["name"]: address
                 for address, info in client.scheduler_info()["workers"].items()}
        victim, victim_address = workers[0], names["w0"]
        thread = threading.Thread(target=run)
        thread.start()
        held = []
        limit = time.monotonic() + 300  # bounds a broken run only
        while thread.is_alive() and time.monotonic() < limit:
            held = client.processing(victim_address).get(victim_address, [])
            if held and len(_cached_items(cache)) >= 4 * BATCH:
                break
            time.sleep(0.05)
        n_before_kill = len(_cached_items(cache))
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        thread.join(300)
        assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
        # It was killed mid-run, holding tasks, and the cluster went on with one worker.
        assert held and n_before_kill < N_IMAGES
        assert [info["name"] for info in client.scheduler_info()["workers"].values()] == ["w1"]

        # With one worker thread left, joblib alone would run tasks in the client: they
        # must still run on the cluster.
        survivor = names["w1"]
        before = client.run(time.process_time)[survivor]
        with joblib.parallel_config(backend="dask"):  # no cache: computed again
            again = ArcFaceEmbedder(batch_size=2).transform(list(data.paths[:8]))
        assert client.run(time.process_time)[survivor] - before > 8 * 0.005
        np.testing.assert_allclose(again, reference[:8], rtol=0, atol=1e-6)
    cluster_run = capsys.readouterr().err

    assert list(outcome["data"].paths) == list(data.paths)
    np.testing.assert_array_equal(np.isnan(outcome["features"]), np.isnan(reference))
    np.testing.assert_allclose(outcome["features"], reference, rtol=0, atol=1e-6)
    # every image is in the cache exactly once, under the embedder's key
    rows = _cached_items(cache)
    assert len(rows) == len(set(rows)) == N_IMAGES
    assert {key for _, key in rows} == {item_key(path) for path in data.paths}
    assert {backbone for backbone, _ in rows} == {embedder.cache_key()}
    # the progress bar under Dask counts the same images as on one machine
    assert f"{N_IMAGES}/{N_IMAGES}" in cluster_run and "embed utkface" in cluster_run


def test_the_scaling_benchmark_on_four_images(shared_data, tmp_path):
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(BENCHMARK), "--data", str(shared_data / "UTKFace"),
                           "--n-images", "4", "--workers", "1", "--batch-size", "2",
                           "--out", str(out)], check=False, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "dask_scaling.json").read_text())
    assert report["n_images"] == 4 and report["baseline"]["images_per_s"] > 0
    (run,) = report["runs"]  # one worker: the two-worker cluster is the test above's
    assert run["n_workers"] == 1 and run["images_per_s"] > 0
    assert run["same_nan_rows"] and run["errors_equal"] and run["max_abs_difference"] < 1e-5
    assert run["worker_cpu_s"] > 0.02  # the single worker computed, not the client
    assert "| Dask, 1 worker(s) |" in (out / "dask_scaling.md").read_text()


def test_caches_of_two_runs_merge_into_one_that_holds_every_image(utkface_paths, tmp_path):
    # docs/scaling.md's recipe for one cache per client, run on two real caches
    from skagegender.embedding import EmbeddingCache

    embedder = ArcFaceEmbedder(batch_size=BATCH)
    paths = utkface_paths[:6]
    first = embedder.set_params(cache=tmp_path / "part1").embed(paths[:4])
    second = embedder.set_params(cache=tmp_path / "part2").embed(paths[2:])

    merged = tmp_path / "merged"
    EmbeddingCache(merged, embedder.cache_key(), dim=embedder.fit().embedding_dim_).close()
    db = sqlite3.connect(merged / FILENAME)
    for part in [tmp_path / "part1", tmp_path / "part2"]:
        db.execute("ATTACH ? AS part", (str(part / FILENAME),))
        db.execute("INSERT OR IGNORE INTO embeddings SELECT * FROM part.embeddings")
        db.commit()
        db.execute("DETACH part")
    db.close()

    keys = [item_key(path) for path in paths]
    with EmbeddingCache(merged, embedder.cache_key(), dim=embedder.embedding_dim_) as cache:
        stored = cache.get(keys)
    assert sorted(stored) == sorted(keys)  # every image, once
    expected = np.concatenate([first.features, second.features[2:]])
    np.testing.assert_array_equal(np.stack([stored[key][0] for key in keys]), expected)
