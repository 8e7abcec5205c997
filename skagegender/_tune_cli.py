"""The ``skagegender tune`` sub-command: search a head's family and hyperparameters.

Part of the command-line layer: only :mod:`skagegender.cli` imports it.
``add_tune_arguments(parser)`` declares the options on an argparse (sub)parser and
``run_tune(args)`` runs the search and returns the exit status.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from ._archive import READ_ERRORS, ArchiveError, NotZipError, open_zip, zip_members
from ._utils import NotRegularFileError, known_labels, npy_header, open_regular_file
from .datasets import DATASETS

_USAGE_ERROR = 2
_INTERRUPTED = 130

# Seconds between a running trial's heartbeats; a trial silent for _GRACE_BEATS of them
# belonged to a worker that died.
_HEARTBEAT = 10
_GRACE_BEATS = 6

# Feature files are read within this many MiB (the arrays used, as declared in their
# headers, and the file itself): --max-features-mb changes it.
_MAX_FEATURES_MB = 2048
# A feature file has a handful of arrays; more members than this is not one.
_MAX_MEMBERS = 256

_EXIT_CODES = (
    "exit codes:\n"
    "  0    success\n"
    "  1    the search failed (e.g. the fits of every trial failed); the reason\n"
    "       is on stderr\n"
    "  2    usage or input error (e.g. a bad --features file, storage URL or a\n"
    "       stored study of another search)\n"
    "  130  interrupted (Ctrl-C); the finished trials are kept in the storage"
)


class _TuneError(Exception):
    """A problem with the command's inputs: reported on stderr, exit status 2."""


