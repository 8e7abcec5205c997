"""``skagegender tune``: search a head's family and hyperparameters with Optuna."""

import json
import sys

from ._common import (
    _COMMAND_CODES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    _positive,
    add_command,
)

# Seconds between a running trial's heartbeats; a trial silent for _GRACE_BEATS of them
# belonged to a worker that died.
_HEARTBEAT = 10
_GRACE_BEATS = 6
# Feature files are read within this many MiB (the arrays used, as declared in their
# headers, and the file itself): --max-features-mb changes it.
_MAX_FEATURES_MB = 2048

_EXIT_CODES = (
    "exit codes:\n"
    "  0    success\n"
    "  1    the search failed (e.g. the fits of every trial failed); the reason\n"
    "       is on stderr\n"
    "  2    usage or input error (e.g. a bad --features file, storage URL or a\n"
    "       stored study of another search)\n"
    "  130  interrupted (Ctrl-C); the finished trials are kept in the storage"
)


def add_arguments(sub):
    """Declare ``tune`` and its options on the sub-command parsers ``sub``."""
    p = add_command(sub, "tune", "Optuna search over heads (needs skagegender[optuna])",
                    _COMMAND_CODES,
                    "Optuna search over heads (needs skagegender[optuna]). Train a model with "
                    "the best head found: 'skagegender train ... --study STORAGE' (the study "
                    "names this command uses by default) or save '--json' output to a file and "
                    "pass 'train --params FILE'.")
    add_tune_arguments(p)
    p.set_defaults(func=run)
    return p


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
    from ..datasets import DATASETS

    parser.add_argument("--dataset", choices=DATASETS,
                        help="dataset name; needed unless --features is given (default: none)")
    parser.add_argument("--root", help="folder of the dataset; needed unless --features is "
                        "given (default: none)")
    parser.add_argument("--target", required=True, choices=["age", "gender"],
                        help="which head to tune (required)")
    parser.add_argument("--n-trials", type=_positive(int), default=50,
                        help="finished trials wanted in the study, counting those already "
                        "stored: rerunning an interrupted command only runs the missing ones "
                        "(default: %(default)s)")
    parser.add_argument("--storage", required=True,
                        help="Optuna storage URL (required), e.g. sqlite:///tune.db; a server "
                        "database (postgresql+psycopg://user:password@host/db) lets several "
                        "processes or machines work on one study: start the same command in "
                        "each, together they run --n-trials trials. A stored study is "
                        "continued only by the same target, scoring and search space. The "
                        "password is never printed")
    parser.add_argument("--heartbeat", type=_positive(int), default=_HEARTBEAT,
                        help="seconds between the heartbeats a worker records while it runs "
                        "a trial; a RUNNING trial without one for 6 heartbeats belongs to a "
                        "worker that died (killed, machine lost): it is marked FAIL and a "
                        "live worker runs another trial in its place (default: %(default)s)")
    parser.add_argument("--study-name", help="name of the study in the storage (default: "
                        "DATASET-TARGET, or FEATURES-TARGET with --features, FEATURES being "
                        "the file name without .npz)")
    parser.add_argument("--timeout", type=_positive(float), help="stop starting trials "
                        "after this many seconds (default: no limit)")
    parser.add_argument("--features", help="precomputed features instead of embedding a "
                        "dataset: an .npz file (np.savez) with arrays X (n x d numbers), age "
                        "(n numbers, NaN when unknown), gender (n strings, '' when unknown) "
                        "and optionally groups (n strings or integers, e.g. subject ids). "
                        "Arrays of Python objects (pickles) are refused (default: none, embed "
                        "--dataset)")
    parser.add_argument("--max-features-mb", type=_positive(float), default=_MAX_FEATURES_MB,
                        help="largest --features file, and largest total size of the arrays "
                        "read from it, in MiB, X counted as 8-byte floats as it is used; "
                        "reading takes at most about twice this (default: %(default)s)")
    parser.add_argument("--cache", help="embedding cache folder; a second run re-uses it "
                        "(default: no cache)")
    parser.add_argument("--limit", type=_positive(int), help="embed a seeded random subset of "
                        "this many images (default: all)")
    parser.add_argument("--cv", type=_positive(int, 2), default=5,
                        help="number of folds where the dataset protocol does not fix it "
                        "(default: %(default)s)")
    parser.add_argument("--scoring", help="scorer name, higher is better (default: "
                        "one-class-off accuracy for age, accuracy for gender)")
    parser.add_argument("--random-state", type=int, default=0,
                        help="seed of the sampler and of the folds; each trial's seed also "
                        "depends on its number, so a resumed study or a second worker draws "
                        "new points (default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object, nothing else on stdout "
                        "(default: plain text)")
    parser.epilog = _EXIT_CODES  # tune's own meaning of 1 and 2
    return parser


