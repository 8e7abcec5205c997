"""Accuracy of the shipped recipe with a fixed, held-out protocol.

- UTKFace (shared/data): 5-fold cross-validation, KFold(shuffle, seed 0). Each fold's
  model trains on the other 4 folds (+ degraded copies of *their* images + FG-NET) and
  predicts the held-out fold. UTKFace has no subject ids, so one person can appear on
  both sides: a mildly optimistic protocol, stated in the output.
- FG-NET (shared/data, 10 subjects): subject-disjoint 5-fold (GroupKFold, 2 subjects
  per fold): each subject is predicted by a model trained on all UTKFace (+ degraded
  copies) and the *other* 8 subjects.
  ``--no-fgnet`` gives the cross-dataset number instead (no FG-NET in training).
- The fine-tuned SFace layer (``skagegender.training.train_finetuned_layer``) is part of the recipe, so
  each UTKFace fold fine-tunes its own copy on that fold's training images (frozen
  maps cached in ``--maps``), and the fold's features (UTKFace and degraded copies)
  take that copy's outputs. FG-NET never trains the layer, so FG-NET uses the shipped
  one (trained on all UTKFace); its age is then cross-dataset under either protocol.
- Every image counts: a missed face is predicted the training median age and counted
  as a gender error.
- Uncertainty (issue 17): inside each fold, a seeded 11 % of the training images are
  held out for calibration (their fine-tuned columns come from a second layer trained
  without them; the heads never see them) and the recipe's calibrators
  (``calibrate_heads``) are fitted on them, their degraded copies and the training
  FG-NET subjects. Reported per domain (UTKFace fold, degraded copies of the fold's
  images, FG-NET subjects): coverage and mean width of the 80 % age interval overall
  and per age group, gender ECE overall and per age group.
- Levers (combinable; each run writes ``accuracy-<tag>`` with a tag built from them,
  e.g. ``layer-augment-balance`` or ``gate-s1-w5``, never the shipped recipe's files):
  ``--layer-augment`` (every fine-tuned layer also trains on the degraded copies of its
  training images), ``--layer-balance`` (its rows weighted by 1 / sqrt(frequency of their
  age), 1-year bins, mean 1), ``--layer-fgnet W`` (FG-NET images of the training subjects
  join with weight W: all subjects in the UTKFace folds, the fold's training subjects in
  the FG-NET folds, where the layer is re-trained per fold). With a layer lever the FG-NET
  folds use a layer trained with it on all UTKFace images instead of the shipped one.
  ``--gate-sigma S`` and ``--gate-fgnet-weight W``: the age gate's label width and FG-NET
  weight (``calibrate_heads``).

Prints and writes ``benchmarks/results/accuracy[-TAG].{json,md}``: MAE, one-class-off
(5-year classes), CS@5 and gender accuracy, overall, per age group, gender and race,
interval coverage and gender calibration per domain (every score from
``skagegender.metrics.evaluation_report``, as ``skagegender evaluate`` prints them), plus
seconds per image end to end on one core.

Needs torch (for the per-fold fine-tuning): ``pip install torch``.

    python benchmarks/accuracy.py --cache .emb-cache --maps .maps-cache  # the shipped recipe
    python benchmarks/accuracy.py --calibration-study   # uncertainty on the calibration rows only
    python benchmarks/accuracy.py --cache .emb-cache --no-degraded --tag no-degraded
    python benchmarks/accuracy.py --layer-augment          # -> accuracy-layer-augment.md
    python benchmarks/accuracy.py --layer-balance          # -> accuracy-layer-balance.md
    python benchmarks/accuracy.py --layer-fgnet 10         # -> accuracy-layer-fgnet10.md
    python benchmarks/accuracy.py --gate-sigma 1 --gate-fgnet-weight 5  # -> accuracy-gate-s1-w5.md
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, KFold

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from train_pretrained import embed_all

from skagegender.embedding import feature_blocks
from skagegender.metrics import evaluation_report
from skagegender.training import frozen_maps, train_finetuned_layer
from skagegender.training._default_recipe import (
    EMBEDDER_PARAMS,
    N_CALIBRATION,
    calibrate_heads,
    degraded_sources,
    make_heads,
    n_degraded,
    training_set,
)
from skagegender.training._finetune import MAP_SHAPE

#: UTKFace images in the shared data: the recipe's counts (N_CALIBRATION) are of these.
UTKFACE_IMAGES = 18978
#: Share of the training images the recipe holds out for calibration.
CALIBRATION_SHARE = N_CALIBRATION / UTKFACE_IMAGES

# the results' rows (as the per-metric reports of skagegender.metrics name their keys)
# from the keys of evaluation_report
AGE_KEYS = {"n": "n", "n_missing": "n_missing", "mae": "mae",
            "one_class_off": "one_class_off", "cs5": "cs5"}
INTERVAL_KEYS = {"n": "n_age", "n_missing": "n_interval_missing",
                 "coverage": "interval_coverage", "mean_width": "interval_width"}
GENDER_KEYS = {"n": "n_gender", "n_missing": "n_proba_missing",
               "accuracy": "gender_proba_accuracy", "mean_confidence": "gender_confidence",
               "ece": "gender_ece"}


def targets(data):
    """(age, female) training targets of a dataset Bunch (female: 1.0 / 0.0, NaN unknown)."""
    gender = np.asarray(data.gender, dtype=object)
    female = np.where(gender == "female", 1.0, np.where(gender == "male", 0.0, np.nan))
    return np.asarray(data.age, float), female


@dataclasses.dataclass
class LayerLevers:
    """How the benchmark's fine-tuned layers train (``--layer-*``); all off: the recipe's way.

    ``degraded``: (source, maps, found) of the degraded copies; ``fgnet``: (maps, found,
    age, female) of FG-NET.
    """

    augment: bool = False
    balance: bool = False
    fgnet_weight: float | None = None
    degraded: tuple | None = None
    fgnet: tuple | None = None

    @property
    def on(self):
        return self.augment or self.balance or self.fgnet_weight is not None


class StackedMaps:
    """Frozen-maps arrays read as one: ``len`` and indexing by an index array."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])

    def __len__(self):
        return int(self.offsets[-1])

    def __getitem__(self, index):
        index = np.asarray(index)
        part = np.searchsorted(self.offsets, index, side="right") - 1
        out = np.empty((len(index), *MAP_SHAPE), self.parts[0].dtype)
        for k, maps in enumerate(self.parts):
            mine = part == k
            if mine.any():
                out[mine] = maps[index[mine] - self.offsets[k]]
        return out


