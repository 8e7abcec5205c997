"""Speed levers of the default model, measured one by one (ms per face, and accuracy).

Run from the repository root::

    python benchmarks/speed_levers.py                       # every lever
    python benchmarks/speed_levers.py --levers crop int8 ort outputs   # timings only
    python benchmarks/speed_levers.py --levers accuracy --limit 5000    # crop-size accuracy
    python benchmarks/speed_levers.py --levers njobs        # when nothing else runs

Levers (``--levers``; each run updates its levers in ``speed_levers.json`` in
``--out-dir`` and rewrites ``speed_levers.md`` from all of them, with the command
that measured each):

- ``crop``: SFace cut at ``conv_14_relu`` (input height and width symbolic, every
  node after ``conv_14_relu`` pruned) on aligned crops resized to ``--sizes`` px,
  batch 1 and 8; the whole graph (``fc1``) at 112 px beside it.
- ``accuracy`` (needs torch): for each size, the fine-tuned SFace layer
  (:func:`skagegender.training.train_finetuned_layer`, its defaults: 4 epochs;
  one torch thread) trained on that size's ``conv_14_relu`` maps of a seeded
  ``--limit`` subset of UTKFace (80 % of it; crops: the 112 px crop of
  ``ArcFaceEmbedder.align`` resized to the size, ``cv2.INTER_AREA``) and scored by
  its expected age on the other 20 %, on degraded copies of them
  (:func:`skagegender.training.degrade_photo`) and on the FG-NET images. The s x s
  maps are fed to the unchanged 7 x 7 layer through a fixed bilinear upsampling
  ``U`` (7 x s per axis, half-pixel centres): the trained layer is a linear map of
  the s x s maps (fold ``W (U x U)`` into a 1024 s^2 x 128 matrix to ship it) and
  it starts from SFace's own weights, ``W (U x U)``.
- ``int8``: onnxruntime's dynamic and static (QDQ and QOperator, per channel,
  calibrated on aligned UTKFace crops) quantization of the float SFace graph
  against float32, batch 1 and 8; for a variant that is faster: cosine of its
  ``fc1`` to the float one, and the shipped fine-tuned layer's expected age on its
  ``conv_14_relu`` maps against the float maps' (UTKFace crops of the subset).
- ``ort``: onnxruntime session settings on SFace (graph optimisation level,
  execution mode, intra-op threads, memory arena and pattern), batch 1 and 8.
- ``njobs``: ``ArcFaceEmbedder(layers="age-gender-finetuned", n_jobs=1 vs 2)
  .transform`` on ``--n-njobs`` UTKFace paths, both cores, interleaved.
- ``outputs``: which feature blocks the shipped models' heads read, and the time
  of computing only those (public ``ArcFaceEmbedder`` options, and SFace graphs
  fetched or pruned to ``conv_14_relu``).

Timings run pinned to one core (``--core``, the last by default) with one
onnxruntime thread unless stated, after a warm-up; each is the median of
``--repeats`` (best beside it), as wall time and process CPU time (the machine
may be shared: CPU time is less sensitive to other jobs). Crops, maps and graphs
are cached in ``--cache-dir`` (default: ``speed_levers`` in the skagegender cache
folder), never in the repository.
"""

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
LEVERS = ("crop", "accuracy", "int8", "ort", "njobs", "outputs")
SIZES = (112, 96, 80, 64)
MAP_LAYER = "conv_14_relu"
#: Side of SFace's conv_14_relu maps at 112 px.
MAP_SIDE = 7


# -- measuring ---------------------------------------------------------------


def pin(cores):
    """Run this thread (and the onnxruntime threads it starts) on ``cores``."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cores))


#: The cores this process may use, as it started (before any pinning).
CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


def all_cores():
    return list(CORES)


def measure(fn, n_items, repeats):
    """Median and best ms per item of ``fn()`` (after one warm-up), wall and CPU."""
    fn()
    walls, cpus = [], []
    for _ in range(max(1, repeats)):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - wall) / n_items * 1e3)
        cpus.append((time.process_time() - cpu) / n_items * 1e3)
    return {"wall_ms": float(np.median(walls)), "wall_best_ms": float(min(walls)),
            "cpu_ms": float(np.median(cpus)), "repeats": len(walls)}


def ort_session(path, *, level="all", mode="sequential", threads=1, arena=True,
                mem_pattern=True, spinning=None):
    """An onnxruntime CPU session with these settings."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1 if mode == "sequential" else 2
    options.execution_mode = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
                              "parallel": ort.ExecutionMode.ORT_PARALLEL}[mode]
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    options.enable_cpu_mem_arena = bool(arena)
    options.enable_mem_pattern = bool(mem_pattern)
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def blob_of(crops):
    """RGB uint8 crops (n, s, s, 3) -> SFace's input: float32 NCHW, raw 0..255."""
    return np.ascontiguousarray(np.asarray(crops).transpose(0, 3, 1, 2), dtype=np.float32)


