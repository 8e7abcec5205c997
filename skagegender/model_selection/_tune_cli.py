"""The ``skagegender tune`` sub-command: search a head's family and hyperparameters.

``add_tune_arguments(parser)`` declares the options on an argparse (sub)parser and
``run_tune(args)`` runs the search and returns the exit status; ``skagegender.cli``
wires them in.
"""

import json
import sys
from pathlib import Path

import numpy as np

_USAGE_ERROR = 2
_INTERRUPTED = 130


class _TuneError(Exception):
    """A problem with the command's inputs: reported on stderr, exit status 2."""


def add_tune_arguments(parser):
    """Declare the ``tune`` options on ``parser`` (an :class:`argparse.ArgumentParser`).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser (usually a sub-parser) to add the options to.

    Returns
    -------
    parser : argparse.ArgumentParser
        The same parser.
    """
    parser.add_argument("--dataset", help="dataset name (see skagegender.model.DATASETS); "
                        "needed unless --features is given")
    parser.add_argument("--root", help="folder of the dataset; needed unless --features is given")
    parser.add_argument("--target", required=True, choices=["age", "gender"],
                        help="which head to tune")
    parser.add_argument("--n-trials", type=int, default=50,
                        help="finished trials wanted in the study, counting those already "
                        "stored: rerunning an interrupted command only runs the missing ones "
                        "(default: 50)")
    parser.add_argument("--storage", required=True,
                        help="Optuna storage URL, e.g. sqlite:///tune.db; a server database "
                        "(postgresql://...) lets several machines work on one study")
    parser.add_argument("--study-name", help="default: DATASET-TARGET (or FEATURES-TARGET "
                        "with --features, FEATURES being the file name without .npz)")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many "
                        "seconds")
    parser.add_argument("--features", help="precomputed features, an .npz file with arrays X, "
                        "age, gender and optionally groups (subject ids); skips embedding")
    parser.add_argument("--cache", help="embedding cache folder (a second run re-uses it)")
    parser.add_argument("--limit", type=int, help="embed a seeded random subset of this many "
                        "images")
    parser.add_argument("--cv", type=int, default=5,
                        help="number of folds where the dataset protocol does not fix it "
                        "(default: 5)")
    parser.add_argument("--scoring", help="scorer name (default: one-class-off accuracy for "
                        "age, accuracy for gender)")
    parser.add_argument("--random-state", type=int, default=0,
                        help="seed of the sampler and of the folds (default: 0)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON (nothing else on stdout)")
    return parser


def _make_estimator(target):
    try:
        from skagegender.heads import AgeRegressor, GenderClassifier
    except ImportError as exc:
        raise _TuneError(
            f"skagegender.heads does not provide AgeRegressor/GenderClassifier ({exc})"
        ) from exc
    return AgeRegressor() if target == "age" else GenderClassifier()


def _make_search_space(target):
    from ._search import default_head_space

    return default_head_space(target)


def _labeled(target, age, gender):
    """Targets and the mask of samples that have them."""
    if target == "age":
        y = np.asarray(age, dtype=float)
        return y, np.isfinite(y)
    y = np.asarray(gender, dtype=object)
    known = np.array([v is not None and v == v and v != "" for v in y], dtype=bool)
    return y, known


def _from_features(args):
    path = Path(args.features)
    if not path.is_file():
        raise _TuneError(f"--features file not found: {path}")
    with np.load(path, allow_pickle=True) as data:
        missing = [k for k in ("X", args.target) if k not in data.files]
        if missing:
            raise _TuneError(f"{path} lacks the array(s) {missing}; it has {data.files}")
        X = np.asarray(data["X"], dtype=float)
        y, keep = _labeled(args.target, data["age"] if args.target == "age" else None,
                           data["gender"] if args.target == "gender" else None)
        groups = data["groups"] if "groups" in data.files else None
    keep &= np.all(np.isfinite(X), axis=1)
    X, y = X[keep], y[keep]
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    if groups is not None:
        groups = np.asarray(groups)[keep]
        cv = GroupKFold(args.cv, shuffle=True, random_state=args.random_state)
    elif args.target == "gender":
        cv = StratifiedKFold(args.cv, shuffle=True, random_state=args.random_state)
    else:
        cv = KFold(args.cv, shuffle=True, random_state=args.random_state)
    return X, y, groups, cv, f"{path.stem}-{args.target}"