def balance_weights(age):
    """Inverse square root of each age's frequency (1-year bins), normalised to mean 1."""
    _, inverse, counts = np.unique(np.floor(age), return_inverse=True, return_counts=True)
    weight = counts[inverse] ** -0.5
    return weight / weight.mean()


def train_layer(utk, utk_maps, train, levers=None, fgnet_rows=None):
    """The fine-tuned layer trained on the UTKFace rows ``train`` whose face was found.

    With ``levers`` (:class:`LayerLevers`): plus the degraded copies of those rows
    (``augment``) and the FG-NET rows ``fgnet_rows`` weighted ``fgnet_weight``; with
    ``balance``, every training row weighted by :func:`balance_weights` of the ages of
    all of them (before FG-NET's weight).
    """
    age, female = targets(utk)
    maps, found = utk_maps
    rows = train[found[train]]
    if levers is None or not levers.on:
        return train_finetuned_layer(maps, age, female, rows)
    parts = [(maps, age, female, rows, 1.0)]
    if levers.augment:
        source, deg_maps, deg_found = levers.degraded
        parts.append((deg_maps, age[source], female[source],
                      np.flatnonzero(np.isin(source, train) & deg_found), 1.0))
    if levers.fgnet_weight is not None and fgnet_rows is not None and len(fgnet_rows):
        fg_maps, fg_found, fg_age, fg_female = levers.fgnet
        fgnet_rows = np.asarray(fgnet_rows, int)
        parts.append((fg_maps, fg_age, fg_female, fgnet_rows[fg_found[fgnet_rows]],
                      float(levers.fgnet_weight)))
    stacked = StackedMaps([part[0] for part in parts])
    all_rows = np.concatenate([part[3] + offset
                               for part, offset in zip(parts, stacked.offsets)])
    all_age = np.concatenate([np.asarray(part[1], float) for part in parts])
    all_female = np.concatenate([np.asarray(part[2], float) for part in parts])
    weight = np.zeros(len(stacked))
    weight[all_rows] = np.concatenate([np.full(len(part[3]), part[4]) for part in parts])
    if levers.balance:
        weight[all_rows] *= balance_weights(all_age[all_rows])
    return train_finetuned_layer(stacked, all_age, all_female, all_rows, sample_weight=weight)


def fold_features(utk, features, maps, train, levers=None, fgnet_rows=None):
    """Copies of ``features`` whose fine-tuned columns come from a layer trained on ``train``.

    ``features`` and ``maps`` are parallel lists (UTKFace, then e.g. its degraded
    copies, FG-NET); each ``maps`` entry is (frozen maps, found mask). Only UTKFace
    rows in ``train`` train the layer, with the ``levers`` (:func:`train_layer`).
    """
    layer = train_layer(utk, maps[0], train, levers, fgnet_rows)
    columns = feature_blocks(EMBEDDER_PARAMS["layers"])["sface_finetuned"]
    out = []
    for x, (m, found) in zip(features, maps):
        rows = np.flatnonzero(found & np.isfinite(x[:, 0]))
        x = x.copy()
        x[rows, columns] = layer.outputs(m, rows)
        out.append(x)
    return out


