"""Embedding on a Dask cluster of separate processes: images/s with 1 and 2 workers.

Run from the repository root::

    python benchmarks/dask_scaling.py                     # 2,000 UTKFace images, 1 and 2 workers
    python benchmarks/dask_scaling.py --n-images 200 --workers 1 2 4

For each worker count a cluster is started the way it runs on several machines: one
``dask scheduler`` process and that many ``dask worker --nthreads 1 --no-nanny``
processes (here all on this machine, talking over TCP). The client (this process)
embeds ``--n-images`` UTKFace images (every k-th file of the sorted folder) with
``ArcFaceEmbedder(batch_size=--batch-size, cache=<fresh folder>)`` under
``joblib.parallel_config(backend="dask")``, so the cache is written by the client as
chunks come back, as in ``docs/scaling.md``. Each worker first embeds a few images,
untimed, so that the timed run does not include building its networks. Measured: wall
time and images/s, the workers' CPU seconds (``time.process_time`` in each worker
before and after) and the client's, and the largest difference from the one-process
run's features (the same images with ``n_jobs=1``, no Dask, timed too as the baseline).

Timings on a shared machine are noisy: the load average is recorded beside each run,
and CPU time per image is the steadier number. Writes ``dask_scaling.json`` and
``dask_scaling.md`` under ``--out`` (default ``benchmarks/results``).
"""

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "UTKFace"


def _wait_for(condition, timeout, what):
    limit = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > limit:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