def time_session(session, crops, batch, repeats, outputs=None):
    """ms per face of ``session`` on ``crops`` (RGB uint8), ``batch`` crops per call."""
    blobs = [blob_of(crops[i:i + batch]) for i in range(0, len(crops), batch)]
    name = session.get_inputs()[0].name

    def run():
        for blob in blobs:
            session.run(outputs, {name: blob})

    return measure(run, len(crops), repeats)


def resize_crops(crops, size):
    """Aligned 112 px crops resized to ``size`` px (area interpolation)."""
    if size == 112:
        return np.asarray(crops)
    import cv2

    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])


# -- graphs ------------------------------------------------------------------


def prune_graph(source, outputs, target):
    """Write ``source`` cut down to what ``outputs`` need (nodes, initializers, outputs)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    needed, stack, keep = set(outputs), list(outputs), set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in keep:
            continue
        keep.add(id(node))
        for name in node.input:
            if name and name not in needed:
                needed.add(name)
                stack.append(name)
    nodes = [node for node in graph.node if id(node) in keep]
    del graph.node[:]
    graph.node.extend(nodes)
    inits = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.output[:]
    for name in outputs:
        graph.output.append(helper.make_tensor_value_info(
            name, TensorProto.FLOAT, ["batch", f"{name}_c", f"{name}_h", f"{name}_w"]))
    del graph.value_info[:]
    onnx.checker.check_model(model)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(target) + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, target)
    return Path(target)


def sface_graph(kind, cache):
    """Path of an SFace graph: ``full`` (fc1), ``default`` (what the default model's
    backbone builds: fc1, 3 pooled layers, raw conv_14_relu), ``fc1+maps`` (fc1 and
    raw conv_14_relu) or ``cut14`` (only conv_14_relu, any input size)."""
    from skagegender.embedding._assets import SFACE, converted_model
    from skagegender.embedding._backbones import AGE_GENDER_LAYERS

    if kind == "full":
        return converted_model(SFACE, symbolic_dims={0: "batch"})
    if kind == "default":
        return converted_model(SFACE, symbolic_dims={0: "batch"},
                               pooled_layers=AGE_GENDER_LAYERS, raw_layers=(MAP_LAYER,))
    if kind == "fc1+maps":
        return converted_model(SFACE, symbolic_dims={0: "batch"}, raw_layers=(MAP_LAYER,))
    if kind == "cut14":
        source = converted_model(SFACE, symbolic_dims={0: "batch", 2: "height", 3: "width"},
                                 raw_layers=(MAP_LAYER,))
        target = Path(cache) / "graphs" / f"sface-cut14-{_digest(source)}.onnx"
        return target if target.is_file() else prune_graph(source, [MAP_LAYER], target)
    raise ValueError(kind)


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


# -- data --------------------------------------------------------------------


def utkface_split(data, limit):
    """A seeded ``limit`` subset of UTKFace, split 80/20 (seed 0): (bunch, train, test)."""
    from skagegender.datasets import load_utkface
    from skagegender.datasets._registry import subsample

    bunch = subsample(load_utkface(Path(data) / "UTKFace"), limit, random_state=0)
    order = np.random.default_rng(0).permutation(len(bunch.paths))
    n_test = round(0.2 * len(order))
    return bunch, np.sort(order[n_test:]), np.sort(order[:n_test])


def aligned(items, cache, name):
    """``ArcFaceEmbedder().align`` of ``items`` (RGB crops, found mask), cached by content key."""
    key = hashlib.sha256(json.dumps([name, [str(i) if not isinstance(i, np.ndarray) else
                                            hashlib.sha256(i.tobytes()).hexdigest()
                                            for i in items]]).encode()).hexdigest()[:16]
    path = Path(cache) / f"crops-{name}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            return saved["crops"], saved["found"]
    from skagegender.embedding import ArcFaceEmbedder

    result = ArcFaceEmbedder(batch_size=32, n_jobs=1).align(items)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, crops=result.crops, found=result.found)
    return result.crops, result.found


def timing_crops(args):
    """``--n-crops`` aligned UTKFace crops (RGB) of the subset's test part."""
    bunch, _, test = utkface_split(args.data, args.limit)
    paths = [bunch.paths[i] for i in test[:args.n_crops * 2]]
    crops, found = aligned(paths, args.cache_dir, "timing")
    return crops[found][:args.n_crops]


def degraded_images(paths, seed0=1000):
    """Degraded RGB copies of images (``degrade_photo`` on BGR, seed ``seed0 + i``)."""
    from skagegender.embedding import load_image
    from skagegender.training import degrade_photo

    return [np.ascontiguousarray(degrade_photo(load_image(p), seed0 + i)[..., ::-1])
            for i, p in enumerate(paths)]


