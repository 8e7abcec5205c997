"""Gender levers, measured: what grayscale copies, the dlib gender network, an
age-aware head for children and mirror averaging buy (accuracy issue, lever 4).

Protocol
--------
- UTKFace (shared/data), 5-fold CV, the folds of the out-of-fold file (``--oof``,
  KFold(5, shuffle, seed 0)). Each fold's gender head is the shipped one
  (``make_heads()[1]``, the MLP on all features), trained on the other 4 folds and the
  degraded copies of *their* images, and scored on the held-out fold and on the
  degraded copies of the held-out fold's images. The recipe's calibration hold-out and
  its age-aware calibrator are left out (plain argmax of the MLP).
- The fine-tuned SFace layer's columns (``sface_finetuned``) of the cached features
  come from the shipped layer, trained on nearly all UTKFace. They are replaced by
  out-of-fold outputs (``--oof``: ``oof`` for UTKFace, ``doof`` for the degraded copies,
  ``fold`` per image). Without that file (e.g. with ``--limit``) the shipped layer's
  columns stay, and the output says they are in-sample.
- A seeded subset of ``--n-variants`` UTKFace images (spread over the folds) is also
  embedded as a grayscale copy (gray, back to 3 channels), ``--n-mirror`` of them as a
  mirror image; their
  fine-tuned columns come from the fold layer of the image's own fold (re-trained here
  with :func:`~skagegender.training.train_finetuned_layer` exactly as the OOF file was
  made; the match with the file is checked and reported). Their features and layer
  outputs are cached in ``--work-dir``.
- Flip rate: share of the subset's images (face found in both) whose predicted gender
  differs between the color photo and its grayscale copy.
- Missed faces count as gender errors (as in ``benchmarks/accuracy.py``).

Levers
------
- ``mlp``: the shipped head (baseline).
- ``dlib``: the dlib gender network alone (``dlib_gender`` block).
- ``finetuned``: the fine-tuned layer's P(female) alone (out-of-fold).
- ``stack``: logistic regression on the logits of those three probabilities and the
  predicted age (fine-tuned layer's expected age), cross-fitted with the same folds.
- ``stack-age``: the same with a slope and intercept per predicted-age group
  (<13, 13-59, 60+).
- ``gray-aug``: the MLP trained with grayscale copies of the training folds' subset
  images added; ``gray-aug+stack-age`` stacks it.
- ``child-head``: a second MLP trained on children (true age <= 14) replaces the
  MLP where the predicted age is below 13; ``child-avg`` averages the two there.
- ``gray-tta``: P(female) averaged over the photo and its grayscale copy (a gray photo
  is its own gray copy); ``mirror-tta``: averaged over the photo and its mirror image.

Writes ``<out-dir>/gender_levers.{md,json}``. One thread throughout (``--threads``).

    python benchmarks/gender_levers.py --cache .emb-cache --maps .maps-cache \\
        --work-dir /tmp/gender-levers
"""

import argparse
import json
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: Age groups reported (true age).
AGE_GROUPS = [("0-12", 0, 12), ("13+", 13, np.inf), ("13-19", 13, 19), ("20-39", 20, 39),
              ("40-59", 40, 59), ("60+", 60, np.inf)]
#: Predicted-age groups of the age-aware stacker.
STACK_EDGES = (13.0, 60.0)
#: Children's head: trained on true ages up to this, used below CHILD_ROUTE predicted.
CHILD_TRAIN_MAX_AGE = 14
CHILD_ROUTE = 13.0