@contextlib.contextmanager
def dask_cluster(n_workers, folder, *, timeout=180):
    """A Dask cluster of separate processes on this machine, and a client of it.

    Starts ``dask scheduler`` (on 127.0.0.1, a free port, written to
    ``folder/scheduler.json``) and ``n_workers`` ``dask worker`` processes, one thread
    each and without a nanny (a killed worker stays dead), named ``w0``, ``w1``, ...;
    their logs go to ``folder``. Yields ``(client, workers)``: a
    ``dask.distributed.Client`` (the default client while the block runs) and the
    worker processes (``subprocess.Popen``). Everything is stopped on exit.
    """
    from dask.distributed import Client

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    procs = []

    def start(name, argv):
        log = open(folder / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append((subprocess.Popen(dask + argv, stdout=log, stderr=subprocess.STDOUT), log))
        return procs[-1][0]

    client = None
    try:
        start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                            "--no-dashboard", "--scheduler-file", str(scheduler_file)])
        _wait_for(scheduler_file.exists, timeout, "the scheduler's start")
        workers = [start(f"w{i}", ["worker", "--scheduler-file", str(scheduler_file),
                                   "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                   "--name", f"w{i}"])
                   for i in range(n_workers)]
        client = Client(scheduler_file=str(scheduler_file), timeout=timeout)
        client.wait_for_workers(n_workers, timeout=timeout)
        yield client, workers
    finally:
        if client is not None:
            client.close()
        for proc, log in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def worker_addresses(client):
    """``{worker name: address}`` of the cluster's live workers."""
    return {info["name"]: address for address, info in client.scheduler_info()["workers"].items()}


def _images(data, n):
    paths = sorted(str(p) for p in Path(data).glob("*.jpg"))
    if len(paths) < n:
        raise SystemExit(f"{data}: {len(paths)} images, fewer than --n-images {n}")
    return paths[:: len(paths) // n][:n]


def _load():
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _timed_embed(embedder, paths):
    load = _load()
    cpu, wall = time.process_time(), time.perf_counter()
    result = embedder.embed(paths)
    wall = time.perf_counter() - wall
    return result, {"seconds": round(wall, 3), "images_per_s": round(len(paths) / wall, 2),
                    "client_cpu_s": round(time.process_time() - cpu, 3), "load_before": load,
                    "load_after": _load()}


def _max_difference(a, b):
    import numpy as np

    same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
    finite = np.isfinite(a) & np.isfinite(b)
    return same_nan, float(np.abs(a[finite] - b[finite]).max(initial=0.0))


def measure(paths, worker_counts, batch_size, folder):
    """The one-process baseline and one cluster run per worker count."""
    import joblib

    from skagegender.embedding import ArcFaceEmbedder

    ArcFaceEmbedder(batch_size=batch_size).embed(paths[:2])  # networks built, not timed
    reference, baseline = _timed_embed(ArcFaceEmbedder(batch_size=batch_size, n_jobs=1), paths)
    baseline["worker_cpu_s"] = baseline.pop("client_cpu_s")
    runs = []
    for n_workers in worker_counts:
        cluster = dask_cluster(n_workers, folder / f"cluster{n_workers}")
        with cluster as (client, _), joblib.parallel_config(backend="dask"):
            warm = ArcFaceEmbedder(batch_size=1)  # one image per worker, untimed
            warm.embed(paths[: n_workers * 2])
            cache = folder / f"cache{n_workers}"
            before = client.run(time.process_time)
            result, run = _timed_embed(ArcFaceEmbedder(batch_size=batch_size, cache=cache),
                                       paths)
            after = client.run(time.process_time)
        run["n_workers"] = n_workers
        run["worker_cpu_s"] = round(sum(after[w] - before[w] for w in after), 3)
        run["same_nan_rows"], run["max_abs_difference"] = _max_difference(result.features,
                                                                          reference.features)
        run["errors_equal"] = result.errors == reference.errors
        runs.append(run)
        print(f"{n_workers} worker(s): {run['images_per_s']} images/s ({run['seconds']} s), "
              f"worker CPU {run['worker_cpu_s']} s, max |diff| {run['max_abs_difference']:.2g}",
              flush=True)
    return baseline, runs


def _markdown(report):
    base = report["baseline"]
    setup = (
        f"{report['n_images']} UTKFace images (200 x 200), `ArcFaceEmbedder(batch_size="
        f"{report['batch_size']}, cache=<fresh folder>)` under `joblib.parallel_config("
        "backend=\"dask\")`; `dask scheduler` and `dask worker --nthreads 1 --no-nanny` "
        f"processes on one machine ({report['machine']['cpus']} CPUs, "
        f"{report['machine']['platform']}, run at niceness {report['machine'].get('nice')})."
        " Workers warmed up (networks built) before "
        "timing. Baseline: the same images in one process, `n_jobs=1`, no Dask."
    )
    header = ("| run | images/s | seconds | worker CPU s | CPU ms / image | cores busy "
              "| client CPU s | load (1 min) | max abs diff vs baseline |")

    def row(name, run, difference):
        return (f"| {name} | {run['images_per_s']} | {run['seconds']} | "
                f"{run['worker_cpu_s']} | "
                f"{1000 * run['worker_cpu_s'] / report['n_images']:.1f} | "
                f"{run['worker_cpu_s'] / run['seconds']:.2f} | {run.get('client_cpu_s', '-')} | "
                f"{run['load_before']} -> {run['load_after']} | {difference} |")

    lines = [
        "# Embedding on a Dask cluster of separate processes",
        "",
        "`" + " ".join(["python benchmarks/dask_scaling.py", *report["argv"]]) + "`",
        "",
        setup,
        "",
        header,
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
        row("one process, no Dask", base, 0),
    ]
    for run in report["runs"]:
        lines.append(row(f"Dask, {run['n_workers']} worker(s)", run,
                         f"{run['max_abs_difference']:.2g}"))
    lines += [
        "",
        "Same rows: every run's features equal the baseline's (NaN rows in the same places: "
        + ", ".join(str(r["same_nan_rows"]) for r in report["runs"])
        + "; per-image errors equal: "
        + ", ".join(str(r["errors_equal"]) for r in report["runs"]) + ").",
        ("Timings on a shared machine are noisy (load average beside each run); the CPU "
         "time per image is the steadier number. Cores busy: the workers' CPU seconds "
         "over the wall seconds, the share of the machine the run actually got (the "
         "baseline's is its own process's). Client CPU: the client process (scheduling, "
         "cache commits)."),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="UTKFace folder (default: ../shared/data/UTKFace)")
    parser.add_argument("--n-images", type=int, default=2000,
                        help="images embedded per run (default: %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts, one cluster each (default: 1 2)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per task and cache commit (default: %(default)s)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"),
                        help="folder for dask_scaling.json and .md (default: %(default)s)")
    args = parser.parse_args(argv)

    paths = _images(args.data, args.n_images)
    with tempfile.TemporaryDirectory() as tmp:
        baseline, runs = measure(paths, args.workers, args.batch_size, Path(tmp))
    report = {
        "argv": sys.argv[1:] if argv is None else list(argv),
        "n_images": len(paths),
        "batch_size": args.batch_size,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "nice": os.nice(0) if hasattr(os, "nice") else None},
        "baseline": baseline,
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dask_scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "dask_scaling.md").write_text(_markdown(report))
    print(f"baseline (one process): {baseline['images_per_s']} images/s; "
          f"wrote {out / 'dask_scaling.md'}")
    return report


if __name__ == "__main__":
    main()