def _make_estimator(target):
    from ..heads import AgeRegressor, GenderClassifier

    return AgeRegressor() if target == "age" else GenderClassifier()


def _make_search_space(target):
    from ..model_selection import default_head_space

    return default_head_space(target)


def _open_storage(url, heartbeat):
    """The Optuna storage at ``url``, with a heartbeat every ``heartbeat`` seconds."""
    from ..model_selection import open_storage

    return open_storage(url, heartbeat_interval=heartbeat,
                        grace_period=_GRACE_BEATS * heartbeat)


def run(args):
    """Run ``skagegender tune``: search the head for ``args.target`` and print the best.

    Features come from ``args.features`` (an .npz with ``X``, ``age``, ``gender`` and
    optionally ``groups``) or from embedding ``args.dataset`` under ``args.root``.
    Samples without a face (non-finite features) or without the target label are left
    out. The study is kept in ``args.storage``, so rerunning the same command after an
    interruption continues it up to ``args.n_trials`` finished trials.

    The feature file is read as hostile (no unpickling, every array's header checked
    before its data is read, ``args.max_features_mb`` MiB at most). A stored study made for another target,
    scorer or search space, or one that minimizes, is refused before any trial runs, and
    so is one holding trials this search could not have written (a score that is not
    finite, outside the scorer's range or not the mean of its splits; parameters outside
    the search space): nothing is written to it. The JSON output is strict (no NaN or
    Infinity).

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
        0 on success, 2 for bad inputs (feature file, storage, study), 130 when
        interrupted (the finished trials are kept in the storage). A search whose trials
        all fail raises ``ValueError`` (``skagegender.cli`` exits with 1).
    """
    from ..model_selection import (
        HeadSearchCV,
        StudyError,
        check_study_trials,
        redact_storage_url,
    )
    from ._tune_inputs import (
        _default_study_name,
        _from_dataset,
        _from_features,
        _TuneError,
    )

    try:
        default_name = _default_study_name(args)  # also checks that there is data
        search = HeadSearchCV(
            _make_estimator(args.target),
            _make_search_space(args.target),
            scoring=args.scoring,
            n_trials=args.n_trials,
            timeout=args.timeout,
            storage=_open_storage(args.storage, args.heartbeat),
            study_name=args.study_name or default_name,
            refit=False,
            random_state=args.random_state,
            verbose=1,
        )
        study = search.open_study()  # a bad storage or another search's study: before any embedding
        check_study_trials(search, study, when="in the storage")
        if args.features:
            X, y, groups, cv = _from_features(args)
        else:
            X, y, groups, cv = _from_dataset(args)
        if len(y) == 0:
            raise _TuneError(f"no sample has both features and a {args.target} label")
        search.set_params(cv=cv).fit(X, y, groups=groups)
        check_study_trials(search, search.study_, when="after the search")
    except (_TuneError, StudyError) as exc:
        print(f"skagegender tune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("skagegender tune: interrupted; finished trials are kept in the storage, "
              "rerun the same command to continue", file=sys.stderr)
        return EXIT_INTERRUPTED

    result = {
        "target": args.target,
        "dataset": args.dataset,
        "features": args.features,
        "study_name": search.study_.study_name,
        "storage": redact_storage_url(args.storage),
        "n_samples": len(y),
        "n_splits": search.n_splits_,
        "n_trials": search.n_trials_,
        "best_trial": search.study_.best_trial.number,
        "best_score": search.best_score_,
        "best_trial_params": search.study_.best_trial.params,
        "best_params": search.best_params_,
    }
    if args.json:
        print(json.dumps(result, default=repr, allow_nan=False))
    else:
        print(f"study {result['study_name']}: {result['n_trials']} finished trials on "
              f"{result['n_samples']} samples, {result['n_splits']} folds")
        print(f"best score: {result['best_score']:.4f} (trial {result['best_trial']})")
        print(f"best trial: {result['best_trial_params']}")
        print("best params:")
        for name, value in result["best_params"].items():
            print(f"  {name} = {value!r}")
    return EXIT_OK