def _from_dataset(args):
    if not args.dataset or not args.root:
        raise _TuneError("give --dataset and --root (or precomputed --features)")
    try:
        from skagegender.model import embed_dataset
    except ImportError as exc:
        raise _TuneError(
            f"embedding a dataset needs skagegender.model.embed_dataset ({exc}); "
            "pass precomputed --features instead"
        ) from exc
    from sklearn.utils import Bunch

    from ._splits import dataset_cv

    X, data = embed_dataset(args.dataset, args.root, cache=args.cache, limit=args.limit)
    y, keep = _labeled(args.target, data.age, data.gender)
    keep &= np.all(np.isfinite(X), axis=1)

    def subset(value):
        return None if value is None else np.asarray(value)[keep]

    split_data = Bunch(name=data.get("name", args.dataset), fold=subset(data.get("fold")),
                       subject=subset(data.get("subject")))
    cv, groups = dataset_cv(split_data, args.cv, random_state=args.random_state)
    return X[keep], y[keep], groups, cv, f"{args.dataset}-{args.target}"


def run_tune(args):
    """Run ``skagegender tune``: search the head for ``args.target`` and print the best.

    Features come from ``args.features`` (an .npz with ``X``, ``age``, ``gender`` and
    optionally ``groups``) or from embedding ``args.dataset`` under ``args.root``.
    Samples without a face (non-finite features) or without the target label are left
    out. The study is kept in ``args.storage``, so rerunning the same command after an
    interruption continues it up to ``args.n_trials`` finished trials.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by a parser set up with :func:`add_tune_arguments`.

    With ``--json`` one object is printed: ``target``, ``dataset``, ``features``,
    ``study_name``, ``storage``, ``n_samples``, ``n_splits``, ``n_trials`` (finished
    trials in the study), ``best_trial`` (its number), ``best_score``,
    ``best_trial_params`` (Optuna's parameters, e.g. ``{"head": "mlp", "mlp__alpha":
    0.01}``) and ``best_params`` (the estimator parameters, estimators as their repr).

    Returns
    -------
    status : int
        0 on success, 2 for bad inputs, 130 when interrupted (the finished trials are
        kept in the storage).
    """
    from ._search import HeadSearchCV

    try:
        if args.features:
            X, y, groups, cv, default_name = _from_features(args)
        else:
            X, y, groups, cv, default_name = _from_dataset(args)
        if len(y) == 0:
            raise _TuneError(f"no sample has both features and a {args.target} label")
        estimator = _make_estimator(args.target)
        search = HeadSearchCV(
            estimator,
            _make_search_space(args.target),
            scoring=args.scoring,
            cv=cv,
            n_trials=args.n_trials,
            timeout=args.timeout,
            storage=args.storage,
            study_name=args.study_name or default_name,
            refit=False,
            random_state=args.random_state,
            verbose=1,
        )
        search.fit(X, y, groups=groups)
    except _TuneError as exc:
        print(f"skagegender tune: error: {exc}", file=sys.stderr)
        return _USAGE_ERROR
    except KeyboardInterrupt:
        print("skagegender tune: interrupted; finished trials are kept in the storage, "
              "rerun the same command to continue", file=sys.stderr)
        return _INTERRUPTED

    result = {
        "target": args.target,
        "dataset": args.dataset,
        "features": args.features,
        "study_name": search.study_.study_name,
        "storage": args.storage,
        "n_samples": int(len(y)),
        "n_splits": search.n_splits_,
        "n_trials": search.n_trials_,
        "best_trial": search.study_.best_trial.number,
        "best_score": search.best_score_,
        "best_trial_params": search.study_.best_trial.params,
        "best_params": search.best_params_,
    }
    if args.json:
        print(json.dumps(result, default=repr))
    else:
        print(f"study {result['study_name']}: {result['n_trials']} finished trials on "
              f"{result['n_samples']} samples, {result['n_splits']} folds")
        print(f"best score: {result['best_score']:.4f} (trial {result['best_trial']})")
        print(f"best trial: {result['best_trial_params']}")
        print("best params:")
        for name, value in result["best_params"].items():
            print(f"  {name} = {value!r}")
    return 0
