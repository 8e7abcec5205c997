"""Compare the head families, default and tuned, on the same cached embeddings and folds.

Usage::

    nice -n 10 python benchmarks/compare_heads.py --limit 3000 --n-splits 3 --n-trials 8
    python benchmarks/compare_heads.py --n-splits 5 --n-trials 20   # every face

Features are the shipped model's (``make_embedder()``, 2,176 per face) for the UTKFace
images under ``--root``, read from the embedding cache ``--cache`` (seconds when every
image is cached; otherwise the missing ones are embedded first). Faces with no
detection (NaN rows) are dropped; ``--limit`` keeps a seeded random subset.

Every candidate is scored on the same outer ``KFold(n_splits, shuffle=True,
random_state=seed)`` folds, for age and for gender:

- ``default <family>``: the family's default head (``make_age_head`` /
  ``make_gender_head``);
- ``tuned <family>``: :class:`~skagegender.model_selection.HeadSearchCV` over that
  family's part of ``default_head_space``, ``--n-trials`` trials scored by 3-fold CV on
  the outer training part only, then its ``best_estimator_`` (refit on that part) is
  scored on the outer test fold;
- ``search (all families)``: the same over the whole ``default_head_space``.

Searches use the library's default scoring (one-class-off for age, accuracy for gender).
Columns, means over outer folds: MAE, one-class-off accuracy (5-year classes), CS@5
(age); accuracy, log-loss, expected calibration error (gender); fit seconds (for a
search: refitting the best head; ``search_s`` is the whole search), predict
microseconds per sample, model size (``len(pickle.dumps(fitted head))`` in kB).
LightGBM runs with ``n_jobs=1`` (``--lgbm-jobs``). Writes
``compare_heads.md`` and ``.json`` into ``--out`` (default ``benchmarks/results``) after
every outer fold and prints which head wins each column.
"""

import argparse
import json
import os
import pickle
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import KFold

from skagegender.datasets import embed_dataset
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
from skagegender.model_selection import HeadSearchCV, default_head_space
from skagegender.training._default_recipe import make_embedder

sys.path.insert(0, str(Path(__file__).parent))
from heads_cv import mean_over_folds, timed_fit_predict

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "UTKFace"
FAMILIES = ("mlp", "lightgbm", "ordinal")
# column -> True when higher is better; search_s is informative only (no winner)
COLUMNS = {
    "age": {"mae": False, "one_class_off": True, "cs5": True, "fit_s": False,
            "predict_us": False, "size_kb": False, "search_s": None},
    "gender": {"accuracy": True, "log_loss": False, "ece": False, "fit_s": False,
               "predict_us": False, "size_kb": False, "search_s": None},
}


class _ThreadCappedSpace:
    """A search space whose heads use ``n_jobs`` threads where they have the parameter."""

    def __init__(self, space, n_jobs):
        self.space = space
        self.n_jobs = n_jobs

    def __call__(self, trial):
        params = self.space(trial)
        for head in params.values():
            if "model__n_jobs" in head.get_params():
                head.set_params(model__n_jobs=self.n_jobs)
        return params


def candidates(task, *, n_trials, seed, lgbm_jobs, families=None):
    """Unfitted ``{name: estimator}`` of one task: defaults, tuned families, full search.

    ``families`` (default: ``FAMILIES``) restricts all three kinds to those families.
    """
    wrapper, factory = ((AgeRegressor, make_age_head) if task == "age"
                        else (GenderClassifier, make_gender_head))

    def search(families):
        space = default_head_space(task, families=families, random_state=seed)
        return HeadSearchCV(
            wrapper(random_state=seed), _ThreadCappedSpace(space, lgbm_jobs),
            n_trials=n_trials, cv=KFold(3, shuffle=True, random_state=seed),
            random_state=seed,
        )

    heads = {}
    for family in families or FAMILIES:
        threads = {"n_jobs": lgbm_jobs} if family == "lightgbm" else {}
        heads[f"default {family}"] = wrapper(factory(family, random_state=seed, **threads))
    for family in families or FAMILIES:
        heads[f"tuned {family}"] = search([family])
    heads["search (all families)"] = search(list(families) if families else None)
    return heads