# -- lever 1: crop size ------------------------------------------------------


def lever_crop(args):
    crops = timing_crops(args)
    pin([args.core])
    cut = sface_graph("cut14", args.cache_dir)
    rows = []
    full = ort_session(sface_graph("full", args.cache_dir))
    for batch in (1, 8):
        rows.append({"graph": "whole SFace (fc1)", "size": 112, "batch": batch,
                     **time_session(full, crops, batch, args.repeats)})
    session = ort_session(cut)
    for size in args.sizes:
        small = resize_crops(crops, size)
        shape = session.run(None, {"data": blob_of(small[:1])})[0].shape
        for batch in (1, 8):
            rows.append({"graph": "cut at conv_14_relu", "size": size, "batch": batch,
                         "map_shape": list(shape[1:]),
                         **time_session(session, small, batch, args.repeats)})
    return {"rows": rows, "n_crops": len(crops)}


# -- lever 1: accuracy of each crop size -------------------------------------


def upsample_matrix(size, out=MAP_SIDE):
    """(out, size) bilinear interpolation matrix (half-pixel centres); rows sum to 1."""
    matrix = np.zeros((out, size))
    for a in range(out):
        src = min(max((a + 0.5) * size / out - 0.5, 0.0), size - 1)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, size - 1)
        weight = src - i0
        matrix[a, i0] += 1 - weight
        matrix[a, i1] += weight
    return matrix


def fold_linear(weight, size, side=MAP_SIDE):
    """A linear map of (C, 7, 7) maps read through :class:`Upsampled`, as one of (C, s, s).

    ``weight`` (out, C * 7 * 7), flattened as PyTorch's Flatten does; returns
    (out, C * s * s) with ``fold_linear(W, s) @ m.ravel() == W @ up(m).ravel()``
    for every (C, s, s) map ``m``: how a layer trained on upsampled maps ships.
    """
    weight = np.asarray(weight)
    u = upsample_matrix(size, side)
    w = weight.reshape(len(weight), -1, side, side)
    return np.einsum("ocab,ai,bj->ocij", w, u, u).reshape(len(weight), -1)


class Upsampled:
    """Maps (n, C, s, s) seen as (n, C, 7, 7) through a fixed bilinear upsampling."""

    def __init__(self, maps, out=MAP_SIDE):
        self.maps = maps
        side = maps.shape[-1]
        self.matrix = None if side == out else upsample_matrix(side, out).astype(np.float32)
        self.shape = (len(maps), maps.shape[1], out, out)

    def __len__(self):
        return len(self.maps)

    def __getitem__(self, index):
        x = np.asarray(self.maps[index], dtype=np.float32)
        if self.matrix is None:
            return x
        u = self.matrix
        return np.ascontiguousarray(np.einsum("ai,bj,ncij->ncab", u, u, x, optimize=True),
                                    dtype=np.float32)


def maps_at(size, crops, cache, key, session=None):
    """conv_14_relu maps (float16) of RGB crops resized to ``size`` px, cached."""
    path = Path(cache) / f"maps-{size}-{key}.npy"
    if path.is_file():
        maps = np.load(path, allow_pickle=False)
        if len(maps) == len(crops):
            return maps
    parts = []
    for start in range(0, len(crops), 32):
        small = resize_crops(crops[start:start + 32], size)
        parts.append(session.run([MAP_LAYER], {"data": blob_of(small)})[0].astype(np.float16))
    maps = np.concatenate(parts)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, maps)
    os.replace(tmp, path)
    return maps