def calibration_split(train, seed):
    """(rest, held-out) of ``train``: a seeded share of N_CALIBRATION / 18,978 held out."""
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(train, size=round(len(train) * CALIBRATION_SHARE),
                              replace=False))
    return np.setdiff1d(train, held), held


def calibration_set(utk, utk_x, degraded, maps, rest, held, levers=None, fgnet_rows=None):
    """Held-out calibration rows: UTKFace ``held`` (+ degraded copies) with fine-tuned
    columns from a layer trained on ``rest`` only (and the ``levers``' extra rows of
    :func:`train_layer`); FG-NET rows join in :func:`with_fgnet`."""
    if degraded is None:
        (x,) = fold_features(utk, [utk_x], maps, rest, levers, fgnet_rows)
        parts_x, parts_src = [x[held]], [held]
    else:
        x, dx = fold_features(utk, [utk_x, degraded[1]], maps, rest, levers, fgnet_rows)
        keep = np.isin(degraded[0], held)
        parts_x, parts_src = [x[held], dx[keep]], [held, degraded[0][keep]]
    src = np.concatenate(parts_src)
    return (np.concatenate(parts_x), np.asarray(utk.age, float)[src],
            np.asarray(utk.gender, dtype=object)[src])


def with_fgnet(calibration, fg_x, fg_age, fg_rows):
    """``calibration`` rows plus FG-NET rows ``fg_rows`` (once each), and the FG-NET mask."""
    X, age, gender = calibration[:3]
    fg_rows = np.asarray(fg_rows, int)
    return (np.concatenate([X, fg_x[fg_rows]]),
            np.concatenate([age, np.asarray(fg_age, float)[fg_rows]]),
            np.concatenate([gender, np.full(len(fg_rows), None, dtype=object)]),
            np.r_[np.zeros(len(X), bool), np.ones(len(fg_rows), bool)])


def _fit_predict(X, age, gender, tests, calibration, want_gender=True, gate=None):
    """Fit the recipe's heads, calibrate them, predict each feature block of ``tests``.

    ``gate``: options of :func:`calibrate_heads` (``gate_sigma``, ``gate_fgnet_weight``).
    Returns one (age, interval (n, 2), gender label, P(predicted label)) per block.
    """
    age_head, gender_head = make_heads()
    if want_gender:
        known = np.array([g is not None for g in gender])
        gender_head = clone(gender_head).fit(X[known], gender[known].astype(str))
    else:
        gender_head = None
    age_head, gender_head = calibrate_heads(age_head, gender_head, *calibration,
                                            **(gate or {}))
    out = []
    for X_test in tests:
        found = ~np.isnan(X_test).any(axis=1)
        pred = np.full(len(X_test), float(np.nanmedian(age)))
        pred[found] = age_head.predict(X_test[found])
        interval = np.full((len(X_test), 2), np.nan)
        interval[found] = age_head.predict_interval(X_test[found], coverage=0.8)
        gpred = np.full(len(X_test), None, dtype=object)
        gprob = np.full(len(X_test), np.nan)
        if gender_head is not None and found.any():
            proba = gender_head.predict_proba(X_test[found])
            gpred[found] = gender_head.classes_[proba.argmax(axis=1)]
            gprob[found] = proba.max(axis=1)
        out.append((pred, interval, gpred, gprob))
    return out


def records(report, keys, *groupings, overall=True):
    """Rows of an ``evaluation_report``: overall, then each group of ``groupings``.

    Each row has ``group_type`` (``"all"``, ``"age_group"`` or the grouping's name),
    ``group`` and the scores of ``keys`` (our name -> the report's).
    """
    def row(kind, label, scores):
        return {"group_type": kind, "group": label,
                **{ours: scores[theirs] for ours, theirs in keys.items()}}

    rows = [row("all", "all", report)] if overall else []
    for name in groupings:
        kind = "age_group" if name == "age" else name
        rows += [row(kind, label, scores)
                 for label, scores in report["per_group"].get(name, {}).items()]
    return rows


