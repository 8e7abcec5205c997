"""Face detection's score threshold (``min_score``) and scale (``det_max_side``), measured.

    python benchmarks/detection.py                  # the full grid (about 10 minutes)
    python benchmarks/detection.py --limit 20 --out-dir /tmp/det   # a smoke run

Every image is detected with :meth:`skagegender.embedding.ArcFaceEmbedder.detect_faces`
(the YuNet detector of the default ``"sface"`` backbone, one onnxruntime thread) once
per distinct detection scale, at the lowest score of the grid; a higher threshold
keeps the detections that score at least that much. This is exactly what detecting
at the higher threshold gives: non-maximum suppression is greedy from the highest
score, so a box that passes a threshold is only ever suppressed by boxes that pass
it too. Sides the image does not exceed are one scale (it is never enlarged).

Image sets:

- ``UTKFace``: a seeded sample (``--n-utkface``, default 2000) of the 200 x 200
  crops in ``--data``/UTKFace, one person each; ``FG-NET``: all 127 scanned photos
  in ``--data``/FGNET/images (307-772 px); ``FG-NET x4``: the same photos enlarged 4
  times (bicubic, 1228-3088 px: a portrait from a camera, the face fills much of the
  frame). For each: the share of images with at least one face (recall proxy) and
  with two or more detections (an extra box is most likely a false positive).
- Group photo: insightface's ``t1.jpg`` (1280 x 886, 6 people) at its own size, as
  a grayscale copy, halved, doubled and stretched to 6000 x 4000 (Lanczos, as in the
  issue), and a mosaic of 4 x 4 copies scaled to 4000 px (96 faces of about 87 px,
  2 % of the long side: a crowd in a camera photo). Its 6 true faces are the boxes found at its own size and full resolution
  with score >= 0.8 (there are exactly 6, one per person); a detection matches a
  true face when their IoU is at least 0.3 (one to one); the others are extra.
- Photos without faces: the ``skimage.data`` images listed in :data:`NO_FACE_PHOTOS`
  (no person in any: astronaut, camera and the LFW subset are left out), three of
  them enlarged 3 times, and seeded synthetic images (uniform noise, smoothed noise,
  a colour gradient and stripes) at 320 x 240, 1280 x 960 and 4000 x 3000. Every
  detection is a false positive.
- Face sizes, at full resolution only: t1 scaled so that its faces are about
  14-520 px (long side 160 to 6000 px), and a seeded 200 of the UTKFace sample
  resized to 64-1000 px. Says which face sizes YuNet finds at all, so which
  ``det_max_side`` keeps a photo's faces in that range.
- Time of detection per image at each side (t1 at 1280 px, 2560 px and 6000 x
  4000; :meth:`ArcFaceEmbedder.align` of an in-memory image: the channel swap,
  downscale, YuNet, decoding and one 112 px warp, no recognition network): wall
  and process CPU time over the loop, per image (the machine may be shared; the
  CPU time is the less disturbed number).

Writes ``detection.json`` (every detection: score, size, box) and ``detection.md``
(the tables and the setting chosen by the rule in :func:`recommend`) into
``--out-dir`` (default ``benchmarks/results``). Needs scikit-image (the no-face
photos) and insightface's wheel (``t1.jpg``; without it the group photo and timing
parts are skipped).
"""

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCORES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SIDES = (640, 1024, 1280, 1600, 2048, 0)  # 0: full resolution
FULL = 1 << 30
#: The package's defaults before this benchmark chose them (no retry scale then).
CURRENT = {"min_score": 0.6, "det_max_side": 1024}
#: ``skimage.data`` images with no person in them (all that ship in the wheel).
NO_FACE_PHOTOS = (
    "binary_blobs", "brick", "cell", "checkerboard", "chelsea", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry",
    "logo", "microaneurysms", "moon", "page", "retina", "rocket", "shepp_logan_phantom",
    "stereo_motorcycle", "text",
)
MOSAIC_TILES, MOSAIC_SIDE = 4, 4000
MOSAIC = f"t1 {MOSAIC_TILES}x{MOSAIC_TILES} mosaic {MOSAIC_SIDE} px"
ENLARGED_NO_FACE = ("coffee", "chelsea", "rocket")
SYNTHETIC_SIZES = ((320, 240), (1280, 960), (4000, 3000))
T1_SWEEP_SIDES = (160, 240, 320, 480, 640, 960, 1280, 2560, 4096, 6000)
UTK_SWEEP_SIDES = (64, 100, 200, 400, 700, 1000)
RECALL_TOLERANCE = 0.005  # the threshold may cost at most 0.5 % of a face set's recall
SEED = 0