def lever_accuracy(args):
    from skagegender.datasets import load_fgnet
    from skagegender.training import train_finetuned_layer

    bunch, train, test = utkface_split(args.data, args.limit)  # not pinned: no timing here
    fgnet = load_fgnet(Path(args.data) / "FGNET")
    if args.fgnet_limit is not None:
        fgnet = {"paths": fgnet.paths[:args.fgnet_limit], "age": fgnet.age[:args.fgnet_limit]}
    start = time.perf_counter()
    utk_crops, utk_found = aligned(list(bunch.paths), args.cache_dir, "utkface")
    test_paths = [bunch.paths[i] for i in test]
    deg_crops, deg_found = aligned(degraded_images(test_paths), args.cache_dir, "degraded")
    fg_crops, fg_found = aligned(list(fgnet["paths"]), args.cache_dir, "fgnet")
    align_seconds = time.perf_counter() - start
    crops = np.concatenate([utk_crops, deg_crops, fg_crops])
    n_utk, n_deg = len(utk_crops), len(deg_crops)
    key = hashlib.sha256(json.dumps([list(bunch.paths), test.tolist(),
                                     list(map(str, fgnet["paths"]))]).encode()).hexdigest()[:16]
    age = np.asarray(bunch.age, np.float32)
    female = np.where(np.asarray(bunch.gender, object) == "female", 1.0,
                      np.where(np.asarray(bunch.gender, object) == "male", 0.0, np.nan))
    train_rows = train[utk_found[train]]
    test_rows = test[utk_found[test]]
    deg_rows = np.flatnonzero(deg_found)
    fg_rows = np.flatnonzero(fg_found)
    session = ort_session(sface_graph("cut14", args.cache_dir))
    classes = np.arange(101, dtype=np.float64)
    results = []
    for size in args.sizes:
        done = Path(args.cache_dir) / f"accuracy-{size}-{key}.json"
        if done.is_file():  # measured by an earlier, interrupted run
            results.append(json.loads(done.read_text()))
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        maps = maps_at(size, crops, args.cache_dir, key, session)
        maps_s = (time.perf_counter() - t0, time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        layer = train_finetuned_layer(Upsampled(maps[:n_utk]), age, female, rows=train_rows,
                                      n_threads=1, random_state=0)
        train_s = (time.perf_counter() - t0, time.process_time() - c0)
        view = Upsampled(maps)

        def expected(rows, view=view, layer=layer):
            probs = layer.outputs(view, rows)
            return probs[:, :101] @ classes, probs[:, 101]

        test_age, test_female = expected(test_rows)
        deg_age, _ = expected(n_utk + deg_rows)
        fg_age, _ = expected(n_utk + n_deg + fg_rows)
        known = ~np.isnan(female[test_rows])
        results.append({
            "size": size, "map_shape": list(maps.shape[1:]),
            "utkface_mae": float(np.mean(np.abs(test_age - age[test_rows]))),
            "degraded_mae": float(np.mean(np.abs(deg_age - age[test[deg_rows]]))),
            "fgnet_mae": float(np.mean(np.abs(fg_age - np.asarray(fgnet["age"])[fg_rows]))),
            "gender_accuracy": float(np.mean((test_female[known] > 0.5)
                                             == (female[test_rows][known] == 1))),
            "maps_wall_s": maps_s[0], "maps_cpu_s": maps_s[1],
            "train_wall_s": train_s[0], "train_cpu_s": train_s[1],
        })
        print(json.dumps(results[-1]), flush=True)
        done.write_text(json.dumps(results[-1]))
        del maps, view, layer
    return {"rows": results, "n_subset": len(bunch.paths), "n_train": len(train_rows),
            "n_test": len(test_rows), "n_degraded": len(deg_rows), "n_fgnet": len(fg_rows),
            "n_fgnet_images": len(fgnet["paths"]), "align_wall_s": align_seconds,
            "init": ("s x s maps fed through a fixed bilinear 7 x s upsampling per axis to "
                     "the unchanged layer: a linear map of the s x s maps initialised as "
                     "SFace's W (U x U)")}


# -- lever 2: int8 -----------------------------------------------------------


class _Calibration:
    """onnxruntime CalibrationDataReader over aligned crops, one per call."""

    def __init__(self, crops):
        self.blobs = iter([{"data": blob_of(c[None])} for c in crops])

    def get_next(self):
        return next(self.blobs, None)


def quantized_graphs(source, crops, folder):
    """{variant: path} of int8 versions of ``source`` (errors recorded as strings)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reader = type("Reader", (_Calibration, CalibrationDataReader), {})
    variants = {
        "dynamic, int8 weights (ConvInteger)": lambda out: quantize_dynamic(
            str(source), str(out), weight_type=QuantType.QInt8),
        "dynamic, uint8 weights": lambda out: quantize_dynamic(
            str(source), str(out), weight_type=QuantType.QUInt8),
        "static QDQ, u8 activations, s8 weights per channel": lambda out: quantize_static(
            str(source), str(out), reader(crops), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True),
        "static QOperator (QLinearConv), u8/s8 per channel": lambda out: quantize_static(
            str(source), str(out), reader(crops), quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True),
    }
    paths = {}
    for index, (name, make) in enumerate(variants.items()):
        out = folder / f"sface-int8-{index}-{_digest(source)}.onnx"
        if not out.is_file():
            try:
                make(out)
            except Exception as exc:  # noqa: BLE001 - reported in the results
                paths[name] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
                continue
        paths[name] = out
    return paths


def lever_int8(args):
    from skagegender.embedding._assets import packaged_session
    from skagegender.embedding._finetuned import SFACE_FINETUNED

    bunch, _, test = utkface_split(args.data, args.limit)
    paths = [bunch.paths[i] for i in test[:args.n_int8_accuracy]]
    crops, found = aligned(paths, args.cache_dir, "int8")
    ages = np.asarray(bunch.age, float)[test[:args.n_int8_accuracy]][found]
    crops = crops[found]
    calibration = crops[:args.n_calibration]
    timing = crops[:args.n_crops]
    source = sface_graph("fc1+maps", args.cache_dir)
    graphs = {"float32": source, **quantized_graphs(source, calibration,
                                                    Path(args.cache_dir) / "graphs")}
    pin([args.core])
    rows, outputs = [], {}
    for name, path in graphs.items():
        if isinstance(path, str):
            rows.append({"variant": name, "error": path})
            continue
        session = ort_session(path)
        for batch in (1, 8):
            rows.append({"variant": name, "batch": batch,
                         **time_session(session, timing, batch, args.repeats)})
        outputs[name] = session
    base = {r["batch"]: r["cpu_ms"] for r in rows if r.get("variant") == "float32"}
    layer = packaged_session(SFACE_FINETUNED.asset)
    classes = np.arange(101, dtype=np.float64)

    def run(session):
        fc1, maps = [], []
        for start in range(0, len(crops), 16):
            a, b = session.run(["fc1", MAP_LAYER], {"data": blob_of(crops[start:start + 16])})
            fc1.append(a)
            maps.append(b)
        fc1, maps = np.concatenate(fc1), np.concatenate(maps)
        probs = layer.run(None, {"maps": maps})[0]
        return fc1 / np.linalg.norm(fc1, axis=1, keepdims=True), probs[:, :101] @ classes

    accuracy = []
    ref_fc1, ref_age = run(outputs["float32"])
    for name, session in outputs.items():
        # faster: at least 5 % less CPU than float32 at batch 1 and at batch 8
        faster = all(r["cpu_ms"] < 0.95 * base[r["batch"]] for r in rows
                     if r.get("variant") == name)
        if name == "float32" or not faster:
            continue
        fc1, age = run(session)
        cosine = np.sum(fc1 * ref_fc1, axis=1)
        accuracy.append({"variant": name, "fc1_cosine_mean": float(cosine.mean()),
                         "fc1_cosine_min": float(cosine.min()),
                         "age_abs_change_mean": float(np.mean(np.abs(age - ref_age))),
                         "age_abs_change_max": float(np.max(np.abs(age - ref_age))),
                         "mae_int8": float(np.mean(np.abs(age - ages))),
                         "mae_float32": float(np.mean(np.abs(ref_age - ages)))})
    return {"rows": rows, "accuracy": accuracy, "n_crops": len(timing),
            "n_accuracy": len(crops), "n_calibration": len(calibration),
            "cpu_flags": _cpu_flags()}


def _cpu_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx512_vnni", "avx_vnni", "avx2",
                                                   "avx512f", "amx")))


# -- lever 3: onnxruntime settings --------------------------------------------


def lever_ort(args):
    crops = timing_crops(args)
    path = sface_graph("full", args.cache_dir)
    one, both = [args.core], all_cores()
    settings = [
        ("level disabled", {"level": "disabled"}, one),
        ("level basic", {"level": "basic"}, one),
        ("level extended", {"level": "extended"}, one),
        ("level all (shipped)", {"level": "all"}, one),
        ("all, parallel execution mode", {"mode": "parallel"}, one),
        ("all, no memory arena", {"arena": False}, one),
        ("all, no memory pattern", {"mem_pattern": False}, one),
        ("all, no arena, no pattern", {"arena": False, "mem_pattern": False}, one),
        ("all, 2 intra-op threads on 2 cores", {"threads": 2}, both),
        ("all, 2 intra-op threads, no spinning", {"threads": 2, "spinning": False}, both),
    ]
    rows = []
    for name, options, cores in settings:
        pin(cores)
        session = ort_session(path, **options)
        for batch in (1, 8):
            rows.append({"setting": name, "cores": len(cores), "batch": batch,
                         **time_session(session, crops, batch, args.repeats)})
        del session
    pin([args.core])
    return {"rows": rows, "n_crops": len(crops)}


# -- lever 4: n_jobs ----------------------------------------------------------


def lever_njobs(args):
    from joblib.externals.loky import get_reusable_executor

    from skagegender.embedding import ArcFaceEmbedder

    pin(all_cores())
    bunch, _, _ = utkface_split(args.data, args.limit)
    order = np.random.default_rng(1).permutation(len(bunch.paths))[:args.n_njobs]
    paths = [bunch.paths[i] for i in np.sort(order)]
    runs = {"1": [], "2": []}
    loads = []
    for n_jobs in (1, 2):  # warm-up: sessions, worker pool
        ArcFaceEmbedder(layers="age-gender-finetuned", n_jobs=n_jobs).transform(paths[:32])
    for _ in range(args.njobs_repeats):
        for n_jobs in (1, 2):
            embedder = ArcFaceEmbedder(layers="age-gender-finetuned", n_jobs=n_jobs)
            workers = children_cpu()
            wall, cpu = time.perf_counter(), time.process_time()
            embedder.transform(paths)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            after = children_cpu()
            worker_cpu = (None if workers is None else
                          sum(t - workers.get(pid, 0.0) for pid, t in after.items()))
            runs[str(n_jobs)].append({"wall_s": wall, "parent_cpu_s": cpu,
                                      "workers_cpu_s": worker_cpu})
            loads.append(os.getloadavg()[0])
    get_reusable_executor().shutdown(wait=True)
    median = {k: float(np.median([r["wall_s"] for r in v])) for k, v in runs.items()}
    return {"n_images": len(paths), "cores": len(all_cores()), "runs": runs,
            "images_per_s": {k: len(paths) / v for k, v in median.items()},
            "ratio": median["1"] / median["2"], "load_after_each": loads}


def children_cpu():
    """{pid: user + system CPU seconds} of this process's live descendants (the
    joblib workers), or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    out = {}
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        out[child.pid] = times.user + times.system
    return out