def score_fold(task, est, X_train, y_train, X_test, y_test):
    """Fit ``est`` on the training part, score it on the test part."""
    out, fit_s, predict_us = timed_fit_predict(est, X_train, y_train, X_test,
                                                proba=task == "gender")
    fold = {"fit_s": fit_s, "predict_us": predict_us}
    head, chosen = est, None
    if isinstance(est, HeadSearchCV):
        head, chosen = est.best_estimator_, est.study_.best_trial.params["head"]
        # fit_s of a search: refitting its best head; predict_us: that head alone
        fold.update(fit_s=est.refit_time_, search_s=fit_s)
        start = time.perf_counter()
        out = head.predict(X_test) if task == "age" else head.predict_proba(X_test)
        fold["predict_us"] = (time.perf_counter() - start) / len(X_test) * 1e6
    fold["size_kb"] = len(pickle.dumps(head)) / 1e3
    if task == "age":
        fold.update(mae=mean_absolute_error(y_test, out),
                    one_class_off=one_class_off_score(y_test, out),
                    cs5=cumulative_score(y_test, out, threshold=5))
    else:
        classes = head.classes_
        fold.update(accuracy=accuracy_score(y_test, classes[out.argmax(axis=1)]),
                    log_loss=log_loss(y_test, out, labels=classes),
                    ece=expected_calibration_error(y_test, out, labels=classes))
    return fold, chosen


def summarize(folds, chosen):
    """Rows (means over the folds done) and the winner of each column."""
    rows = []
    for (task, name), task_folds in folds.items():
        row = {"task": task, "head": name, **mean_over_folds(task_folds)}
        if chosen[task, name]:
            row["chosen"] = chosen[task, name]
        rows.append(row)
    winners = {}
    for task, columns in COLUMNS.items():
        task_rows = [r for r in rows if r["task"] == task]
        for column, higher in columns.items():
            if higher is None or not task_rows:
                continue
            best = (max if higher else min)(task_rows, key=lambda r: r[column])
            winners[f"{task} {column}"] = best["head"]
    return rows, winners


def search_verdict(rows):
    """Does the all-family search beat every default head on each quality column?"""
    verdict = {}
    for task, columns in COLUMNS.items():
        by_name = {r["head"]: r for r in rows if r["task"] == task}
        search = by_name.get("search (all families)")
        if search is None:
            continue
        for column in list(columns)[:3]:
            higher = columns[column]
            beaten = [name for name, r in by_name.items() if name.startswith("default")
                      and not (search[column] > r[column] if higher else
                               search[column] < r[column])]
            verdict[f"{task} {column}"] = beaten
    return verdict


def to_markdown(rows, winners, verdict, meta):
    lines = [
        "# Head families, default and tuned, on cached UTKFace embeddings", "",
        f"`{meta['command']}`", "",
        (f"{meta['n_samples']} faces (seeded subset of {meta['n_available']}) x "
        f"{meta['n_features']} features; {meta['folds_done']} of {meta['n_splits']} outer "
        f"KFold folds (shuffle, seed {meta['seed']}), the same for every head; means over "
        f"folds. Tuned = HeadSearchCV, {meta['n_trials']} TPE trials, 3-fold CV on the outer "
        "training part only, library default scoring (one-class-off for age, accuracy for "
        f"gender). LightGBM n_jobs={meta['lgbm_jobs']}. fit_s of a search = refit of its "
        "best head on the outer training part; search_s = the whole search. size = "
        f"pickled fitted head. Run under `nice -n 10` on {meta['cpus']} shared cores; "
        f"total {meta['total_s'] / 60:.1f} min."), "",
    ]
    for task, columns in COLUMNS.items():
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        names = list(columns)
        lines += [f"## {task}", "", "| head | " + " | ".join(names) + " | chosen |",
                  "|---" * (len(names) + 2) + "|"]
        for r in task_rows:
            cells = []
            for c in names:
                cell = "" if c not in r else f"{r[c]:.4g}"
                cells.append(f"**{cell}**" if winners.get(f"{task} {c}") == r["head"] else cell)
            lines.append(f"| {r['head']} | " + " | ".join(cells) + f" | {r.get('chosen', '')} |")
        lines.append("")
    lines += ["## Winners", ""] + [f"- {k}: {v}" for k, v in winners.items()] + [""]
    lines += ["## Search over all families vs every default head", ""]
    for key, beaten_by in verdict.items():
        text = "beats every default" if not beaten_by else "not better than " + ", ".join(
            beaten_by)
        lines.append(f"- {key}: {text}")
    return "\n".join(lines) + "\n"