def side_label(side):
    return "full" if side in (0, None) else str(side)


# -- images ----------------------------------------------------------------------------


def _resize(bgr, width, height):
    import cv2

    inter = cv2.INTER_AREA if width * height < bgr.shape[0] * bgr.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(bgr, (int(width), int(height)), interpolation=inter)


def _scaled(bgr, factor):
    h, w = bgr.shape[:2]
    return _resize(bgr, max(1, round(w * factor)), max(1, round(h * factor)))


def t1_path():
    """insightface's group photo, or None when the wheel is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "images" / "t1.jpg"
    return path if path.is_file() else None


def _t1_6000x4000(path):
    """t1 stretched to 6000 x 4000 with Lanczos (the issue's copy), as BGR."""
    from PIL import Image

    with Image.open(path) as img:
        big = img.convert("RGB").resize((6000, 4000), Image.LANCZOS)
    return np.ascontiguousarray(np.asarray(big)[..., ::-1])


def group_variants(path):
    """(name, loader) of the group photo's copies."""
    import cv2

    from skagegender.embedding import load_image

    def gray():
        g = cv2.cvtColor(load_image(path), cv2.COLOR_BGR2GRAY)
        return cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)

    return [
        ("t1 1280x886", lambda: load_image(path)),
        ("t1 grayscale", gray),
        ("t1 x0.5", lambda: _scaled(load_image(path), 0.5)),
        ("t1 x2", lambda: _scaled(load_image(path), 2.0)),
        ("t1 6000x4000", lambda: _t1_6000x4000(path)),
        (MOSAIC, lambda: _mosaic(load_image(path))),
    ]


def _mosaic(bgr, n=MOSAIC_TILES, long_side=MOSAIC_SIDE):
    """``n`` x ``n`` copies of the photo, scaled to ``long_side``: many small faces."""
    tiled = np.tile(bgr, (n, n, 1))
    return _scaled(tiled, long_side / max(tiled.shape[:2]))


def _skimage_bgr(name):
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo pairs: the left image
        image = image[0]
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = np.round((image - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3][..., ::-1])


def _synthetic(kind, width, height, seed):
    import cv2

    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "smooth noise":
        small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        return cv2.GaussianBlur(image, (0, 0), 2.0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "gradient":
        a, b, c = rng.uniform(0.2, 1.0, 3)
        image = np.stack([x / width * a, y / height * b, (x + y) / (width + height) * c], axis=2)
        return np.round(image * 255).astype(np.uint8)
    if kind == "stripes":
        period = rng.uniform(0.02, 0.08) * max(width, height)
        angle = rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period)
        image = np.repeat(((wave + 1) * 127.5)[..., None], 3, axis=2)
        return np.round(image).astype(np.uint8)
    raise ValueError(kind)


def no_face_images(limit=None):
    items = [(name, lambda n=name: _skimage_bgr(n)) for name in NO_FACE_PHOTOS]
    items += [(f"{name} x3", lambda n=name: _scaled(_skimage_bgr(n), 3.0))
              for name in ENLARGED_NO_FACE]
    seed = SEED
    for width, height in SYNTHETIC_SIZES:
        for kind in ("noise", "smooth noise", "gradient", "stripes"):
            items.append((f"{kind} {width}x{height}",
                          lambda k=kind, w=width, h=height, s=seed: _synthetic(k, w, h, s)))
            seed += 1
    if limit is not None:
        items = items[:limit]
    return items