# -- lever 5: compute only what the heads read ----------------------------------


def _heads_read():
    """Which feature blocks the shipped models' heads read (from the loaded files)."""
    from skagegender.pretrained import load

    out = {}
    for name in ("default", "fast"):
        model = load(name)
        embedder = model.embedder_
        age, gender = model.age_head_, model.gender_head_
        out[name] = {"layers": str(embedder.layers), "identity": bool(embedder.identity),
                     "n_features": int(model.n_features_in_),
                     "age_head": _describe(age), "gender_head": _describe(gender)}
    return out


def _describe(head):
    """The estimator chain of a head and the column blocks it reads, where it says so."""
    names, node = [], head
    for _ in range(6):
        if node is None:
            break
        names.append(type(node).__name__)
        experts = getattr(node, "experts", None)
        if experts is not None:
            return {"chain": names, "reads": [f"columns from {start} ({len(ages)} classes)"
                                              for start, ages in experts]}
        start = getattr(node, "start", None)
        if start is not None and getattr(node, "class_ages", None) is not None:
            return {"chain": names, "reads": [(f"columns from {start} "
                                               f"({len(node.class_ages)} classes)")]}
        node = next((getattr(node, attr) for attr in ("estimator", "head", "head_", "estimator_")
                     if getattr(node, attr, None) is not None), None)
    return {"chain": names, "reads": ["all columns"]}