def summarise(age_true, age_pred, interval, gender_true=None, gender_pred=None,
              gender_proba=None, race=None, subjects=None):
    """One domain's results from :func:`skagegender.metrics.evaluation_report`.

    Age scores overall and per age group (and true gender and race, when given), gender
    accuracy overall and per age group, and under ``uncertainty`` the 80 % interval's
    coverage and width (also per subject, when given) and the gender probability's
    calibration, overall and per age group.
    """
    groups = {}
    if race is not None:  # as text: an unknown race is the group "None"
        groups["race"] = np.asarray(race, dtype=str)
    if subjects is not None:
        groups["subject"] = subjects
    report = evaluation_report(age_true, age_pred, gender_true=gender_true,
                               gender_pred=gender_pred, gender_proba=gender_proba,
                               interval=interval, groups=groups or None)
    out = {key: report[key] for key in ("n", "mae", "one_class_off", "cs5")}
    if gender_true is not None:
        out["gender_accuracy"] = report["gender_accuracy"]
        out["gender_accuracy_by_age_group"] = {
            label: scores["gender_accuracy"]
            for label, scores in report["per_group"]["age"].items()}
    out["per_group"] = records(report, AGE_KEYS, "age", "gender", "race")
    out["uncertainty"] = {"interval": records(report, INTERVAL_KEYS, "age")}
    if subjects is not None:
        by_subject = {str(label): scores["mae"]
                      for label, scores in report["per_group"]["subject"].items()}
        maes = np.array(list(by_subject.values()), float)
        out["mae_by_subject"] = by_subject
        out["subject_mae"] = {"n_subjects": len(maes), "mean": float(maes.mean()),
                              "sd": float(maes.std(ddof=1)) if len(maes) > 1 else None}
        out["uncertainty"]["interval_by_subject"] = records(report, INTERVAL_KEYS, "subject",
                                                            overall=False)
    if gender_true is not None:
        out["uncertainty"]["gender"] = records(report, GENDER_KEYS, "age")
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


DOMAINS = ("utkface_cv", "utkface_degraded", "fgnet")


def uncertainty_markdown(result):
    """Markdown lines: the 80 % interval and the gender probability, per domain."""
    lines = ["", "## Uncertainty: 80 % age interval", "",
             "| domain | group | n | coverage | mean width (years) |", "|---|---|---|---|---|"]
    for name in DOMAINS:
        u = (result.get(name) or {}).get("uncertainty")
        if u is None:
            continue
        for row in u["interval"] + u.get("interval_by_subject", []):
            lines.append(f"| {name} | {row['group']} | {row['n']} | {row['coverage']:.1%} | "
                         f"{row['mean_width']:.1f} |")
    return lines + gender_markdown(
        result, "gender", "Uncertainty: gender probability (printed P of the printed gender)")


def gender_markdown(result, key, title):
    """Markdown lines: a table of the gender-calibration rows ``key`` of each domain."""
    lines = ["", f"## {title}", "", "| domain | age group | n | accuracy | mean confidence | ECE |",
             "|---|---|---|---|---|---|"]
    for name in DOMAINS:
        u = (result.get(name) or {}).get("uncertainty") or {}
        for row in u.get(key, []):
            lines.append(f"| {name} | {row['group']} | {row['n']} | {row['accuracy']:.1%} | "
                         f"{row['mean_confidence']:.1%} | {row['ece']:.3f} |")
    return lines


def markdown(result):
    lines = [f"# Accuracy ({result['tag']})", ""]
    if result.get("command"):
        lines += [f"Levers: `{result['command']}`", ""]
    lines += [result["protocol"], "",
              "| set | n | MAE | one-class-off | CS@5 | gender |", "|---|---|---|---|---|---|"]
    for name in DOMAINS:
        r = result.get(name)
        if r is None:
            continue
        g = r.get("gender_accuracy")
        lines.append(f"| {name} | {r['n']} | {r['mae']:.2f} | {r['one_class_off']:.1%} | "
                     f"{r['cs5']:.1%} | {'n/a' if g is None else f'{g:.1%}'} |")
    spread = (result.get("fgnet") or {}).get("subject_mae")
    if spread and spread["sd"] is not None:
        lines += ["", (f"FG-NET MAE per subject: mean {spread['mean']:.2f}, "
                       f"sd {spread['sd']:.2f} over {spread['n_subjects']} subjects.")]
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
    lines += uncertainty_markdown(result)
    if result.get("seconds_per_image") is not None:
        lines += ["", (f"End to end, one core: {result['seconds_per_image'] * 1000:.0f} ms "
                       "per image (shipped model, `predict_faces`).")]
    return "\n".join(lines) + "\n"


# the study's gender probabilities: the MLP uncalibrated, calibrated with cross-fitting,
# calibrated (frozen) on a held-out fold -> their key in the results
GENDER_VARIANTS = {"raw": "gender_uncalibrated", "calibrated": "gender",
                   "frozen": "gender_held_out_fold"}