def _positive(kind, minimum=None):
    """An argparse type: a ``kind`` number above 0, or at least ``minimum``."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        ok = value > 0 if minimum is None else value >= minimum  # NaN is neither
        if not ok or not math.isfinite(value):
            bound = "above 0" if minimum is None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


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
    from .heads import AgeRegressor, GenderClassifier

    return AgeRegressor() if target == "age" else GenderClassifier()


def _make_search_space(target):
    from .model_selection import default_head_space

    return default_head_space(target)


def _labeled(target, age, gender):
    """Targets and the mask of samples that have them."""
    if target == "age":
        y = np.asarray(age, dtype=float)
        return y, np.isfinite(y)
    if gender is None:
        raise _TuneError("the data has no gender labels")
    y = np.asarray(gender)
    return y, known_labels(y)


# What each feature-file array must be: number of dimensions, allowed dtype kinds
# (b bool, i/u integers, f floats, U strings) and the words for error messages.
_COLUMNS = {
    "X": (2, "biuf", "a 2-D array of numbers (samples x features)"),
    "age": (1, "biuf", "a 1-D array of numbers (NaN when unknown)"),
    "gender": (1, "biufU", "a 1-D array of strings ('' when unknown) or numbers"),
    "groups": (1, "biufU", "a 1-D array of strings or integers"),
}


def _array_header(archive, item):
    """Shape and dtype declared in the .npy header of ``item``, without its data."""
    with archive.open(item) as member:
        return npy_header(member)


def _read_features(path, required, optional, max_bytes):
    """The arrays ``required`` and ``optional`` (when present) of the .npz at ``path``.

    The file is hostile until checked: only a regular file of at most ``max_bytes`` is
    opened, pickles are refused, and every array's header (shape, dtype) is checked
    against :data:`_COLUMNS`, the other arrays' length and ``max_bytes`` in total before
    any array data is read. Members other than the wanted ones are never read.
    """
    where = f"--features {path}"
    try:
        fh, info = open_regular_file(path)
    except NotRegularFileError:
        raise _TuneError(f"{where}: not a regular file") from None
    except OSError as exc:
        raise _TuneError(f"{where}: cannot open it: {exc.strerror}") from None
    with fh:
        if info.st_size > max_bytes:
            raise _TuneError(f"{where}: {info.st_size / 2**20:.0f} MiB, over the "
                             f"{max_bytes / 2**20:.0f} MiB limit (--max-features-mb)")
        magic = fh.read(6)
        if magic.startswith(b"\x80"):
            raise _TuneError(f"{where}: the file is a pickle; feature files are read without "
                             "unpickling (save plain arrays with np.savez)")
        if magic == b"\x93NUMPY":
            raise _TuneError(f"{where}: a single .npy array, not an .npz file of named "
                             "arrays (np.savez(path, X=..., age=..., gender=...))")
        try:  # arrays past 4 GiB need zip64 (np.savez writes it)
            archive = open_zip(fh, info.st_size, max_members=_MAX_MEMBERS, allow_zip64=True)
        except NotZipError as exc:
            raise _TuneError(f"{where}: not an .npz file ({exc})") from None
        except ArchiveError as exc:
            raise _TuneError(f"{where}: {exc}") from None
        with archive:
            try:
                infos = zip_members(archive, max_members=_MAX_MEMBERS)
            except ArchiveError as exc:
                raise _TuneError(f"{where}: {exc}") from None
            return _read_members(archive, infos.values(), where, required, optional,
                                 max_bytes)


def _read_members(archive, infos, where, required, optional, max_bytes):
    members = {}
    for item in infos:
        name = item.filename.removesuffix(".npy")
        if name in required or name in optional:
            if name in members:
                raise _TuneError(f"{where}: holds the array {name!r} twice")
            members[name] = item
    missing = [name for name in required if name not in members]
    if missing:
        names = sorted(item.filename.removesuffix(".npy") for item in infos)
        hint = ("; it looks like `skagegender embed` output, which has no labels: save X, "
                "age and gender with np.savez" if "embeddings" in names else "")
        raise _TuneError(f"{where}: lacks the array(s) {missing}; it has {names}{hint}")

    shapes, total = {}, 0
    for name, item in members.items():
        try:
            shape, dtype = _array_header(archive, item)
        except READ_ERRORS as exc:
            raise _TuneError(f"{where}: the array {name!r} cannot be read ({exc})") from None
        ndim, kinds, wanted = _COLUMNS[name]
        if dtype.hasobject:
            raise _TuneError(
                f"{where}: the array {name!r} holds Python objects, which only unpickling "
                "could read, and feature files are never unpickled; store it as "
                f"{wanted} (e.g. np.asarray(values, dtype=str) for labels)"
            )
        if len(shape) != ndim or dtype.kind not in kinds:
            raise _TuneError(f"{where}: the array {name!r} must be {wanted}; it is "
                             f"{len(shape)}-D of dtype {dtype}")
        shapes[name] = shape
        # X is used as float64: count what it becomes, not what the file declares.
        itemsize = max(dtype.itemsize, 8) if name == "X" else dtype.itemsize
        total += math.prod(shape) * itemsize
        if total > max_bytes:
            raise _TuneError(f"{where}: its arrays declare more than the "
                             f"{max_bytes / 2**20:.0f} MiB limit (--max-features-mb), "
                             "counting X as 8-byte floats, as it is used")
    n_samples, n_features = shapes["X"]
    if n_samples == 0 or n_features == 0:
        raise _TuneError(f"{where}: X is empty (shape {shapes['X']})")
    for name, shape in shapes.items():
        if shape[0] != n_samples:
            raise _TuneError(f"{where}: {name} has {shape[0]} entries but X has "
                             f"{n_samples} rows; every array needs one entry per sample")

    arrays = {}
    for name, item in members.items():
        try:
            with archive.open(item) as member:
                arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
            if name == "X":  # one copy at a time: the file's, then the float64 one
                arrays[name] = arrays[name].astype(float, copy=False)
        except MemoryError:
            raise _TuneError(f"{where}: not enough memory to read the array {name!r} (lower "
                             "--max-features-mb to refuse such files early)") from None
        except READ_ERRORS as exc:
            raise _TuneError(f"{where}: the array {name!r} cannot be read ({exc})") from None
    return arrays


def _from_features(args):
    path = Path(args.features)
    arrays = _read_features(path, ("X", args.target), ("groups",),
                            int(args.max_features_mb * 2**20))
    X = arrays.pop("X")  # float64 already (_read_members)
    y, keep = _labeled(args.target, arrays.get("age"), arrays.get("gender"))
    keep &= _finite_rows(X)
    if not keep.all():
        X = X[keep]
    y = y[keep]
    if len(y) < args.cv:
        raise _TuneError(f"--features {path}: {len(y)} samples have both features and "
                         f"the {args.target} label, fewer than --cv {args.cv}")
    groups = arrays.get("groups")
    if groups is not None:
        groups = groups[keep]
        if len(np.unique(groups)) < args.cv:
            raise _TuneError(f"--features {path}: {len(np.unique(groups))} distinct groups "
                             f"among the usable samples, fewer than --cv {args.cv}")
    # the groups are the subjects: a dataset without a protocol of its own
    cv, groups = _dataset_cv(None, None, groups, args)
    return X, y, groups, cv


def _finite_rows(X, block=4096):
    """Mask of the rows of ``X`` without NaN or infinity, a block of rows at a time."""
    mask = np.empty(len(X), dtype=bool)
    for start in range(0, len(X), block):
        mask[start:start + block] = np.isfinite(X[start:start + block]).all(axis=1)
    return mask


def _dataset_cv(name, fold, subject, args):
    """:func:`~skagegender.model_selection.dataset_cv` of the usable samples."""
    from sklearn.utils import Bunch

    from .model_selection import dataset_cv

    return dataset_cv(Bunch(name=name, fold=fold, subject=subject), args.cv,
                      random_state=args.random_state)


def _from_dataset(args):
    from . import datasets

    X, data = datasets.embed_dataset(args.dataset, args.root, cache=args.cache,
                                     limit=args.limit)
    y, keep = _labeled(args.target, data.age, data.gender)
    keep &= np.all(np.isfinite(X), axis=1)

    def subset(value):
        return None if value is None else np.asarray(value)[keep]

    cv, groups = _dataset_cv(data.get("name", args.dataset), subset(data.get("fold")),
                             subset(data.get("subject")), args)
    return X[keep], y[keep], groups, cv


def _default_study_name(args):
    if args.features:
        return f"{Path(args.features).stem}-{args.target}"
    if not args.dataset or not args.root:
        raise _TuneError("give --dataset and --root (or precomputed --features)")
    return f"{args.dataset}-{args.target}"


def _open_storage(url, heartbeat):
    """The Optuna storage at ``url``, with a heartbeat every ``heartbeat`` seconds."""
    from .model_selection import open_storage

    return open_storage(url, heartbeat_interval=heartbeat,
                        grace_period=_GRACE_BEATS * heartbeat)


def run_tune(args):
    """Run ``skagegender tune``: search the head for ``args.target`` and print the best.

    Features come from ``args.features`` (an .npz with ``X``, ``age``, ``gender`` and
    optionally ``groups``) or from embedding ``args.dataset`` under ``args.root``.
    Samples without a face (non-finite features) or without the target label are left
    out. The study is kept in ``args.storage``, so rerunning the same command after an
    interruption continues it up to ``args.n_trials`` finished trials.

    The feature file is read without unpickling: arrays of Python objects are refused,
    and each wanted array's header is checked (dimensions, dtype, one entry per row of
    ``X``, ``args.max_features_mb`` MiB for the file and for the arrays together, ``X``
    counted as float64) before its data is read. A stored study made for another target,
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
    from .model_selection import (
        HeadSearchCV,
        StudyError,
        check_study_trials,
        redact_storage_url,
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
    return 0