def lever_outputs(args):
    from skagegender.embedding import ArcFaceEmbedder

    crops = timing_crops(args)
    reads = _heads_read()
    pin([args.core])
    rows = []
    sessions = {"default backbone graph (fc1, 3 pooled, conv_14_relu), fetch all":
                (sface_graph("default", args.cache_dir), None),
                "same graph, fetch conv_14_relu only": (sface_graph("default", args.cache_dir),
                                                        [MAP_LAYER]),
                "graph pruned to conv_14_relu": (sface_graph("cut14", args.cache_dir), None)}
    for name, (path, fetch) in sessions.items():
        session = ort_session(path)
        rows.append({"what": name, "batch": 8,
                     **time_session(session, crops, 8, args.repeats, fetch)})
    embedders = {
        'layers="age-gender-finetuned" (shipped default features)':
            {"layers": "age-gender-finetuned"},
        'layers=("dlib_age", "dlib_gender", "sface_finetuned"), identity=False':
            {"layers": ("dlib_age", "dlib_gender", "sface_finetuned"), "identity": False},
        'layers=("dlib_age", "sface_finetuned"), identity=False (what the age gate reads)':
            {"layers": ("dlib_age", "sface_finetuned"), "identity": False},
        'layers=("sface_finetuned",), identity=False': {"layers": ("sface_finetuned",),
                                                        "identity": False},
        'layers=("dlib_age", "dlib_gender"), identity=False (shipped fast features)':
            {"layers": ("dlib_age", "dlib_gender"), "identity": False},
    }
    for name, params in embedders.items():
        embedder = ArcFaceEmbedder(**params, batch_size=8)
        rows.append({"what": f"ArcFaceEmbedder({name}).transform of aligned crops",
                     "batch": 8, **measure(lambda e=embedder: e.transform(crops),
                                           len(crops), args.repeats)})
    return {"rows": rows, "heads": reads, "n_crops": len(crops)}


# -- report ------------------------------------------------------------------


def _ms(row):
    return f"{row['wall_ms']:.1f} ({row['wall_best_ms']:.1f}) | {row['cpu_ms']:.1f}"