def calibration_study(args):
    """Interval coverage and gender ECE on the shipped recipe's calibration rows, held out.

    The rows of ``train_pretrained.calibration_rows`` (2,100 UTKFace images whose
    fine-tuned columns come from a layer trained on the other 16,878, degraded copies of
    630, FG-NET): 5-fold cross-fitting over the UTKFace images (a degraded copy goes with
    its original), FG-NET leave-one-subject-out. Age: the recipe's calibration
    (``calibrate_heads``) fitted on the other folds / subjects. Gender: the recipe's MLP
    in an ``AgeAwareCalibratedClassifier(cv=4)`` fitted on the other folds (the features
    of all its rows held out from the layer), against the same MLP uncalibrated. Needs
    only the calibration images' embeddings and the maps.
    """
    from train_pretrained import calibration_rows

    from skagegender.datasets import load_dataset
    from skagegender.embedding import FINETUNED_AGE_CLASSES
    from skagegender.heads import AgeAwareCalibratedClassifier

    n = N_CALIBRATION if args.limit is None else round(args.limit * CALIBRATION_SHARE)
    X, age, gender, domain, source = calibration_rows(args.data, args.cache, args.maps,
                                                      args.n_jobs, n=n, fgnet_weight=1,
                                                      limit=args.limit)
    subjects = np.asarray(load_dataset("fgnet", Path(args.data) / "FGNET").subject)
    is_fg = domain == "fgnet"
    fold = np.full(len(X), -1)
    utk_images = np.unique(source[~is_fg])
    for k, (_, test) in enumerate(KFold(5, shuffle=True, random_state=0).split(utk_images)):
        fold[~is_fg & np.isin(source, utk_images[test])] = k
    group = np.where(is_fg, subjects[np.where(is_fg, source, 0)], fold.astype(str))
    found = np.isfinite(X).all(axis=1)
    age_head = make_heads()[0]
    age_start = feature_blocks(EMBEDDER_PARAMS["layers"])["sface_finetuned_age"].start
    pred, interval = np.full(len(X), np.nan), np.full((len(X), 2), np.nan)
    proba = {k: np.full(len(X), np.nan) for k in GENDER_VARIANTS}
    label = {k: np.full(len(X), None, dtype=object) for k in GENDER_VARIANTS}
    start = time.perf_counter()
    for g in np.unique(group):
        test, cal = found & (group == g), found & (group != g)
        calibrated, _ = calibrate_heads(age_head, None, X[cal], age[cal], gender[cal],
                                        fgnet=is_fg[cal])
        pred[test] = calibrated.predict(X[test])
        interval[test] = calibrated.predict_interval(X[test], coverage=0.8)
        if g in subjects:
            continue
        train = cal & ~is_fg
        calibrated = AgeAwareCalibratedClassifier(
            clone(make_heads()[1]), age_start=age_start,
            age_classes=FINETUNED_AGE_CLASSES, cv=4, random_state=0,
        ).fit(X[train], gender[train].astype(str))
        # the full recipe's way: an MLP trained without one training fold, calibrated
        # (frozen) on that fold by calibrate_heads
        inner = np.isin(fold, (int(g) + np.arange(1, 4)) % 5) & train
        held_out = train & ~inner
        _, frozen = calibrate_heads(age_head, clone(make_heads()[1]).fit(
            X[inner], gender[inner].astype(str)), X[held_out], age[held_out], gender[held_out])
        # the same MLP (fitted on the same rows) without the calibration
        for name, model in (("raw", calibrated.estimator_), ("calibrated", calibrated),
                            ("frozen", frozen)):
            p = model.predict_proba(X[test])
            proba[name][test] = p.max(axis=1)
            label[name][test] = model.classes_[p.argmax(axis=1)]
        print(f"fold {g}: {time.perf_counter() - start:.0f} s", flush=True)
    result = {"tag": "calibration-study", "protocol": calibration_study.__doc__.split("\n\n")[0]
              + " " + " ".join(calibration_study.__doc__.split("\n\n")[1].split())}
    for name in ("utkface", "degraded", "fgnet"):
        rows = domain == name
        if name == "fgnet":
            u = summarise(age[rows], pred[rows], interval[rows],
                          subjects=subjects[source[rows]])["uncertainty"]
        else:
            u = {"interval": summarise(age[rows], pred[rows], interval[rows])[
                "uncertainty"]["interval"]}
            for kind, key in GENDER_VARIANTS.items():
                u[key] = summarise(age[rows], pred[rows], interval[rows], gender[rows],
                                   label[kind][rows], proba[kind][rows])["uncertainty"]["gender"]
        result[{"utkface": "utkface_cv", "degraded": "utkface_degraded"}.get(name, name)] = {
            "n": int(rows.sum()), "uncertainty": u}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "uncertainty.json").write_text(json.dumps(result, indent=2, default=float))
    lines = [f"# Uncertainty ({result['tag']})", "", result["protocol"], "",
             "Command: `python benchmarks/accuracy.py --calibration-study`"]
    lines += uncertainty_markdown(result)
    lines += gender_markdown(result, "gender_uncalibrated", "The same MLP, uncalibrated")
    lines += gender_markdown(result, "gender_held_out_fold",
                             "An MLP trained on 3 of the 4 training folds, calibrated on the "
                             "4th (as calibrate_heads)")
    text = "\n".join(lines) + "\n"
    (out / "uncertainty.md").write_text(text)
    print(text)