def _logit(p):
    p = np.clip(np.asarray(p, float), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def gray_copy(bgr):
    """A grayscale copy of a BGR image, back to 3 (equal) channels."""
    import cv2

    return np.ascontiguousarray(np.repeat(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[..., None],
                                          3, axis=2))


def mirror_copy(bgr):
    """The image mirrored left-right."""
    return np.ascontiguousarray(bgr[:, ::-1])


VARIANTS = {"gray": gray_copy, "mirror": mirror_copy}


def accuracy_by_group(correct, age):
    """Accuracy overall and per true-age group (``correct``: bool, missed faces False)."""
    correct, age = np.asarray(correct, bool), np.asarray(age, float)
    out = {"all": float(correct.mean()) if len(correct) else float("nan")}
    for name, lo, hi in AGE_GROUPS:
        rows = (age >= lo) & (age <= hi)
        out[name] = float(correct[rows].mean()) if rows.any() else float("nan")
    return out


def correct_of(p_female, female):
    """Whether the predicted gender (P(female) > 0.5) is right; NaN P counts as wrong."""
    p = np.asarray(p_female, float)
    return np.isfinite(p) & ((p > 0.5) == (np.asarray(female) == 1))


def flip_rate(p_color, p_other):
    """Share of rows (both found) whose predicted gender differs, and that count."""
    both = np.isfinite(p_color) & np.isfinite(p_other)
    flips = (p_color[both] > 0.5) != (p_other[both] > 0.5)
    return (float(flips.mean()) if both.any() else float("nan")), int(both.sum())


class Data:
    """Features, labels and folds of UTKFace, its degraded copies and the subset copies."""


def load_data(args):
    from sklearn.model_selection import KFold

    from skagegender.embedding import FINETUNED_AGE_CLASSES, feature_blocks
    from skagegender.training._default_recipe import (
        EMBEDDER_PARAMS,
        embed_training_sets,
        make_embedder,
    )

    d = Data()
    embedder = make_embedder(cache=args.cache, n_jobs=1)
    utk, utk_x, _fg, _fg_x, degraded = embed_training_sets(embedder, args.data,
                                                           cache=args.cache, limit=args.limit)
    d.utk, d.paths = utk, [str(p) for p in utk.paths]
    gender = np.asarray(utk.gender, dtype=object)
    d.female = np.where(gender == "female", 1.0, np.where(gender == "male", 0.0, np.nan))
    d.age = np.asarray(utk.age, float)
    d.blocks = feature_blocks(EMBEDDER_PARAMS["layers"])
    d.ft_cols = d.blocks["sface_finetuned"]
    d.x = np.array(utk_x, dtype=np.float32)
    d.dsrc, d.dx = np.asarray(degraded[0]), np.array(degraded[1], dtype=np.float32)
    d.oof = False
    oof_file = Path(args.oof) if args.oof else None
    if oof_file is not None and oof_file.is_file():
        with np.load(oof_file, allow_pickle=False) as f:
            oof, doof, fold = f["oof"], f["doof"], f["fold"]
        if len(oof) == len(d.x) and len(doof) == len(d.dx):
            d.x[:, d.ft_cols] = oof
            d.dx[:, d.ft_cols] = doof
            # a row whose layer output is missing is a missed face for every lever
            d.x[np.isnan(oof).any(axis=1)] = np.nan
            d.dx[np.isnan(doof).any(axis=1)] = np.nan
            d.fold, d.oof = np.asarray(fold, int), True
        else:
            print(f"{oof_file}: {len(oof)} rows, not {len(d.x)}: shipped-layer columns kept",
                  flush=True)
    if not d.oof:
        d.fold = np.zeros(len(d.x), int)
        for k, (_, test) in enumerate(KFold(5, shuffle=True, random_state=0).split(d.x)):
            d.fold[test] = k
    d.age_classes = FINETUNED_AGE_CLASSES
    return d


def predicted_age(d, x):
    """Expected age under the fine-tuned layer's age probabilities (NaN rows stay NaN)."""
    probs = x[:, d.blocks["sface_finetuned_age"]]
    return probs @ d.age_classes / probs.sum(axis=1)


def subset_rows(n_images, n, seed=0):
    """Seeded subset of ``n`` of ``n_images`` UTKFace rows, in index order."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_images, size=min(n, n_images), replace=False))


def variant_images(paths, kind):
    """RGB arrays of the ``kind`` copies of ``paths``."""
    from skagegender.embedding import load_image

    return [np.ascontiguousarray(VARIANTS[kind](load_image(p))[..., ::-1]) for p in paths]


def embed_variant(paths, rows, kind, work_dir):
    """Features and frozen maps of the ``kind`` copies of ``paths[rows]``, cached."""
    from skagegender.embedding import ArcFaceEmbedder, MissingFacesWarning, sface_maps

    work_dir.mkdir(parents=True, exist_ok=True)
    file = work_dir / f"{kind}_{len(paths)}_{len(rows)}.npz"
    if file.is_file():
        try:
            with np.load(file, allow_pickle=False) as f:
                if np.array_equal(f["rows"], rows):
                    return f["x"], f["maps"], f["found"]
        except (OSError, ValueError, KeyError, EOFError):
            pass
    start = time.perf_counter()
    from skagegender.training._default_recipe import make_embedder

    embedder = make_embedder(cache=str(work_dir / "emb"), n_jobs=1)
    aligner = ArcFaceEmbedder()
    xs, maps, founds = [], [], []
    for s in range(0, len(rows), 256):
        images = variant_images([paths[i] for i in rows[s:s + 256]], kind)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingFacesWarning)
            xs.append(np.asarray(embedder.transform(images), np.float32))
        aligned = aligner.align(images)
        m = np.zeros((len(images), 1024, 7, 7), np.float16)
        if aligned.found.any():
            m[aligned.found] = sface_maps(aligned.crops[aligned.found]).astype(np.float16)
        maps.append(m)
        founds.append(aligned.found)
        print(f"{kind}: {s + len(images)}/{len(rows)} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    x, maps, found = np.concatenate(xs), np.concatenate(maps), np.concatenate(founds)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, rows=rows, x=x, maps=maps, found=found)
    tmp.replace(file)
    return x, maps, found


def fold_layer_columns(d, args, variants):
    """Out-of-fold fine-tuned layer outputs of each variant's maps.

    Re-trains the layer of each fold on the frozen maps of the fold's training images
    (as the OOF file was made) and returns ``{kind: (n_rows, 102) outputs}`` plus the
    largest difference between these layers' outputs and the OOF file on 200 held-out
    images per fold (0 means the layers are the ones behind the file).

    Parameters
    ----------
    variants : dict of kind -> (rows, maps, found)
    """
    import torch

    from skagegender.training import frozen_maps, train_finetuned_layer

    torch.set_num_threads(args.threads)
    out = {kind: np.full((len(rows), 102), np.nan, np.float32)
           for kind, (rows, _, _) in variants.items()}
    sizes = "_".join(f"{kind}{len(v[0])}" for kind, v in variants.items())
    cache = Path(args.work_dir) / f"fold_layers_{len(d.x)}_{sizes}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as f:
                if all(np.array_equal(f[f"{k}_rows"], v[0]) for k, v in variants.items()):
                    return {k: f[k] for k in out}, float(f["check"])
        except (OSError, ValueError, KeyError, EOFError):
            pass
    maps, found = frozen_maps("utkface", d.paths, args.maps, n_jobs=1)
    check = 0.0
    start = time.perf_counter()
    for k in range(5):
        train = np.flatnonzero(d.fold != k)
        layer = train_finetuned_layer(maps, d.age, d.female, train[found[train]])
        test = np.flatnonzero((d.fold == k) & found)[:200]
        ft = d.x[test][:, d.ft_cols]
        ok = np.isfinite(ft).all(axis=1)
        check = max(check, float(np.abs(layer.outputs(maps, test[ok]) - ft[ok]).max()))
        for kind, (rows, vmaps, vfound) in variants.items():
            sel = np.flatnonzero((d.fold[rows] == k) & vfound)
            out[kind][sel] = layer.outputs(vmaps, sel)
        print(f"fold layer {k}: {time.perf_counter() - start:.0f} s, "
              f"max |diff| vs OOF file {check:.2g}", flush=True)
    del maps
    np.savez(cache, check=check, **out, **{f"{k}_rows": v[0] for k, v in variants.items()})
    return out, check


def fit_mlp(x, female, random_state=0):
    from sklearn.base import clone

    from skagegender.training._default_recipe import make_heads

    keep = np.isfinite(female) & np.isfinite(x).all(axis=1)
    labels = np.where(female[keep] == 1, "female", "male")
    return clone(make_heads(random_state)[1]).fit(x[keep], labels)


def p_female(model, x):
    p = np.full(len(x), np.nan)
    found = np.isfinite(x).all(axis=1)
    if found.any():
        col = list(model.classes_).index("female")
        p[found] = model.predict_proba(x[found])[:, col]
    return p


def stack_features(p_mlp, p_dlib, p_ft, age, by_age):
    """Stacker inputs: the three logits and the predicted age (per age group if ``by_age``)."""
    z = np.column_stack([_logit(p_mlp), _logit(p_dlib), _logit(p_ft), np.asarray(age) / 50.0])
    if not by_age:
        return z
    group = np.digitize(age, STACK_EDGES)
    onehot = np.eye(len(STACK_EDGES) + 1)[group]
    return np.column_stack([(z[:, :3, None] * onehot[:, None, :]).reshape(len(z), 3 * onehot.shape[1]),
                            onehot, z[:, 3:]])


class Stacker:
    """Logistic regression on :func:`stack_features` (rows with a NaN input predict NaN)."""

    def __init__(self, by_age):
        self.by_age = by_age

    def fit(self, probs, age, female):
        from sklearn.linear_model import LogisticRegression

        z = stack_features(*probs, age, self.by_age)
        ok = np.isfinite(z).all(axis=1) & np.isfinite(female)
        self.model_ = LogisticRegression(C=1.0, max_iter=1000).fit(z[ok], female[ok])
        return self

    def predict(self, probs, age):
        z = stack_features(*probs, age, self.by_age)
        p = np.full(len(z), np.nan)
        ok = np.isfinite(z).all(axis=1)
        if ok.any():
            p[ok] = self.model_.predict_proba(z[ok])[:, 1]
        return p


def expert_probs(d, x):
    """(dlib P(female), fine-tuned P(female), predicted age) of feature rows."""
    return (x[:, d.blocks["dlib_gender"].start], x[:, d.blocks["sface_finetuned_female"].start],
            predicted_age(d, x))


def run(args):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.threads):
        return _run(args)


def _run(args):
    start = time.perf_counter()
    d = load_data(args)
    n, n_deg = len(d.x), len(d.dx)
    vrows = {"gray": subset_rows(n, args.n_variants)}
    step = max(1, len(vrows["gray"]) // max(1, args.n_mirror))
    vrows["mirror"] = vrows["gray"][::step][:args.n_mirror]
    work_dir = Path(args.work_dir)
    variants = {kind: embed_variant(d.paths, vrows[kind], kind, work_dir) for kind in VARIANTS}
    vx = {kind: v[0] for kind, v in variants.items()}
    check = None
    if d.oof:
        columns, check = fold_layer_columns(
            d, args, {k: (vrows[k], v[1], v[2]) for k, v in variants.items()})
        for kind, cols in columns.items():
            vx[kind] = vx[kind].copy()
            vx[kind][:, d.ft_cols] = cols
            vx[kind][np.isnan(cols).any(axis=1)] = np.nan
    del variants
    print(f"features ready: {time.perf_counter() - start:.0f} s", flush=True)

    # P(female) of every lever on: utk (n), deg (n_deg), and each variant's rows
    sets = {"utk": d.x, "deg": d.dx, **vx}
    names = ["mlp", "gray-aug", "child"]
    p = {name: {s: np.full(len(x), np.nan) for s, x in sets.items()} for name in names}
    row_fold = {"utk": d.fold, "deg": d.fold[d.dsrc], **{k: d.fold[vrows[k]] for k in vx}}
    grows = vrows["gray"]
    for k in range(5):
        train = np.flatnonzero(d.fold != k)
        dtrain = np.flatnonzero(d.fold[d.dsrc] != k)
        x_tr = np.concatenate([d.x[train], d.dx[dtrain]])
        y_tr = np.concatenate([d.female[train], d.female[d.dsrc[dtrain]]])
        age_tr = np.concatenate([d.age[train], d.age[d.dsrc[dtrain]]])
        gtrain = np.flatnonzero(d.fold[grows] != k)
        models = {"mlp": fit_mlp(x_tr, y_tr),
                  "gray-aug": fit_mlp(np.concatenate([x_tr, vx["gray"][gtrain]]),
                                      np.concatenate([y_tr, d.female[grows[gtrain]]]))}
        kids = age_tr <= CHILD_TRAIN_MAX_AGE
        if (y_tr[kids] == 1).any() and (y_tr[kids] == 0).any():
            models["child"] = fit_mlp(x_tr[kids], y_tr[kids])
        for name, model in models.items():
            for s, x in sets.items():
                test = row_fold[s] == k
                p[name][s][test] = p_female(model, x[test])
        print(f"fold {k}: {time.perf_counter() - start:.0f} s", flush=True)

    # levers from the per-set probabilities
    experts = {s: expert_probs(d, x) for s, x in sets.items()}
    lever = {"mlp": p["mlp"], "gray-aug": p["gray-aug"]}
    lever["dlib"] = {s: e[0] for s, e in experts.items()}
    lever["finetuned"] = {s: e[1] for s, e in experts.items()}
    for name, child_weight in (("child-head", 1.0), ("child-avg", 0.5)):
        lever[name] = {}
        for s in sets:
            age_pred = experts[s][2]
            route = (age_pred < CHILD_ROUTE) & np.isfinite(p["child"][s])
            mixed = p["mlp"][s].copy()
            mixed[route] = (child_weight * p["child"][s][route]
                            + (1 - child_weight) * p["mlp"][s][route])
            lever[name][s] = mixed
    for base in ("mlp", "gray-aug"):
        for by_age in (False, True):
            name = ("stack" if base == "mlp" else "gray-aug+stack") + ("-age" if by_age else "")
            lever[name] = {s: np.full(len(x), np.nan) for s, x in sets.items()}
            for k in range(5):
                tr = d.fold != k
                stacker = Stacker(by_age).fit(
                    [lever[base]["utk"][tr], experts["utk"][0][tr], experts["utk"][1][tr]],
                    experts["utk"][2][tr], d.female[tr])
                for s in sets:
                    test = row_fold[s] == k
                    e = experts[s]
                    lever[name][s][test] = stacker.predict(
                        [lever[base][s][test], e[0][test], e[1][test]], e[2][test])

    results = {}
    age_g, fem_g = d.age[grows], d.female[grows]
    kids = age_g <= 12
    mrows = vrows["mirror"]
    for name, probs in lever.items():
        pc = probs["utk"][grows]
        r = {"utkface": accuracy_by_group(correct_of(probs["utk"], d.female), d.age),
             "degraded": accuracy_by_group(correct_of(probs["deg"], d.female[d.dsrc]),
                                           d.age[d.dsrc]),
             "subset_color": accuracy_by_group(correct_of(pc, fem_g), age_g),
             "subset_gray": accuracy_by_group(correct_of(probs["gray"], fem_g), age_g)}
        r["gray_flip_rate"], r["gray_flip_n"] = flip_rate(pc, probs["gray"])
        r["gray_flip_rate_0_12"] = flip_rate(pc[kids], probs["gray"][kids])[0]
        r["mirror_flip_rate"] = flip_rate(probs["utk"][mrows], probs["mirror"])[0]
        results[name] = r
    # test-time averaging over the photo and a copy, on that copy's subset
    pc, pv = lever["mlp"]["utk"][grows], lever["mlp"]["gray"]
    avg = np.where(np.isfinite(pc) & np.isfinite(pv), (pc + pv) / 2, pc)
    # a gray photo's gray copy is itself: its average is the gray prediction
    results["gray-tta"] = {
        "subset_color": accuracy_by_group(correct_of(avg, fem_g), age_g),
        "subset_gray": accuracy_by_group(correct_of(pv, fem_g), age_g),
        "gray_flip_rate": flip_rate(avg, pv)[0], "gray_flip_n": flip_rate(avg, pv)[1],
        "gray_flip_rate_0_12": flip_rate(avg[kids], pv[kids])[0]}
    pc, pv = lever["mlp"]["utk"][mrows], lever["mlp"]["mirror"]
    avg = np.where(np.isfinite(pc) & np.isfinite(pv), (pc + pv) / 2, pc)
    results["mirror-tta"] = {
        "mirror_subset_color": accuracy_by_group(correct_of(avg, d.female[mrows]), d.age[mrows]),
        "mirror_subset_color_mlp": accuracy_by_group(correct_of(pc, d.female[mrows]),
                                                     d.age[mrows]),
        "mirror_subset_mirror_mlp": accuracy_by_group(correct_of(pv, d.female[mrows]),
                                                      d.age[mrows])}
    age_rows = age_g
    return {
        "command": "python benchmarks/gender_levers.py " + " ".join(
            shlex.quote(a) for a in args.argv),
        "n_utkface": n, "n_degraded": n_deg, "n_subset": len(grows),
        "n_mirror": len(mrows), "n_mirror_0_12": int((d.age[mrows] <= 12).sum()),
        "n_subset_0_12": int((age_rows <= 12).sum()),
        "oof_finetuned_columns": d.oof, "fold_layer_check_max_abs_diff": check,
        "seconds": time.perf_counter() - start,
        "levers": results,
    }


def _pct(v):
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def markdown(result):
    lev = result["levers"]
    oof = ("out-of-fold (each image's columns from a layer trained without its fold; the "
           "re-trained fold layers match the OOF file to max |diff| "
           f"{result['fold_layer_check_max_abs_diff']:.2g})"
           if result["oof_finetuned_columns"] else
           "the SHIPPED layer's (in-sample for UTKFace: optimistic for `finetuned` and the "
           "stackers)")
    lines = [
        "# Gender levers (accuracy issue, lever 4)", "",
        f"Command: `{result['command']}`", "",
        (f"UTKFace 5-fold CV over {result['n_utkface']:,} images; degraded copies: "
        f"{result['n_degraded']:,} (of each fold's held-out images); grayscale copies of a "
        f"seeded subset of {result['n_subset']:,} images, mirror images of "
        f"{result['n_mirror']:,} of them. Fine-tuned layer columns: {oof}. Head: the shipped gender MLP "
        "(`make_heads()[1]`) trained on 4 folds + their degraded copies, argmax (no "
        "calibration hold-out, no age-aware calibrator). Missed faces count as errors. "
        f"Run time {result['seconds'] / 60:.0f} min."), "",
        "## UTKFace CV, gender accuracy %", "",
        ("| lever | all | 0-12 | 13+ | 13-19 | 20-39 | 40-59 | 60+ | degraded copies "
        "| degraded 0-12 |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in lev.items():
        if "utkface" not in r:
            continue
        u, g = r["utkface"], r["degraded"]
        lines.append(f"| {name} | " + " | ".join(_pct(u[k]) for k in (
            "all", "0-12", "13+", "13-19", "20-39", "40-59", "60+"))
            + f" | {_pct(g['all'])} | {_pct(g['0-12'])} |")
    lines += ["", (f"## Grayscale copies ({result['n_subset']:,}-image subset, "
              f"{result['n_subset_0_12']} aged 0-12)"), "",
              ("Flip rate: share of faces (found in both) whose predicted gender differs "
               "between the photo and its copy. Mirror flips: on the mirror subset."), "",
              ("| lever | color all | color 0-12 | color 13+ | gray all | gray 0-12 | gray 13+ "
               "| gray flip % | gray flip % 0-12 | mirror flip % |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in lev.items():
        if "subset_color" not in r:
            continue
        c, g = r["subset_color"], r["subset_gray"]
        lines.append(f"| {name} | " + " | ".join(
            [_pct(c[k]) for k in ("all", "0-12", "13+")]
            + [_pct(g[k]) for k in ("all", "0-12", "13+")]
            + [_pct(r.get(k)) for k in ("gray_flip_rate", "gray_flip_rate_0_12",
                                        "mirror_flip_rate")]) + " |")
    m = lev["mirror-tta"]
    lines += ["", (f"## Mirror averaging ({result['n_mirror']:,}-image subset, "
              f"{result['n_mirror_0_12']} aged 0-12)"), "",
              "| prediction | all | 0-12 | 13+ | 60+ |", "|---|---|---|---|---|"]
    for key, title in (("mirror_subset_color_mlp", "mlp on the photo"),
                       ("mirror_subset_mirror_mlp", "mlp on the mirror image"),
                       ("mirror_subset_color", "mirror-tta: mean P(female) of both")):
        lines.append(f"| {title} | " + " | ".join(_pct(m[key][k]) for k in (
            "all", "0-12", "13+", "60+")) + " |")
    lines += ["", ("Levers: see the module docstring of `benchmarks/gender_levers.py`. "
              "`gray-tta`/`mirror-tta` need a second embedding per face (2x the cost); "
              "their row is on the subset only."), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--cache", default=".emb-cache", help="embedding cache folder")
    parser.add_argument("--oof", default=None,
                        help="out-of-fold fine-tuned layer outputs (default: "
                        "<cache>/oof_finetuned.npz; 'none' keeps the shipped layer's)")
    parser.add_argument("--maps", default=".maps-cache",
                        help="frozen SFace maps folder (to re-train the fold layers)")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "gender-levers"),
                        help="cache of the gray/mirror copies' features and fold layer outputs")
    parser.add_argument("--n-variants", type=int, default=3000,
                        help="images given a grayscale and a mirror copy")
    parser.add_argument("--n-mirror", type=int, default=1000,
                        help="of those, images also given a mirror copy")
    parser.add_argument("--limit", type=int, default=None,
                        help="a seeded subset of this many UTKFace images (smoke runs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.oof is None:
        args.oof = str(Path(args.cache) / "oof_finetuned.npz")
    elif args.oof == "none":
        args.oof = None
    result = run(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gender_levers.json").write_text(json.dumps(result, indent=2, default=float))
    text = markdown(result)
    (out / "gender_levers.md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
