"""Optuna storage and studies of :class:`HeadSearchCV`: opening a database shared by
workers, the record of what a study searches, seeding, and the trial attributes that
hold each trial's per-split results.

Optuna is imported when a storage is opened or a search is fitted, not when this
module is imported.
"""

import contextlib
import random
import time
import warnings

import numpy as np

__all__ = ["StudyError", "open_storage", "redact_storage_url"]

# Heartbeat used when ``storage`` is given as a URL: a running trial writes a heartbeat
# every _HEARTBEAT_INTERVAL seconds; a RUNNING trial whose heartbeat is older than
# _GRACE_PERIOD seconds belongs to a dead process and is marked FAIL.
_HEARTBEAT_INTERVAL = 10
_GRACE_PERIOD = 60

# Workers started at once on a fresh database race to create its tables (PostgreSQL: a
# duplicate key in pg_type; SQLite: "table ... already exists"; both: the schema version
# rows). The losers retry, up to _CREATE_ATTEMPTS times with a growing random pause: by
# then the winner has made the tables and they are only read.
_CREATE_ATTEMPTS = 8

# Seconds between two looks at the study while the other workers run its last trials.
_POLL_INTERVAL = 1.0

# User attribute of a trial that a worker created but did not run: the study already
# held n_trials finished or running trials (another worker took the last one).
_ATTR_NOT_RUN = "not_run"

# User attribute naming the worker ("host:pid") that ran a trial.
_ATTR_WORKER = "worker"

# Trial user attributes holding the per-fold results, so that ``cv_results_`` can be
# rebuilt from the storage alone (trials run by another process or an earlier fit).
_ATTR_TEST = "split_test_score"
_ATTR_TRAIN = "split_train_score"
_ATTR_FIT_TIME = "split_fit_time"
_ATTR_SCORE_TIME = "split_score_time"
_ATTR_ERRORS = "fit_errors"

# Study user attribute holding what the study searches (see HeadSearchCV._study_record):
# a stored study is continued only by a search of the same estimator, scorer, direction
# and search space.
_ATTR_SEARCH = "skagegender_search"

_OPTUNA_HINT = "HeadSearchCV needs optuna: pip install optuna (or skagegender[optuna])"


class StudyError(ValueError):
    """The storage cannot be opened, or the stored study belongs to another search."""


class _TrialNotRun(Exception):
    """A trial created when the study already held its ``n_trials`` (see ``_ATTR_NOT_RUN``)."""


def _import_optuna():
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - optuna is a test dependency
        raise ImportError(_OPTUNA_HINT) from exc
    return optuna


def _describe(obj):
    """A description of a scorer or search space that is the same in every process."""
    text = repr(obj)
    if " at 0x" in text or text.startswith("<"):  # default reprs carry a memory address
        name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
        module = getattr(obj, "__module__", None) or type(obj).__module__
        return f"{module}.{name}"
    return text


def _trial_seed(seed, number):
    """Seed of the sampler for trial ``number`` of a search seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class _TrialSeededSampler:
    """TPE whose randomness is seeded afresh for each trial from (seed, trial number).

    One random sequence per run (``TPESampler(seed=seed)``) replays the points of the
    first trials when a stored study is resumed, and two processes sharing a study propose
    the same points. The storage numbers a study's trials uniquely, so seeding each trial
    from its number keeps a fresh seeded search reproducible while resumed and parallel
    runs draw new points. TPE keeps no other state between trials: it reads the finished
    trials from the study each time.
    """

    def __init__(self, seed):
        self.seed = seed
        self._sampler = None

    def before_trial(self, study, trial):
        optuna = _import_optuna()
        self._sampler = optuna.samplers.TPESampler(seed=_trial_seed(self.seed, trial.number))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self):
        """Nothing to do: each trial's randomness is fixed by its number."""


