"""Cross-validate the age and gender heads on a features file.

Usage::

    python benchmarks/heads_cv.py --features utkface_features.npz
    python benchmarks/heads_cv.py --synthetic --limit 3000

The features file holds ``X`` (n, d) float32, ``age`` (n,), ``gender`` (n,) (0/1 or
strings) and optionally ``groups`` (n,) subject ids (then folds are group-disjoint).
``--synthetic`` generates a stand-in with UTKFace-like ages (many children and
twenty-somethings, a long tail to 90+) whose features carry age non-linearly and weakly,
plus gender, race and identity factors and noise.

For each age head: MAE, one-class-off (5-year classes), CS@5, fit seconds and predict
microseconds per sample; for each gender head: accuracy, log-loss, expected calibration
error, fit seconds, predict microseconds per sample. Mean over 5 folds (fixed seed).
Writes ``heads_cv_<name>.md`` and ``.json`` into ``--out`` (default
``benchmarks/results``).
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skagegender.heads import (
    AgeRegressor,
    GenderClassifier,
    make_age_head,
    make_gender_head,
)
from skagegender.metrics import (
    cumulative_score,
    expected_calibration_error,
    mean_absolute_error,
    one_class_off_score,
)

RESULTS = Path(__file__).parent / "results"
# LightGBM on ~2,000 dense features is slow to bin and grow; one thread avoids
# oversubscribing a small shared machine, fewer bins and trees keep CV within minutes.
LGBM_BENCH = {"n_estimators": 100, "max_bin": 63, "n_jobs": 1}


def make_standin(n=4000, n_features=2176, seed=0):
    """Generated features with UTKFace-like labels.

    Returns
    -------
    X : ndarray of shape (n, n_features), float32
    age : ndarray of shape (n,), integer ages 1-100
    gender : ndarray of shape (n,), 0/1
    """
    rng = np.random.default_rng(seed)
    part = rng.choice(3, size=n, p=[0.15, 0.6, 0.25])
    age = np.select(
        [part == 0, part == 1],
        [rng.uniform(1, 12, n), rng.normal(30, 8, n)],
        rng.uniform(40, 95, n),
    )
    age = np.clip(np.rint(age), 1, 100)
    gender = rng.integers(0, 2, n)
    race = rng.integers(0, 5, n)
    a = age / 100
    latent = np.column_stack(
        [np.log1p(age) / 4, a, a**2, np.sqrt(a), (age < 15) * 1.0, gender * 1.0, np.eye(5)[race]]
    )
    identity = rng.normal(size=(n, 32))
    mix_signal = rng.normal(size=(latent.shape[1], n_features)) * 1.5
    mix_identity = rng.normal(size=(32, n_features)) / np.sqrt(32) * 1.5
    # per-sample age noise: some faces look older or younger than they are
    looks = rng.normal(0, 0.04, size=(n, 1)) * rng.normal(size=(1, n_features))
    X = np.tanh(latent @ mix_signal / 3 + identity @ mix_identity + looks)
    X += rng.normal(0, 0.6, size=X.shape)
    return X.astype(np.float32), age, gender


def age_heads(seed, n_features):
    # the "mlp" family is an MLPRegressor; this is the label-distribution alternative
    mlp_classifier = Pipeline([
        ("scale", StandardScaler()),
        ("model", MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-2, batch_size=256,
                                max_iter=30, n_iter_no_change=5, random_state=seed)),
    ])
    heads = {
        "mlp": AgeRegressor("mlp", random_state=seed),
        "mlp_classifier (label distribution)": AgeRegressor(mlp_classifier),
        "lightgbm": AgeRegressor(make_age_head("lightgbm", **LGBM_BENCH, random_state=seed)),
        "ordinal": AgeRegressor("ordinal"),
    }
    return heads


def gender_heads(seed, calibration):
    heads = {
        "mlp": GenderClassifier("mlp", random_state=seed),
        "lightgbm": GenderClassifier(
            make_gender_head("lightgbm", **LGBM_BENCH, random_state=seed)
        ),
        "ordinal (logistic)": GenderClassifier("ordinal"),
    }
    if calibration:
        heads[f"mlp + {calibration}"] = GenderClassifier(
            "mlp", calibration=calibration, random_state=seed
        )
    return heads


def timed_fit_predict(est, X_train, y_train, X_test, proba=False):
    start = time.perf_counter()
    est.fit(X_train, y_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    out = est.predict_proba(X_test) if proba else est.predict(X_test)
    predict_us = (time.perf_counter() - start) / len(X_test) * 1e6
    return out, fit_s, predict_us


def run(X, age, gender, groups, *, n_splits, seed, only, calibration):
    if groups is not None:
        splits = list(GroupKFold(n_splits).split(X, age, groups))
    else:
        splits = list(KFold(n_splits, shuffle=True, random_state=seed).split(X))
    rows = []
    for name, est in age_heads(seed, X.shape[1]).items():
        if only and name.split()[0] not in only:
            continue
        folds = []
        for train, test in splits:
            pred, fit_s, predict_us = timed_fit_predict(est, X[train], age[train], X[test])
            folds.append({
                "mae": mean_absolute_error(age[test], pred),
                "one_class_off": one_class_off_score(age[test], pred),
                "cs5": cumulative_score(age[test], pred, threshold=5),
                "fit_s": fit_s,
                "predict_us": predict_us,
            })
        rows.append({"task": "age", "head": name, **mean_over_folds(folds)})
        print(_format(rows[-1]), flush=True)
    if groups is None:
        splits = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, gender))
    for name, est in gender_heads(seed, calibration).items():
        if only and name.split()[0] not in only:
            continue
        folds = []
        for train, test in splits:
            proba, fit_s, predict_us = timed_fit_predict(
                est, X[train], gender[train], X[test], proba=True
            )
            classes = np.unique(gender[train])
            folds.append({
                "accuracy": accuracy_score(gender[test], classes[proba.argmax(axis=1)]),
                "log_loss": log_loss(gender[test], proba, labels=classes),
                "ece": expected_calibration_error(gender[test], proba, labels=classes),
                "fit_s": fit_s,
                "predict_us": predict_us,
            })
        rows.append({"task": "gender", "head": name, **mean_over_folds(folds)})
        print(_format(rows[-1]), flush=True)
    return rows


def mean_over_folds(folds):
    return {key: float(np.mean([f[key] for f in folds])) for key in folds[0]}


def _format(row):
    values = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("task", "head"))
    return f"{row['task']:6s} {row['head']:26s} {values}"


def to_markdown(rows, meta):
    lines = [f"# Head cross-validation: {meta['name']}", "",
             (f"{meta['n_samples']} samples x {meta['n_features']} features, "
             f"{meta['n_splits']}-fold CV, seed {meta['seed']}; means over folds. "
             f"Total {meta['total_s']:.0f} s."), ""]
    for task, columns in [("age", ["mae", "one_class_off", "cs5", "fit_s", "predict_us"]),
                          ("gender", ["accuracy", "log_loss", "ece", "fit_s", "predict_us"])]:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        lines += [f"## {task}", "", "| head | " + " | ".join(columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        for r in task_rows:
            lines.append(f"| {r['head']} | " + " | ".join(f"{r[c]:.4g}" for c in columns) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--features", type=Path, help="npz with X, age, gender[, groups]")
    source.add_argument("--synthetic", action="store_true", help="generated stand-in")
    parser.add_argument("--limit", type=int, default=None, help="subsample to this many rows")
    parser.add_argument("--n-synthetic", type=int, default=19000)
    parser.add_argument("--n-features", type=int, default=2176,
                        help="columns of the generated stand-in")
    parser.add_argument("--n-splits", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads", nargs="*", default=None,
                        help="only these heads, by first word "
                             "(mlp, mlp_classifier, lightgbm, ordinal)")
    parser.add_argument("--calibration", choices=["sigmoid", "isotonic"], default=None,
                        help="also run the calibrated mlp gender head (5x its fit cost)")
    parser.add_argument("--name", default=None, help="results file stem")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="folder for the results (default: benchmarks/results)")
    args = parser.parse_args(argv)

    groups = None
    if args.synthetic:
        n = args.limit or args.n_synthetic
        X, age, gender = make_standin(n, n_features=args.n_features, seed=args.seed)
        name = args.name or f"synthetic_{n}"
    else:
        data = np.load(args.features, allow_pickle=False)
        X, age, gender = data["X"], data["age"].astype(float), data["gender"]
        groups = data["groups"] if "groups" in data.files else None
        name = args.name or args.features.stem
        if args.limit and args.limit < len(X):
            keep = np.random.default_rng(args.seed).choice(len(X), args.limit, replace=False)
            X, age, gender = X[keep], age[keep], gender[keep]
            groups = None if groups is None else groups[keep]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter from capped MLP epochs
        rows = run(X, age, gender, groups, n_splits=args.n_splits, seed=args.seed,
                   only=args.heads, calibration=args.calibration)
    meta = {"name": name, "n_samples": len(X), "n_features": int(X.shape[1]),
            "n_splits": args.n_splits, "seed": args.seed,
            "total_s": time.perf_counter() - start}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"heads_cv_{name}.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                               indent=2))
    (args.out / f"heads_cv_{name}.md").write_text(to_markdown(rows, meta))
    print(f"wrote {args.out / f'heads_cv_{name}'}.md/.json")


if __name__ == "__main__":
    main()
