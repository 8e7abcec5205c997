"""Accuracy of the shipped recipe with a fixed, held-out protocol.

- UTKFace (shared/data): 5-fold cross-validation, KFold(shuffle, seed 0). Each fold's
  model trains on the other 4 folds (+ degraded copies of *their* images + FG-NET) and
  predicts the held-out fold. UTKFace has no subject ids, so one person can appear on
  both sides: a mildly optimistic protocol, stated in the output.
- FG-NET (shared/data, 10 subjects): subject-disjoint 5-fold (GroupKFold, 2 subjects
  per fold): each subject is predicted by a model trained on all UTKFace (+ degraded
  copies) and the *other* 8 subjects.
  ``--no-fgnet`` gives the cross-dataset number instead (no FG-NET in training).
- The fine-tuned SFace layer (``scripts/finetune_sface.py``) is part of the recipe, so
  each UTKFace fold fine-tunes its own copy on that fold's training images (frozen
  maps cached in ``--maps``), and the fold's features (UTKFace and degraded copies)
  take that copy's outputs. FG-NET never trains the layer, so FG-NET uses the shipped
  one (trained on all UTKFace); its age is then cross-dataset under either protocol.
- Every image counts: a missed face is predicted the training median age and counted
  as a gender error.

Prints and writes ``benchmarks/results/accuracy[-TAG].{json,md}``: MAE, one-class-off
(5-year classes), CS@5 and gender accuracy, overall, per age group, gender and race,
plus seconds per image end to end on one core.

Needs torch (for the per-fold fine-tuning): ``pip install torch``.

    python benchmarks/accuracy.py --cache .emb-cache --maps .maps-cache  # the shipped recipe
    python benchmarks/accuracy.py --cache .emb-cache --no-degraded --tag no-degraded
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, KFold

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from finetune_sface import (  # noqa: E402
    N_AGES,
    frozen_maps,
    layer_outputs,
    targets,
    train_layer,
)
from train_pretrained import embed_all  # noqa: E402

from skagegender.metrics import (  # noqa: E402
    age_error_report,
    cumulative_score,
    one_class_off_score,
)
from skagegender.pretrained._recipe import (  # noqa: E402
    FINETUNED_AGE_START,
    degraded_sources,
    make_heads,
    training_set,
)

AGE_GROUPS = [("0-12", 0, 12), ("13-19", 13, 19), ("20-39", 20, 39), ("40-59", 40, 59),
              ("60+", 60, np.inf)]
FINETUNED = slice(FINETUNED_AGE_START, FINETUNED_AGE_START + N_AGES + 1)


def fold_features(utk, features, maps, train):
    """Copies of ``features`` whose fine-tuned columns come from a layer trained on ``train``.

    ``features`` and ``maps`` are parallel lists (UTKFace, then its degraded copies);
    each ``maps`` entry is (frozen maps, found mask). Only UTKFace rows in ``train``
    train the layer.
    """
    age, female = targets(utk)
    utk_maps, utk_found = maps[0]
    layer = train_layer(utk_maps, age, female, train[utk_found[train]])
    out = []
    for x, (m, found) in zip(features, maps):
        rows = np.flatnonzero(found & np.isfinite(x[:, 0]))
        x = x.copy()
        x[rows, FINETUNED] = layer_outputs(layer, m, rows)
        out.append(x)
    return out


def _fit_predict(X, age, gender, X_test, want_gender=True):
    age_head, gender_head = make_heads()
    age_head = clone(age_head).fit(X, age)
    found = ~np.isnan(X_test).any(axis=1)
    pred = np.full(len(X_test), float(np.nanmedian(age)))
    pred[found] = age_head.predict(X_test[found])
    gpred = np.full(len(X_test), None, dtype=object)
    if want_gender:
        known = np.array([g is not None for g in gender])
        gender_head = clone(gender_head).fit(X[known], gender[known].astype(str))
        gpred[found] = gender_head.predict(X_test[found])
    return pred, gpred


def summarise(age_true, age_pred, gender_true=None, gender_pred=None, race=None):
    out = {
        "n": int(len(age_true)),
        "mae": float(np.abs(age_true - age_pred).mean()),
        "one_class_off": float(one_class_off_score(age_true, age_pred)),
        "cs5": float(cumulative_score(age_true, age_pred, threshold=5)),
    }
    groups = {}
    if gender_true is not None:
        correct = np.asarray(gender_pred == gender_true)
        out["gender_accuracy"] = float(correct.mean())
        out["gender_accuracy_by_age_group"] = {
            label: float(correct[(age_true >= low) & (age_true <= high)].mean())
            for label, low, high in AGE_GROUPS
            if ((age_true >= low) & (age_true <= high)).any()
        }
        groups["gender"] = np.asarray(gender_true, dtype=str)
    if race is not None:
        groups["race"] = np.asarray(race, dtype=str)
    out["per_group"] = age_error_report(age_true, age_pred, groups=groups or None)
    return out


def seconds_per_image(paths):
    """End-to-end seconds per image for the shipped model, one core, one process."""
    import os

    from skagegender.pretrained import MODEL_FILE, load

    if not MODEL_FILE.is_file():
        return None
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    model = load()
    model.predict_faces(paths[0])  # warm up: sessions
    start = time.perf_counter()
    for p in paths:
        model.predict_faces(p)
    return (time.perf_counter() - start) / len(paths)


def markdown(result):
    lines = [f"# Accuracy ({result['tag']})", "", result["protocol"], "",
             "| set | n | MAE | one-class-off | CS@5 | gender |", "|---|---|---|---|---|---|"]
    for name in ("utkface_cv", "fgnet"):
        r = result[name]
        if r is None:
            continue
        g = r.get("gender_accuracy")
        lines.append(f"| {name} | {r['n']} | {r['mae']:.2f} | {r['one_class_off']:.1%} | "
                     f"{r['cs5']:.1%} | {'n/a' if g is None else f'{g:.1%}'} |")
    for name in ("utkface_cv", "fgnet"):
        if result[name] is None:
            continue
        lines += ["", f"## {name} per group", "", "| group | n | MAE | 1CoA | CS@5 |",
                  "|---|---|---|---|---|"]
        for row in result[name]["per_group"]:
            lines.append(f"| {row['group_type']} {row['group']} | {row['n']} | {row['mae']:.2f} "
                         f"| {row['one_class_off']:.1%} | {row['cs5']:.1%} |")
    by_age = (result["utkface_cv"] or {}).get("gender_accuracy_by_age_group")
    if by_age:
        lines += ["", "## utkface_cv gender accuracy per age group", "",
                  "| age group | gender accuracy |", "|---|---|"]
        lines += [f"| {label} | {acc:.1%} |" for label, acc in by_age.items()]
    if result.get("seconds_per_image") is not None:
        lines += ["", f"End to end, one core: {result['seconds_per_image'] * 1000:.0f} ms "
                      "per image (shipped model, `predict_faces`)."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--cache", default=".emb-cache")
    parser.add_argument("--maps", default=".maps-cache",
                        help="folder for the frozen SFace maps of the per-fold fine-tuning")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--no-degraded", action="store_true")
    parser.add_argument("--no-fgnet", action="store_true")
    parser.add_argument("--fgnet-only", action="store_true",
                        help="skip the UTKFace folds (for quick FG-NET lever runs)")
    parser.add_argument("--tag", default="shipped-recipe")
    parser.add_argument("--timing-images", type=int, default=50)
    args = parser.parse_args()

    utk, utk_x, fg, fg_x, degraded = embed_all(args.data, args.cache, args.n_jobs)
    degraded = None if args.no_degraded else degraded
    use_fg = not args.no_fgnet
    age, gender = np.asarray(utk.age, float), np.asarray(utk.gender, dtype=object)
    if not args.fgnet_only:
        import torch

        torch.set_num_threads(args.n_jobs)
        maps = [frozen_maps("utkface", list(utk.paths), args.maps, n_jobs=args.n_jobs)]
        if degraded is not None:
            items = [(str(utk.paths[i]), int(seed)) for i, seed in zip(*degraded_sources(
                len(utk.paths)))]
            maps.append(frozen_maps("utkface_degraded", items, args.maps, n_jobs=args.n_jobs))

    start = time.perf_counter()
    pred = np.zeros(len(age))
    gpred = np.full(len(age), None, dtype=object)
    folds = [] if args.fgnet_only else KFold(5, shuffle=True, random_state=0).split(utk_x)
    for k, (train, test) in enumerate(folds):
        if degraded is None:
            (fold_x,) = fold_features(utk, [utk_x], maps, train)
            fold_degraded = None
        else:
            fold_x, fold_deg_x = fold_features(utk, [utk_x, degraded[1]], maps, train)
            fold_degraded = (degraded[0], fold_deg_x)
        X, y, g = training_set(utk, fold_x, fold_degraded, fg if use_fg else None, fg_x,
                               utk_rows=train)
        pred[test], gpred[test] = _fit_predict(X, y, g, fold_x[test])
        print(f"fold {k}: MAE {np.abs(pred[test] - age[test]).mean():.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    utk_result = None if args.fgnet_only else summarise(age, pred, gender, gpred, utk.race)

    fg_age = np.asarray(fg.age, float)
    fg_pred = np.zeros(len(fg_age))
    subjects = np.asarray(fg.subject)
    if use_fg:
        for train, test in GroupKFold(n_splits=5).split(fg_x, groups=subjects):
            X, y, g = training_set(utk, utk_x, degraded, fg, fg_x, fgnet_rows=train)
            fg_pred[test], _ = _fit_predict(X, y, g, fg_x[test], want_gender=False)
    else:
        X, y, g = training_set(utk, utk_x, degraded)
        fg_pred, _ = _fit_predict(X, y, g, fg_x, want_gender=False)
    fg_result = summarise(fg_age, fg_pred)
    print(f"heads: {time.perf_counter() - start:.0f} s", flush=True)

    result = {
        "tag": args.tag,
        "protocol": ("UTKFace: 5-fold CV (KFold shuffle, seed 0) over the 18,978 images in "
                     "shared/data (no subject ids: one person may be on both sides); the "
                     "fine-tuned SFace layer is re-trained per fold. FG-NET: "
                     + ("subject-disjoint 5-fold (GroupKFold) over the 10 subjects in shared/data."
                        if use_fg else "cross-dataset (no FG-NET in training).")
                     + f" Degraded copies: {'no' if degraded is None else len(degraded[0])}."
                     " Missed faces count (median age, gender wrong)."),
        "utkface_cv": utk_result,
        "fgnet": fg_result,
        "seconds_per_image": None if args.fgnet_only else seconds_per_image(
            list(utk.paths[:args.timing_images])),
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.tag == "shipped-recipe" else f"-{args.tag}"
    (out / f"accuracy{suffix}.json").write_text(json.dumps(result, indent=2, default=float))
    text = markdown(result)
    (out / f"accuracy{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