#: The lever options (argparse names): the shipped recipe when all are off.
LEVERS = ("layer_augment", "layer_balance", "layer_fgnet", "gate_sigma", "gate_fgnet_weight")


def lever_options(args):
    """{option: value} of the lever options given."""
    return {name: getattr(args, name) for name in LEVERS
            if getattr(args, name) not in (None, False)}


def lever_command(args):
    """The command line of the lever options, or None (the shipped recipe)."""
    flags = [f"--{name.replace('_', '-')}" + ("" if value is True else f" {value:g}")
             for name, value in lever_options(args).items()]
    return " ".join(["python benchmarks/accuracy.py", *flags]) if flags else None


def lever_tag(args):
    """A results tag from the lever options (``layer-augment-balance``, ``gate-s1-w5``) or None."""
    layer = [name for name, on in (("augment", args.layer_augment),
                                   ("balance", args.layer_balance)) if on]
    if args.layer_fgnet is not None:
        layer.append(f"fgnet{args.layer_fgnet:g}")
    gate = []
    if args.gate_sigma is not None:
        gate.append(f"s{args.gate_sigma:g}")
    if args.gate_fgnet_weight is not None:
        gate.append(f"w{args.gate_fgnet_weight:g}")
    parts = ([f"layer-{'-'.join(layer)}"] if layer else []) + (
        [f"gate-{'-'.join(gate)}"] if gate else [])
    return "-".join(parts) or None


def lever_protocol(args):
    """The protocol's sentences about the lever options ("" without them)."""
    said = []
    if args.layer_augment or args.layer_balance or args.layer_fgnet is not None:
        said.append(
            "Levers of the fine-tuned layers (every layer the benchmark trains, the "
            "calibration layers too):"
            + (" also trained on the degraded copies of their training images;"
               if args.layer_augment else "")
            + (" rows weighted by 1 / sqrt(frequency of their age), 1-year bins, mean 1;"
               if args.layer_balance else "")
            + (f" FG-NET images of the training subjects join with weight {args.layer_fgnet:g}"
               " (UTKFace folds: all 10 subjects; their FG-NET columns, calibration rows "
               "included, come from that layer);" if args.layer_fgnet is not None else "")
            + " FG-NET's folds replace the shipped layer's columns (UTKFace, degraded copies, "
              "FG-NET) by a layer trained so on all UTKFace images"
            + (" and the fold's FG-NET training subjects (re-trained per fold)."
               if args.layer_fgnet is not None else "."))
    if args.gate_sigma is not None or args.gate_fgnet_weight is not None:
        said.append("Age gate: " + ", ".join(
            f"{name} {value:g}" for name, value in (("label sigma", args.gate_sigma),
                                                    ("FG-NET weight", args.gate_fgnet_weight))
            if value is not None) + " (calibrate_heads).")
    return "".join(" " + sentence for sentence in said)