def _shown_url(url):
    """``url`` with its password replaced by ``***``; None if it is not a database URL."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - unparseable: nothing of it may be echoed
        return None


def _without_password(text, url):
    """``text`` with the password of ``url`` (if any) replaced by ``***``."""
    from sqlalchemy.engine import make_url

    password = make_url(url).password
    return text.replace(str(password), "***") if password else text


def _is_creation_race(exc):
    """Whether ``exc`` is what a worker gets when another creates the same tables at once."""
    from sqlalchemy import exc as sql_errors

    if isinstance(exc, sql_errors.IntegrityError):
        return True
    return (isinstance(exc, (sql_errors.ProgrammingError, sql_errors.OperationalError))
            and "already exists" in str(exc))


def _retry_creation_race(create):
    """``create()``, retried while it loses a race with another worker creating the same."""
    jitter = random.SystemRandom()  # the workers' pauses must differ
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return create()
        except Exception as exc:
            if attempt == _CREATE_ATTEMPTS - 1 or not _is_creation_race(exc):
                raise
        time.sleep(min(1.0, 0.05 * 2**attempt) * jitter.uniform(0.5, 1.5))


def _open_storage(optuna, url, *, heartbeat_interval=_HEARTBEAT_INTERVAL,
                  grace_period=_GRACE_PERIOD):
    """An RDBStorage with heartbeat for ``url``; StudyError if it cannot be opened.

    Several workers may open a fresh database at once: creating its tables is retried
    when another worker creates them at the same moment. Messages never show the
    password.
    """
    shown = _shown_url(url)
    if shown is None:
        raise StudyError(
            "the storage URL cannot be parsed; give a database URL such as "
            "'sqlite:///tune.db' or 'postgresql://user:password@host/db'"
        )
    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            return _retry_creation_race(lambda: optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_interval, grace_period=grace_period
            ))
    except Exception as exc:
        reason = str(exc).split("\n")[0].split(" (Background on this error")[0]
        reason = _without_password(reason, url)  # some drivers echo the connection string
        hint = (" (does its folder exist, and is it a writable SQLite file?)"
                if shown.startswith("sqlite") else "")
        raise StudyError(f"cannot open the storage {shown!r}: {reason}{hint}") from exc


def open_storage(url, *, heartbeat_interval=_HEARTBEAT_INTERVAL, grace_period=_GRACE_PERIOD):
    """The Optuna storage of the database at ``url``, for workers that share a study.

    Each worker records a heartbeat every ``heartbeat_interval`` seconds while it runs a
    trial; a RUNNING trial without one for ``grace_period`` seconds belonged to a worker
    that died and is marked FAIL, so that another worker runs a trial in its place.
    Workers that open a fresh database at the same moment all succeed (creating its
    tables is retried when another worker creates them at once).

    Parameters
    ----------
    url : str
        A SQLAlchemy database URL, e.g. ``"sqlite:///tune.db"`` or
        ``"postgresql+psycopg://user:password@host/db"``.
    heartbeat_interval : int, default=10
        Seconds between the heartbeats of a running trial.
    grace_period : int, default=60
        Seconds without a heartbeat after which a running trial is marked FAIL.

    Returns
    -------
    storage : optuna.storages.RDBStorage
        To pass as ``storage`` to :class:`HeadSearchCV`.

    Raises
    ------
    StudyError
        If ``url`` cannot be parsed or the database cannot be opened; the message
        never shows the password.
    ImportError
        If optuna is not installed.
    """
    return _open_storage(_import_optuna(), url, heartbeat_interval=heartbeat_interval,
                         grace_period=grace_period)


def redact_storage_url(url):
    """``url`` as it may be printed: its password replaced by ``***``.

    Parameters
    ----------
    url : str
        A SQLAlchemy database URL.

    Returns
    -------
    shown : str or None
        The URL without its password, or None when ``url`` is not a database URL
        (nothing of it is shown then).

    Examples
    --------
    >>> redact_storage_url("postgresql://tuner:secret@db.example/tune")
    'postgresql://tuner:***@db.example/tune'
    """
    return _shown_url(url)


def _check_study(study, record):
    """Refuse ``study`` unless it maximizes and was created by a search like ``record``.

    A study without a record gets ``record`` if it holds no trial yet.
    """
    optuna = _import_optuna()
    name = study.study_name
    remedy = "give another study_name (--study-name) or storage"
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE]:
        directions = ", ".join(d.name.lower() for d in study.directions)
        raise StudyError(
            f"the stored study {name!r} has direction {directions}; HeadSearchCV maximizes "
            f"its score (higher is better), so its best trial would be the worst: {remedy}"
        )
    stored = study.user_attrs.get(_ATTR_SEARCH)
    if stored is None:
        n_trials = len(study.get_trials(deepcopy=False))
        if n_trials:
            raise StudyError(
                f"the stored study {name!r} holds {n_trials} trials of unknown origin (it "
                f"has no {_ATTR_SEARCH!r} record of what it searches): {remedy}"
            )
        study.set_user_attr(_ATTR_SEARCH, record)
        stored = study.user_attrs.get(_ATTR_SEARCH)  # a worker starting at once may differ
    if stored != record:
        if isinstance(stored, dict):
            changes = "; ".join(f"{key}: stored {stored.get(key)!r}, now {record.get(key)!r}"
                                for key in sorted(set(stored) | set(record))
                                if stored.get(key) != record.get(key))
        else:
            changes = f"its record is {stored!r}"
        raise StudyError(
            f"the stored study {name!r} belongs to another search ({changes}); its trials "
            f"cannot be continued or compared with this one: {remedy}"
        )


@contextlib.contextmanager
def _optuna_verbosity(optuna, verbose):
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose > 0 else optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _finished_states(optuna):
    """The trial states that count towards ``n_trials`` and appear in ``cv_results_``."""
    return (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