def render(report):
    meta = report.get("_meta", {})
    lines = ["# Speed levers of the default model", "",
             (f"{meta.get('cpus', '?')} CPUs ({', '.join(meta.get('cpu_flags', []))}), "
              f"{meta.get('platform', '')}, onnxruntime {meta.get('onnxruntime', '?')}. "
              "Pinned to one core with one onnxruntime thread unless stated; each timing is "
              "the median (best) of the repeats, wall ms per face, then process CPU ms per "
              "face. The machine is shared: the 1-minute load average at the start and end "
              "of each lever's run is given under its table."), ""]

    def footer(result):
        return [(f"\n`{result['command']}` ({result['when']}; load average "
                 f"{result['load_before']:.2f} before, {result['load_after']:.2f} after; "
                 f"{result['seconds']:.0f} s)"), ""]

    if "crop" in report:
        r = report["crop"]
        lines += ["## 1. SFace on smaller aligned crops (time)", "",
                  (f"SFace cut at `conv_14_relu` (nodes after it pruned; input height and width "
                   f"symbolic) on {r['n_crops']} aligned UTKFace crops resized to each size."),
                  "", "| graph | crop px | conv_14_relu maps | batch | wall ms (best) | CPU ms |",
                  "|---|---|---|---|---|---|"]
        for row in r["rows"]:
            shape = "x".join(map(str, row.get("map_shape", []))) or "-"
            lines.append(f"| {row['graph']} | {row['size']} | {shape} | {row['batch']} | "
                         f"{_ms(row)} |")
        lines += footer(r)
    if "accuracy" in report:
        r = report["accuracy"]
        lines += ["## 1. SFace on smaller aligned crops (accuracy)", "",
                  (f"The fine-tuned layer alone (its expected age), trained (4 epochs, one torch "
                   f"thread, seed 0) on each size's `conv_14_relu` maps of {r['n_train']} "
                   f"UTKFace faces (80 % of a seeded subset of {r['n_subset']}), scored on "
                   f"the {r['n_test']} held out, on {r['n_degraded']} degraded copies of them "
                   f"(`degrade_photo`, one each) and on {r['n_fgnet']} of the "
                   f"{r['n_fgnet_images']} FG-NET images (faces found). Crops: the 112 px "
                   f"crop of `ArcFaceEmbedder.align` resized (area). Initialisation: "
                   f"{r['init']}. 112 px is the reference."),
                  "", ("| crop px | maps | UTKFace MAE | degraded MAE | FG-NET MAE | gender "
                       "accuracy (its P(female)) | maps CPU s | training CPU s |"),
                  "|---|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['size']} | {'x'.join(map(str, row['map_shape']))} | "
                         f"{row['utkface_mae']:.2f} | {row['degraded_mae']:.2f} | "
                         f"{row['fgnet_mae']:.2f} | {100 * row['gender_accuracy']:.1f} % | "
                         f"{row['maps_cpu_s']:.0f} | {row['train_cpu_s']:.0f} |")
        lines += footer(r)
    if "int8" in report:
        r = report["int8"]
        lines += ["## 2. int8 quantization of SFace", "",
                  (f"onnxruntime quantization of the float SFace graph (outputs `fc1` and "
                   f"`conv_14_relu`); static variants calibrated (MinMax) on {r['n_calibration']} "
                   f"aligned UTKFace crops; timed on {r['n_crops']} crops. CPU flags: "
                   f"{', '.join(r['cpu_flags']) or 'n/a'}."),
                  "", "| variant | batch | wall ms (best) | CPU ms |", "|---|---|---|---|"]
        for row in r["rows"]:
            if "error" in row:
                lines.append(f"| {row['variant']} | - | {row['error']} | |")
            else:
                lines.append(f"| {row['variant']} | {row['batch']} | {_ms(row)} |")
        if r["accuracy"]:
            lines += ["", (f"Faster variants, on {r['n_accuracy']} held-out UTKFace crops: cosine "
                           "of `fc1` to float32, and the shipped fine-tuned layer's expected age "
                           "on the int8 maps vs on the float maps (the shipped layer saw "
                           "UTKFace in training, so its MAE here is optimistic; the change is "
                           "what matters)."), "",
                      ("| variant | fc1 cosine mean (min) | mean (max) abs change of age | "
                       "MAE int8 | MAE float32 |"), "|---|---|---|---|---|"]
            for row in r["accuracy"]:
                lines.append(f"| {row['variant']} | {row['fc1_cosine_mean']:.4f} "
                             f"({row['fc1_cosine_min']:.4f}) | {row['age_abs_change_mean']:.2f} "
                             f"({row['age_abs_change_max']:.2f}) | {row['mae_int8']:.2f} | "
                             f"{row['mae_float32']:.2f} |")
        else:
            lines += ["", ("No int8 variant took at least 5 % less CPU than float32 at both "
                           "batch sizes: accuracy not measured.")]
        lines += footer(r)
    if "ort" in report:
        r = report["ort"]
        lines += ["## 3. onnxruntime settings on SFace", "",
                  f"The whole SFace graph (`fc1`), {r['n_crops']} aligned UTKFace crops.", "",
                  "| setting | cores | batch | wall ms (best) | CPU ms |", "|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['setting']} | {row['cores']} | {row['batch']} | {_ms(row)} |")
        lines += ["", ("CPU ms with 2 threads is the CPU of both threads (spinning threads "
                       "count)."), ""]
        lines += footer(r)
    if "njobs" in report:
        r = report["njobs"]
        lines += ["## 4. n_jobs", "",
                  (f"`ArcFaceEmbedder(layers=\"age-gender-finetuned\", n_jobs=k).transform` on "
                   f"{r['n_images']} UTKFace paths, {r['cores']} cores, runs interleaved "
                   f"(1, 2, 1, 2, ...) after a warm-up (sessions and worker pool)."), "",
                  ("| n_jobs | wall s per run | CPU s per run (this process + workers) | "
                   "images/s (median) |"), "|---|---|---|---|"]
        for k in ("1", "2"):
            runs = r["runs"][k]
            walls = ", ".join(f"{x['wall_s']:.1f}" for x in runs)
            cpus = ", ".join(
                f"{x['parent_cpu_s']:.1f}" + ("" if x.get("workers_cpu_s") is None
                                             else f" + {x['workers_cpu_s']:.1f}")
                for x in runs)
            lines.append(f"| {k} | {walls} | {cpus} | {r['images_per_s'][k]:.1f} |")
        loads = ", ".join(f"{x:.2f}" for x in r["load_after_each"])
        lines += ["", (f"n_jobs=2 gives **{r['ratio']:.2f}x** the images/s of n_jobs=1 (1-minute "
                       f"load after each run: {loads}).")]
        lines += footer(r)
    if "outputs" in report:
        r = report["outputs"]
        lines += ["## 5. Compute only what the heads read", "", "What the shipped heads read:", "",
                  "| model | embedder | features | age head | gender head |",
                  "|---|---|---|---|---|"]
        for name, h in r["heads"].items():
            lines.append(
                f"| {name} | layers={h['layers']}, identity={h['identity']} | {h['n_features']} | "
                f"{' > '.join(h['age_head']['chain'])}: {'; '.join(h['age_head']['reads'])} | "
                f"{' > '.join(h['gender_head']['chain'])}: "
                f"{'; '.join(h['gender_head']['reads'])} |")
        lines += ["", f"Time per face on {r['n_crops']} aligned crops, batch 8:", "",
                  "| what | wall ms (best) | CPU ms |", "|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['what']} | {_ms(row)} |")
        lines += footer(r)
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levers", nargs="+", choices=LEVERS, default=list(LEVERS))
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="folder holding UTKFace/ and FGNET/ (default ../shared/data)")
    parser.add_argument("--limit", type=int, default=5000,
                        help="seeded subset of UTKFace images (default 5000)")
    parser.add_argument("--fgnet-limit", type=int, default=None,
                        help="only the first N FG-NET images (default all)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-crops", type=int, default=32, help="aligned crops timed")
    parser.add_argument("--n-njobs", type=int, default=200)
    parser.add_argument("--njobs-repeats", type=int, default=2)
    parser.add_argument("--n-int8-accuracy", type=int, default=200)
    parser.add_argument("--n-calibration", type=int, default=64)
    parser.add_argument("--core", type=int, default=None,
                        help="core to pin single-core timings to (default: the last)")
    parser.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    if args.core is None:
        args.core = all_cores()[-1]
    if args.cache_dir is None:
        from skagegender.embedding._assets import cache_dir

        args.cache_dir = str(cache_dir() / "speed_levers")
    if any(s % 16 or not 16 <= s <= 112 for s in args.sizes):
        parser.error("--sizes must be multiples of 16 between 16 and 112")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "speed_levers.json"
    report = json.loads(json_path.read_text()) if json_path.is_file() else {}
    import onnxruntime

    report["_meta"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "onnxruntime": onnxruntime.__version__, "cpu_flags": _cpu_flags()}
    command = "python benchmarks/speed_levers.py " + " ".join(
        sys.argv[1:] if argv is None else list(map(str, argv)))
    functions = {"crop": lever_crop, "accuracy": lever_accuracy, "int8": lever_int8,
                 "ort": lever_ort, "njobs": lever_njobs, "outputs": lever_outputs}
    for lever in args.levers:
        load, start = os.getloadavg()[0], time.perf_counter()
        print(f"-- {lever}", flush=True)
        result = functions[lever](args)
        result.update(command=command.strip(), when=time.strftime("%Y-%m-%d %H:%M UTC",
                                                                  time.gmtime()),
                      load_before=load, load_after=os.getloadavg()[0],
                      seconds=time.perf_counter() - start)
        report[lever] = result
        # written after each lever, so a long run keeps what it measured
        current = json.loads(json_path.read_text()) if json_path.is_file() else {}
        current.update({"_meta": report["_meta"], lever: result})
        report = current
        json_path.write_text(json.dumps(report, indent=1, default=_plain) + "\n")
        (out / "speed_levers.md").write_text(render(report))
    print(render(report))
    return report


def _plain(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value))


if __name__ == "__main__":
    main()