def utkface_sample(data, n, limit=None):
    paths = sorted((Path(data) / "UTKFace").glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no UTKFace images in {Path(data) / 'UTKFace'}")
    n = min(n, len(paths)) if limit is None else min(n, limit, len(paths))
    return random.Random(SEED).sample(paths, n)


def fgnet_paths(data, limit=None):
    paths = sorted((Path(data) / "FGNET" / "images").glob("*.[jJ][pP][gG]"))
    return paths if limit is None else paths[:limit]


# -- detection -------------------------------------------------------------------------


def _embedder(side, low):
    from skagegender.embedding import ArcFaceEmbedder

    # one scale per call: the two-scale settings are combined from the sides' detections
    return ArcFaceEmbedder(min_score=low, det_max_side=FULL if side in (0, None) else side,
                           det_retry_side=None, detect=True, color="bgr", n_threads=1)


def detect(image, side, low):
    """Every detection scoring at least ``low``: [score, size, x1, y1, x2, y2]."""
    faces = _embedder(side, low).detect_faces(image)
    return [[round(f.score, 4), round(f.size, 1), *(round(float(v), 1) for v in f.box)]
            for f in faces]


def scan(items, sides, low):
    """Detect each image once per distinct scale; its detections per side label."""
    from skagegender.embedding import load_image

    rows = []
    for name, load in items:
        image = load()
        if not isinstance(image, np.ndarray):
            image = load_image(image)
        long_side = max(image.shape[:2])
        by_scale, row = {}, {"name": name, "shape": list(image.shape[:2]), "detections": {}}
        for side in sides:
            effective = min(FULL if side in (0, None) else side, long_side)
            if effective not in by_scale:  # one embedder (and session) per side
                by_scale[effective] = detect(image, side, low)
            row["detections"][side_label(side)] = by_scale[effective]
        rows.append(row)
    return rows


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(detections, truth, threshold=0.3):
    """(matched, extra): greedy one-to-one matching by score, IoU >= ``threshold``."""
    free = list(range(len(truth)))
    matched = 0
    for det in sorted(detections, key=lambda d: -d[0]):
        ious = [(_iou(det[2:], truth[j]), j) for j in free]
        best = max(ious, default=(0.0, None))
        if best[0] >= threshold:
            free.remove(best[1])
            matched += 1
    return matched, len(detections) - matched


def t1_truth(path, low):
    """The 6 true faces of t1: found at its own size, full resolution, score >= 0.8."""
    from skagegender.embedding import load_image

    image = load_image(path)
    boxes = [d[2:] for d in detect(image, 0, low) if d[0] >= 0.8]
    if len(boxes) != 6:
        raise RuntimeError(f"expected the 6 faces of t1.jpg, found {len(boxes)}")
    return np.asarray(boxes), image.shape[:2]


def _truth_for(truth, base_shape, shape, tiles=1):
    h, w = base_shape
    truth = np.concatenate([truth + np.array([j * w, i * h, j * w, i * h])
                            for i in range(tiles) for j in range(tiles)])
    base_shape = (h * tiles, w * tiles)
    sy, sx = shape[0] / base_shape[0], shape[1] / base_shape[1]
    return (truth * np.array([sx, sy, sx, sy])).tolist()


# -- timing ----------------------------------------------------------------------------


def time_detection(images, sides, repeats):
    """Seconds per image (wall and process CPU) of detection at each side."""
    out = {}
    for name, image in images:
        out[name] = {}
        for side in sides:
            embedder = _embedder(side, CURRENT["min_score"])
            embedder.align([image])  # warm-up: sessions, allocations
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(repeats):
                embedder.align([image])
            out[name][side_label(side)] = {
                "wall_ms": (time.perf_counter() - wall) / repeats * 1e3,
                "cpu_ms": (time.process_time() - cpu) / repeats * 1e3,
            }
    return out


# -- summaries -------------------------------------------------------------------------


def _nms(dets, threshold=0.3):
    keep = []
    for det in sorted(dets, key=lambda d: -d[0]):
        if all(_iou(det[2:], k[2:]) <= threshold for k in keep):
            keep.append(det)
    return keep


def settings(sides, fallback=640):
    """The sides, then the two-scale strategies measured from them.

    ``"S>640"``: detect at S, and at 640 when nothing passes the threshold there
    (a portrait whose face is too large for YuNet at S); ``"S+640"``: both scales,
    their detections merged by non-maximum suppression (IoU 0.3).
    """
    labels = [side_label(s) for s in sides]
    if str(fallback) not in labels:
        return labels
    others = [s for s in labels if s != str(fallback)]
    return (labels + [f"{s}>{fallback}" for s in others]
            + [f"{s}+{fallback}" for s in others])


def dets_at(row, setting, score):
    """The detections of ``row`` passing ``score`` at a side or two-scale setting."""
    if ">" in setting:
        first, second = setting.split(">")
        return dets_at(row, first, score) or dets_at(row, second, score)
    if "+" in setting:
        first, second = setting.split("+")
        return _nms(dets_at(row, first, score) + dets_at(row, second, score))
    return [d for d in row["detections"][setting] if d[0] >= score]


def face_set_stats(rows, side, score):
    counts = [len(dets_at(r, side, score)) for r in rows]
    n = len(rows)
    return {"n": n, "found": sum(c >= 1 for c in counts) / n,
            "multi": sum(c >= 2 for c in counts) / n,
            "extra": int(sum(max(c - 1, 0) for c in counts))}


def no_face_stats(rows, side, score):
    counts = [len(dets_at(r, side, score)) for r in rows]
    return {"n": len(rows), "detections": int(sum(counts)),
            "images": int(sum(c > 0 for c in counts))}


def group_stats(row, side, score):
    dets = dets_at(row, side, score)
    matched, extra = match(dets, row["truth"])
    return {"faces": len(row["truth"]), "found": len(dets),
            "matched": matched, "extra": extra}


def summarize(results, scores, sides):
    """Per (side, score): every set's numbers."""
    table = {}
    for side in settings(sides):
        for score in scores:
            key = f"{side}@{score}"
            entry = {"side": side, "score": score, "face_sets": {}, "groups": {}}
            for name, rows in results["face_sets"].items():
                entry["face_sets"][name] = face_set_stats(rows, side, score)
            entry["no_face"] = no_face_stats(results["no_face"], side, score)
            for row in results.get("groups", []):
                entry["groups"][row["name"]] = group_stats(row, side, score)
            entry["group_extra"] = sum(g["extra"] for g in entry["groups"].values())
            entry["face_set_extra"] = sum(f["extra"] for f in entry["face_sets"].values())
            entry["false_positives"] = (entry["no_face"]["detections"] + entry["group_extra"]
                                        + entry["face_set_extra"])
            entry["group_missed"] = sum(g["faces"] - g["matched"]
                                        for g in entry["groups"].values())
            table[key] = entry
    return table


def recommend(table, scores, sides, timing):
    """The setting chosen by the rule below, and why.

    Threshold: at each side, the thresholds whose recall on every face set is within
    :data:`RECALL_TOLERANCE` of the best threshold's there; among them the one with
    the fewest false positives (detections on no-face photos, extra boxes in the
    group photos, and boxes beyond the first on the one-face images), ties to the
    lower threshold. Side: among the sides whose chosen
    threshold finds all 6 faces and nothing else in every copy of the group photo,
    the one with the fewest false positives, then the best face-set recall, then
    the least CPU time on the 6000 x 4000 photo.
    """
    per_side = {}
    for side in settings(sides):
        entries = [table[f"{side}@{s}"] for s in scores]
        best = {name: max(e["face_sets"][name]["found"] for e in entries)
                for name in entries[0]["face_sets"]}
        keep = [e for e in entries
                if all(e["face_sets"][n]["found"] >= best[n] - RECALL_TOLERANCE for n in best)]
        chosen = min(keep, key=lambda e: (e["false_positives"], e["score"]))
        per_side[side] = chosen

    def cpu(setting):  # on the 6000 x 4000 photo (faces found at the first side)
        per = timing.get("t1 6000x4000", {})
        parts = setting.split("+") if "+" in setting else setting.split(">")[:1]
        return sum(per[p]["cpu_ms"] for p in parts if p in per)

    def recall(entry):
        return sum(s["found"] for s in entry["face_sets"].values())

    exact = [s for s, e in per_side.items() if e["group_missed"] == 0 and e["group_extra"] == 0]
    pool = exact or list(per_side)
    side = min(pool, key=lambda s: (per_side[s]["false_positives"], -recall(per_side[s]),
                                    cpu(s)))
    return {"per_side": {s: e["score"] for s, e in per_side.items()},
            "side": side, "score": per_side[side]["score"],
            "all_group_photos_exact": bool(exact)}


def sweep_stats(results, scores):
    out = {"t1": {}, "utkface": {}}
    for row in results.get("t1_sweep", []):
        out["t1"][row["name"]] = {
            "face_px": row["face_px"],
            **{str(s): dict(zip(("matched", "extra"),
                                match([d for d in row["detections"]["full"] if d[0] >= s],
                                      row["truth"])))
               for s in scores}}
    for name, rows in results.get("utk_sweep", {}).items():
        sizes = [d[1] for r in rows for d in r["detections"]["full"][:1]]
        out["utkface"][name] = {
            "face_px": float(np.median(sizes)) if sizes else None,
            **{str(s): face_set_stats(rows, "full", s)["found"] for s in scores}}
    return out


def false_positive_sizes(results, side, score):
    """Score and size (px) of every detection on the no-face photos at a setting."""
    return sorted(([r["name"], d[0], d[1]] for r in results["no_face"]
                   for d in r["detections"][side] if d[0] >= score), key=lambda x: -x[1])


# -- report ----------------------------------------------------------------------------


def _pct(x):
    return f"{100 * x:.2f}"


def _as_params(setting, score):
    """The ArcFaceEmbedder parameters of a setting, when the package has it."""
    side, _, retry = setting.partition(">")
    if "+" in setting or side == "full":
        return ""
    return (f": `ArcFaceEmbedder(min_score={score}, det_max_side={side}, "
            f"det_retry_side={retry or None})`")


def markdown(report):
    table, rec, scores = report["table"], report["recommendation"], report["scores"]
    sides = [side_label(s) for s in report["sides"]]
    all_settings = settings(report["sides"])
    face_sets = list(report["results"]["face_sets"])
    lines = ["# Face detection: score threshold and scale", "",
             "`" + " ".join(["python benchmarks/detection.py", *report["argv"]]) + "`",
             "",
             f"Machine: {report['machine']}; onnxruntime one thread; run took "
             f"{report['seconds']:.0f} s. Images: "
             + ", ".join(f"{n} {len(r)}" for n, r in report["results"]["face_sets"].items())
             + f", no-face {len(report['results']['no_face'])}, group photo copies "
             f"{len(report['results'].get('groups', []))}. How each is made and counted: the "
             "docstring of `benchmarks/detection.py`.", ""]
    lines += [("Settings: a number is `det_max_side` (`full`: no downscale); `S>640` detects "
               "at S and again at 640 when nothing passes the threshold at S (the package's "
               "`ArcFaceEmbedder(det_max_side=S, det_retry_side=640)`, the same boxes: "
               "tests/test_detection_benchmark.py); `S+640` detects at both and merges the "
               "boxes (non-maximum suppression, IoU 0.3; not in the package)."), ""]
    cur = f"{side_label(CURRENT['det_max_side'])}@{CURRENT['min_score']}"
    best = f"{rec['side']}@{rec['score']}"
    lines += ["## Recommendation (rule of `recommend`)", "",
              (f"- `min_score={rec['score']}`, detection at `{rec['side']}`"
               + _as_params(rec["side"], rec["score"])
               + f" (previous default: `min_score={CURRENT['min_score']}`, "
               f"`det_max_side={CURRENT['det_max_side']}`, no retry)."),
              "- Threshold chosen per side (recall within "
              f"{100 * RECALL_TOLERANCE:.1f} % of the best on every face set, then fewest "
              "false positives): "
              + ", ".join(f"{s}: {v}" for s, v in rec["per_side"].items()) + ".",
              (f"- Every group-photo copy exact (6 found, no extra) at some setting: "
               f"{'yes' if rec['all_group_photos_exact'] else 'no'}."), ""]
    if cur in table and best in table:
        lines += ["| setting | " + " | ".join(f"{n} found % / 2+ %" for n in face_sets)
                  + " | no-face detections | group extra / missed |",
                  "|---|" + "---|" * (len(face_sets) + 2)]
        rows = [("previous default", cur), ("recommended", best)] + [
            ("", f"{s}@{t}") for t in dict.fromkeys((CURRENT["min_score"], rec["score"]))
            for s in all_settings if f"{s}@{t}" in table]
        for label, key in dict.fromkeys(rows):
            if label == "" and key in (cur, best):
                continue
            e = table[key]
            lines.append(f"| {label} {key} | " + " | ".join(
                f"{_pct(e['face_sets'][n]['found'])} / {_pct(e['face_sets'][n]['multi'])}"
                for n in face_sets)
                + f" | {e['no_face']['detections']} | {e['group_extra']} / "
                f"{e['group_missed']} |")
        lines.append("")

    for name in face_sets:
        lines += [f"## {name}: % of images with >= 1 face / with >= 2 detections", "",
                  "| side \\ min_score | " + " | ".join(map(str, scores)) + " |",
                  "|---|" + "---|" * len(scores)]
        for side in all_settings:
            lines.append(f"| {side} | " + " | ".join(
                f"{_pct(table[f'{side}@{s}']['face_sets'][name]['found'])} / "
                f"{_pct(table[f'{side}@{s}']['face_sets'][name]['multi'])}" for s in scores)
                + " |")
        lines.append("")

    lines += ["## Photos without faces: detections (images with any)", "",
              "| side \\ min_score | " + " | ".join(map(str, scores)) + " |",
              "|---|" + "---|" * len(scores)]
    for side in all_settings:
        lines.append(f"| {side} | " + " | ".join(
            f"{table[f'{side}@{s}']['no_face']['detections']} "
            f"({table[f'{side}@{s}']['no_face']['images']})" for s in scores) + " |")
    lines.append("")
    fps = report["false_positives"]
    if fps:
        lines += [(f"False positives at the lowest threshold ({scores[0]}), per side: "
                   "image, score, size px (largest score first):"), ""]
        for side, items in fps.items():
            shown = "; ".join(f"{n} {s:.2f} {z:.0f}" for n, s, z in items[:12])
            more = f" and {len(items) - 12} more" if len(items) > 12 else ""
            lines.append(f"- {side}: {shown or 'none'}{more}")
        lines.append("")

    groups = report["results"].get("groups", [])
    if groups:
        lines += ["## Group photo: matched faces (of 6, 96 in the mosaic) / extra boxes", "",
                  "| copy | side | " + " | ".join(map(str, scores)) + " |",
                  "|---|---|" + "---|" * len(scores)]
        for row in groups:
            for side in all_settings:
                cells = []
                for s in scores:
                    g = table[f"{side}@{s}"]["groups"][row["name"]]
                    cells.append(f"{g['matched']} / {g['extra']}")
                lines.append(f"| {row['name']} | {side} | " + " | ".join(cells) + " |")
        lines += ["", "Extra boxes at the lowest threshold: copy, side, score, size px:", ""]
        for row in groups:
            for side in sides:
                dets = row["detections"][side]
                extras = [d for d in dets if max((_iou(d[2:], t) for t in row["truth"]),
                                                 default=0) < 0.3]
                if extras:
                    lines.append(f"- {row['name']} at {side}: " + "; ".join(
                        f"{d[0]:.2f} {d[1]:.0f}" for d in extras))
        lines.append("")

    sweep = report["sweep"]
    if sweep["t1"] or sweep["utkface"]:
        lines += ["## Face size at detection (full resolution)", "",
                  "| image | face px | " + " | ".join(map(str, scores)) + " |",
                  "|---|---|" + "---|" * len(scores)]
        for name, row in sweep["t1"].items():
            lines.append(f"| {name} (matched / extra of 6) | {row['face_px']:.0f} | "
                         + " | ".join(f"{row[str(s)]['matched']} / {row[str(s)]['extra']}"
                                      for s in scores) + " |")
        for name, row in sweep["utkface"].items():
            px = "-" if row["face_px"] is None else f"{row['face_px']:.0f}"
            lines.append(f"| {name} (% found) | {px} | "
                         + " | ".join(_pct(row[str(s)]) for s in scores) + " |")
        lines.append("")

    timing = report["timing"]
    if timing:
        lines += ["## Time of detection per image (ms, one thread): wall / process CPU", "",
                  "| image | " + " | ".join(sides) + " |", "|---|" + "---|" * len(sides)]
        for name, per in timing.items():
            lines.append(f"| {name} | " + " | ".join(
                f"{per[s]['wall_ms']:.0f} / {per[s]['cpu_ms']:.0f}" for s in sides) + " |")
        lines.append("")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------


def _floats(text):
    return tuple(sorted(float(v) for v in text.split(",")))


def _sides(text):
    return tuple(0 if v.strip() in ("0", "full") else int(v) for v in text.split(","))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"),
                        help="folder holding UTKFace/ and FGNET/")
    parser.add_argument("--n-utkface", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=None,
                        help="at most N images per set (smoke runs)")
    parser.add_argument("--scores", type=_floats, default=SCORES,
                        help="comma-separated thresholds")
    parser.add_argument("--sides", type=_sides, default=SIDES,
                        help="comma-separated det_max_side values, 0 or 'full' for none")
    parser.add_argument("--repeats", type=int, default=3, help="timing loops per image")
    parser.add_argument("--no-sweep", action="store_true", help="skip the face-size sweep")
    parser.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--report-only", action="store_true",
                        help="recompute the summaries and detection.md from the detections "
                             "in --out-dir/detection.json, detecting nothing")
    args = parser.parse_args(argv)
    if args.report_only:
        return _rewrite(Path(args.out_dir))

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)
    start = time.perf_counter()
    low = min(args.scores)
    sides = tuple(dict.fromkeys(args.sides))
    results = {"face_sets": {}}

    utk = utkface_sample(args.data, args.n_utkface, args.limit)
    print(f"UTKFace: {len(utk)} images", flush=True)
    results["face_sets"]["UTKFace"] = scan([(p.name, lambda p=p: p) for p in utk], sides, low)
    fgnet = fgnet_paths(args.data, args.limit)
    if fgnet:
        print(f"FG-NET: {len(fgnet)} images", flush=True)
        results["face_sets"]["FG-NET"] = scan([(p.name, lambda p=p: p) for p in fgnet],
                                              sides, low)
        from skagegender.embedding import load_image

        results["face_sets"]["FG-NET x4"] = scan(
            [(p.name, lambda p=p: _scaled(load_image(p), 4.0)) for p in fgnet], sides, low)
    no_face = no_face_images(args.limit)
    print(f"no-face: {len(no_face)} images", flush=True)
    results["no_face"] = scan(no_face, sides, low)

    timing = {}
    path = t1_path()
    if path is not None:
        truth, base_shape = t1_truth(path, low)
        print("group photo", flush=True)
        groups = scan(group_variants(path), sides, low)
        for row in groups:
            tiles = MOSAIC_TILES if row["name"] == MOSAIC else 1
            row["truth"] = _truth_for(truth, base_shape, row["shape"], tiles)
        results["groups"] = groups
        if not args.no_sweep:
            from skagegender.embedding import load_image

            t1 = load_image(path)
            median_face = float(np.median(np.sqrt((truth[:, 2] - truth[:, 0])
                                                  * (truth[:, 3] - truth[:, 1]))))
            items = [(f"t1 long side {n}",
                      lambda n=n: _scaled(t1, n / max(base_shape))) for n in T1_SWEEP_SIDES]
            rows = scan(items, (0,), low)
            for row, n in zip(rows, T1_SWEEP_SIDES):
                row["truth"] = _truth_for(truth, base_shape, row["shape"])
                row["face_px"] = median_face * n / max(base_shape)
            results["t1_sweep"] = rows
        big = _t1_6000x4000(path)
        from skagegender.embedding import load_image

        timing_images = [("t1 1280x886", load_image(path)),
                         ("t1 x2", _scaled(load_image(path), 2.0)), ("t1 6000x4000", big)]
        print("timing", flush=True)
        timing = time_detection(timing_images, sides, args.repeats)
    if not args.no_sweep:
        from skagegender.embedding import load_image

        sample = utk[: min(200, len(utk))]
        results["utk_sweep"] = {}
        for n in UTK_SWEEP_SIDES:
            results["utk_sweep"][f"UTKFace {n}x{n}"] = scan(
                [(p.name, lambda p=p, n=n: _resize(load_image(p), n, n)) for p in sample],
                (0,), low)

    report = {
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "scores": list(args.scores), "sides": list(sides), "current": CURRENT,
        "timing": timing,
        "results": results,
    }
    _summaries(report)
    report["seconds"] = time.perf_counter() - start
    return _write(report, Path(args.out_dir))


def _summaries(report):
    results, scores, sides = report["results"], report["scores"], report["sides"]
    report["table"] = summarize(results, scores, sides)
    report["recommendation"] = recommend(report["table"], scores, sides, report["timing"])
    report["sweep"] = sweep_stats(results, scores)
    report["false_positives"] = {side_label(s): false_positive_sizes(results, side_label(s),
                                                                     min(scores))
                                 for s in sides}
    return report


def _write(report, out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "detection.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (out / "detection.md").write_text(text + "\n")
    print(text)
    return report


def _rewrite(out):
    report = json.loads((out / "detection.json").read_text())
    return _write(_summaries(report), out)


if __name__ == "__main__":
    main()