def main(argv=None):
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
    parser.add_argument("--calibration-study", action="store_true",
                        help="only the uncertainty study on the calibration rows "
                             "(writes uncertainty.{json,md} into --out-dir; with --limit, "
                             "calibration rows in proportion)")
    parser.add_argument("--layer-augment", action="store_true",
                        help="each fine-tuned layer also trains on the degraded copies of its "
                             "training images")
    parser.add_argument("--layer-balance", action="store_true",
                        help="each fine-tuned layer's rows weighted by 1 / sqrt(frequency of "
                             "their age), 1-year bins, mean 1")
    parser.add_argument("--layer-fgnet", type=float, default=None, metavar="W",
                        help="FG-NET images of the training subjects train the layers too, "
                             "weight W (the FG-NET folds re-train them per fold)")
    parser.add_argument("--gate-sigma", type=float, default=None, metavar="S",
                        help="label width of the age gate (default: GATE_LABEL_SIGMA)")
    parser.add_argument("--gate-fgnet-weight", type=float, default=None, metavar="W",
                        help="FG-NET weight in the age gate's fit (default: GATE_FGNET_WEIGHT)")
    parser.add_argument("--tag", default=None,
                        help="results file suffix (default: shipped-recipe, or a name "
                             "built from the lever options)")
    parser.add_argument("--timing-images", type=int, default=50,
                        help="images timed end to end with the shipped model (0: no timing)")
    parser.add_argument("--limit", type=int, default=None,
                        help="a seeded subset of this many UTKFace images (smoke runs; "
                        "the degraded copies shrink in proportion)")
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"),
                        help="folder for the results (default: %(default)s)")
    args = parser.parse_args(argv)
    levers = lever_options(args)
    for name in ("layer_fgnet", "gate_sigma", "gate_fgnet_weight"):
        value = getattr(args, name)
        if value is not None and not (np.isfinite(value) and value > 0):
            parser.error(f"--{name.replace('_', '-')} must be a positive number")
    if args.layer_augment and args.no_degraded:
        parser.error("--layer-augment needs the degraded copies (drop --no-degraded)")
    if args.layer_fgnet is not None and args.no_fgnet:
        parser.error("--layer-fgnet needs FG-NET in training (drop --no-fgnet)")
    if args.tag is None:
        args.tag = lever_tag(args) or "shipped-recipe"
    elif levers and args.tag == "shipped-recipe":
        parser.error("lever runs cannot write the shipped recipe's results: another --tag")
    if args.calibration_study:
        if levers:
            parser.error("--calibration-study takes no lever options")
        return calibration_study(args)

    utk, utk_x, fg, fg_x, degraded = embed_all(args.data, args.cache, args.n_jobs,
                                               args.limit)
    degraded = None if args.no_degraded else degraded
    use_fg = not args.no_fgnet
    age, gender = np.asarray(utk.age, float), np.asarray(utk.gender, dtype=object)
    fg_age = np.asarray(fg.age, float)
    import torch

    torch.set_num_threads(args.n_jobs)
    maps = [frozen_maps("utkface", list(utk.paths), args.maps, n_jobs=args.n_jobs)]
    if degraded is not None:
        items = [(str(utk.paths[i]), int(seed)) for i, seed in zip(*degraded_sources(
            len(utk.paths), n=n_degraded(args.limit)))]
        maps.append(frozen_maps("utkface_degraded", items, args.maps, n_jobs=args.n_jobs))
    layer = LayerLevers(augment=args.layer_augment, balance=args.layer_balance,
                        fgnet_weight=args.layer_fgnet)
    if layer.augment:
        layer.degraded = (degraded[0], *maps[1])
    if layer.on:
        layer.fgnet = (*frozen_maps("fgnet", [str(p) for p in fg.paths], args.maps,
                                    n_jobs=args.n_jobs), *targets(fg))
    # FG-NET rows that may train the layer in the UTKFace folds (FG-NET is not tested there)
    fg_layer_rows = np.arange(len(fg_age)) if layer.fgnet_weight is not None else None
    gate = {"gate_sigma": args.gate_sigma, "gate_fgnet_weight": args.gate_fgnet_weight}

    start = time.perf_counter()
    n_deg = 0 if degraded is None else len(degraded[0])
    pred, interval = np.zeros(len(age)), np.full((len(age), 2), np.nan)
    gpred, gprob = np.full(len(age), None, dtype=object), np.full(len(age), np.nan)
    dpred, dinterval = np.full(n_deg, np.nan), np.full((n_deg, 2), np.nan)
    dgpred, dgprob = np.full(n_deg, None, dtype=object), np.full(n_deg, np.nan)
    folds = [] if args.fgnet_only else KFold(5, shuffle=True, random_state=0).split(utk_x)
    all_fg = np.arange(len(fg_age)) if use_fg else np.zeros(0, int)
    for k, (train, test) in enumerate(folds):
        rest, held = calibration_split(train, seed=k)
        features, fold_maps = [utk_x], maps[:1]
        if degraded is not None:
            features, fold_maps = [utk_x, degraded[1]], maps[:2]
        if fg_layer_rows is not None:  # FG-NET's columns from the layer that trained on it
            features, fold_maps = [*features, fg_x], [*fold_maps, layer.fgnet[:2]]
        fold_out = fold_features(utk, features, fold_maps, train, layer, fg_layer_rows)
        fold_x = fold_out[0]
        fold_fg_x = fg_x if fg_layer_rows is None else fold_out[-1]
        if degraded is None:
            fold_degraded = None
        else:
            fold_deg_x = fold_out[1]
            fold_degraded = (degraded[0], fold_deg_x)
        calibration = with_fgnet(calibration_set(utk, utk_x, degraded, maps, rest, held,
                                                 layer, fg_layer_rows),
                                 fold_fg_x, fg_age, all_fg)
        X, y, g = training_set(utk, fold_x, fold_degraded, fg if use_fg else None, fold_fg_x,
                               utk_rows=rest)
        tests = [fold_x[test]]
        if degraded is not None:
            deg_test = np.flatnonzero(np.isin(degraded[0], test))
            tests.append(fold_deg_x[deg_test])
        results = _fit_predict(X, y, g, tests, calibration, gate=gate)
        pred[test], interval[test], gpred[test], gprob[test] = results[0]
        if degraded is not None:
            dpred[deg_test], dinterval[deg_test], dgpred[deg_test], dgprob[deg_test] = results[1]
        print(f"fold {k}: MAE {np.abs(pred[test] - age[test]).mean():.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    utk_result = deg_result = None
    if not args.fgnet_only:
        utk_result = summarise(age, pred, interval, gender, gpred, gprob, race=utk.race)
        if degraded is not None:
            deg_result = summarise(age[degraded[0]], dpred, dinterval, gender[degraded[0]],
                                   dgpred, dgprob)

    fg_pred, fg_interval = np.zeros(len(fg_age)), np.full((len(fg_age), 2), np.nan)
    subjects = np.asarray(fg.subject)
    # FG-NET folds: the calibration images of the shipped recipe are held out from the
    # heads, and their columns come from a layer trained without them
    rest, held = calibration_split(np.arange(len(age)), seed=len(age))
    if use_fg:
        fg_folds = list(GroupKFold(n_splits=5).split(fg_x, groups=subjects))
    else:
        fg_folds = [(np.zeros(0, int), np.arange(len(fg_age)))]
    utk_calibration = (None if layer.on  # then made with the levers' layers below
                       else calibration_set(utk, utk_x, degraded, maps, rest, held))
    lever_layers = {}  # with layer levers: a layer per FG-NET fold (one, without FG-NET)
    for train, test in fg_folds:
        fold_utk_x, fold_degraded, fold_fg_x = utk_x, degraded, fg_x
        fold_calibration = utk_calibration
        if layer.on:
            # the shipped layer's columns replaced by those of a layer trained with the
            # levers on all UTKFace images (+ the FG-NET training subjects)
            fg_rows = train if layer.fgnet_weight is not None else None
            key = None if fg_rows is None else tuple(fg_rows)
            if key not in lever_layers:
                features, fold_maps = [utk_x], maps[:1]
                if degraded is not None:
                    features, fold_maps = [utk_x, degraded[1]], maps[:2]
                fold_out = fold_features(utk, [*features, fg_x], [*fold_maps, layer.fgnet[:2]],
                                         np.arange(len(age)), layer, fg_rows)
                lever_layers[key] = (fold_out, calibration_set(
                    utk, utk_x, degraded, maps, rest, held, layer, fg_rows))
            fold_out, fold_calibration = lever_layers[key]
            fold_utk_x, fold_fg_x = fold_out[0], fold_out[-1]
            if degraded is not None:
                fold_degraded = (degraded[0], fold_out[1])
        calibration = with_fgnet(fold_calibration, fold_fg_x, fg_age, train)
        X, y, g = training_set(utk, fold_utk_x, fold_degraded, fg if use_fg else None,
                               fold_fg_x, utk_rows=rest, fgnet_rows=train)
        ((fg_pred[test], fg_interval[test], _, _),) = _fit_predict(
            X, y, g, [fold_fg_x[test]], calibration, want_gender=False, gate=gate)
    fg_result = summarise(fg_age, fg_pred, fg_interval, subjects=subjects)
    print(f"heads: {time.perf_counter() - start:.0f} s", flush=True)

    result = {
        "tag": args.tag,
        "protocol": ("UTKFace: 5-fold CV (KFold shuffle, seed 0) over the "
                     f"{len(age):,} images in shared/data (no subject ids: one person may be "
                     "on both sides); the fine-tuned SFace layer is re-trained per fold. FG-NET: "
                     + ("subject-disjoint 5-fold (GroupKFold) over the 10 subjects in shared/data."
                        if use_fg else "cross-dataset (no FG-NET in training).")
                     + f" Degraded copies: {'no' if degraded is None else len(degraded[0])}"
                     " (the degraded domain: copies of each fold's validation images)."
                     " Missed faces count (median age, gender wrong). Calibration: "
                     f"{CALIBRATION_SHARE:.0%} of each fold's training images held out "
                     "from the heads, their fine-tuned columns from a layer trained without "
                     "them." + lever_protocol(args)),
        "options": {name: getattr(args, name) for name in LEVERS},
        "command": lever_command(args),
        "utkface_cv": utk_result,
        "utkface_degraded": deg_result,
        "fgnet": fg_result,
        "seconds_per_image": None if args.fgnet_only or args.timing_images <= 0
        else seconds_per_image(
            list(utk.paths[:args.timing_images])),
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.tag == "shipped-recipe" else f"-{args.tag}"
    (out / f"accuracy{suffix}.json").write_text(json.dumps(result, indent=2, default=float))
    text = markdown(result)
    (out / f"accuracy{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