def load(root, cache, limit, seed):
    X, data = embed_dataset("utkface", root, embedder=make_embedder(), cache=cache)
    face = ~np.isnan(X).any(axis=1)
    X, age, gender = X[face], np.asarray(data.age, float)[face], np.asarray(data.gender)[face]
    n_available = len(X)
    if limit and limit < len(X):
        keep = np.sort(np.random.default_rng(seed).choice(len(X), limit, replace=False))
        X, age, gender = X[keep], age[keep], gender[keep]
    return X, age, gender, n_available


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DATA, help="UTKFace image folder")
    parser.add_argument("--cache", type=Path, default=Path(".emb-cache"),
                        help="embedding cache folder (default: .emb-cache, gitignored)")
    parser.add_argument("--limit", type=int, default=None, help="seeded subset of faces")
    parser.add_argument("--n-splits", type=int, default=5)
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lgbm-jobs", type=int, default=1, help="LightGBM threads")
    parser.add_argument("--tasks", nargs="+", choices=["age", "gender"],
                        default=["age", "gender"])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=None,
                        help="only these head families (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="folder for the results (default: benchmarks/results)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    start = time.perf_counter()
    X, age, gender, n_available = load(args.root, args.cache, args.limit, args.seed)
    targets = {"age": age, "gender": gender}
    print(f"{len(X)} faces x {X.shape[1]} features, loaded in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    meta = {"command": "python " + " ".join(["benchmarks/compare_heads.py", *map(str, argv)]),
            "n_samples": len(X), "n_available": int(n_available),
            "n_features": int(X.shape[1]), "n_splits": args.n_splits, "seed": args.seed,
            "n_trials": args.n_trials, "lgbm_jobs": args.lgbm_jobs, "cpus": _cpus(),
            "families": list(args.families or FAMILIES)}
    splits = list(KFold(args.n_splits, shuffle=True, random_state=args.seed).split(X))
    heads = {task: candidates(task, n_trials=args.n_trials, seed=args.seed,
                              lgbm_jobs=args.lgbm_jobs, families=args.families)
             for task in args.tasks}
    folds = {(task, name): [] for task in args.tasks for name in heads[task]}
    chosen = {key: [] for key in folds}
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (train, test) in enumerate(splits):
        for task in args.tasks:
            y = targets[task]
            for name, est in heads[task].items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # convergence chatter of capped epochs
                    fold, family = score_fold(task, est, X[train], y[train], X[test], y[test])
                folds[task, name].append(fold)
                if family:
                    chosen[task, name].append(family)
                values = ", ".join(f"{k}={v:.4g}" for k, v in fold.items())
                print(f"fold {i} {task:6s} {name:22s} {values}"
                      + (f" chose {family}" if family else ""), flush=True)
        rows, winners = summarize(folds, {k: "/".join(v) for k, v in chosen.items()})
        verdict = search_verdict(rows)
        meta.update(folds_done=i + 1, total_s=time.perf_counter() - start)
        (args.out / "compare_heads.json").write_text(json.dumps(
            {"meta": meta, "rows": rows, "winners": winners,
             "search_not_better_than": verdict, "folds": {
                 f"{task} {name}": f for (task, name), f in folds.items()}}, indent=2))
        (args.out / "compare_heads.md").write_text(to_markdown(rows, winners, verdict, meta))
    print("winners:")
    for column, name in winners.items():
        print(f"  {column:22s} {name}")
    for key, beaten_by in verdict.items():
        print(f"  search (all families) on {key}: "
              + ("beats every default" if not beaten_by else f"not better than {beaten_by}"))
    print(f"wrote {args.out / 'compare_heads'}.md/.json")


def _cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
