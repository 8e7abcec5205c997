"""HeadSearchCV: search over head families with Optuna, shaped like GridSearchCV.

Optuna is imported when a search is fitted, not when this module is imported, so
``import skagegender.model_selection`` stays cheap (``pip install optuna`` to fit).
"""

import copy
import json
import os
import socket
import time
import warnings
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from scipy.stats import rankdata
from sklearn.base import (
    BaseEstimator,
    MetaEstimatorMixin,
    _fit_context,
    clone,
    is_classifier,
)
from sklearn.exceptions import NotFittedError
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state, get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, indexable

from ._objective import _summarize_errors, _TrialObjective, _warn_fit_errors
from ._space import _sample_params
from ._storage import (
    _ATTR_ERRORS,
    _ATTR_FIT_TIME,
    _ATTR_NOT_RUN,
    _ATTR_SCORE_TIME,
    _ATTR_TEST,
    _ATTR_TRAIN,
    _ATTR_WORKER,
    _POLL_INTERVAL,
    StudyError,
    _check_study,
    _describe,
    _finished_states,
    _import_optuna,
    _open_storage,
    _optuna_verbosity,
    _retry_creation_race,
    _TrialNotRun,
    _TrialSeededSampler,
    _without_password,
)

__all__ = ["HeadSearchCV"]


def _search_estimator_has(attr):
    """Check that the refit best estimator (or, before fit, the estimator) has ``attr``."""

    def check(self):
        if hasattr(self, "best_estimator_"):
            getattr(self.best_estimator_, attr)
            return True
        if not self.refit:
            raise AttributeError(
                f"This {type(self).__name__} was initialized with refit=False; {attr} is "
                "available only after refitting on the best parameters."
            )
        getattr(self.estimator, attr)
        return True

    return check


def _delegate_to_best(method, summary, returns):
    """A method of the search that calls ``method`` of ``best_estimator_`` on ``X``.

    It exists only when the best estimator (before fit: the estimator) has ``method``.
    """

    def delegated(self, X):
        check_is_fitted(self)
        return getattr(self.best_estimator_, method)(X)

    delegated.__name__ = delegated.__qualname__ = method
    delegated.__doc__ = f"""{summary}

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        {returns}
            ``best_estimator_.{method}(X)``.
        """
    return available_if(_search_estimator_has(method))(delegated)


def _final_estimator(estimator):
    while hasattr(estimator, "steps"):
        estimator = estimator.steps[-1][1]
    return estimator


def _is_age_regressor(estimator):
    from ..heads import AgeRegressor

    return isinstance(_final_estimator(estimator), AgeRegressor)


class HeadSearchCV(MetaEstimatorMixin, BaseEstimator):
    """Search hyperparameters, head families included, with Optuna and cross-validation.

    The interface of :class:`~sklearn.model_selection.GridSearchCV`, with the candidates
    proposed one trial at a time by an Optuna sampler (TPE by default) instead of a grid.
    Each trial sets the sampled parameters on a clone of ``estimator``, fits and scores it
    on every cross-validation split, and reports the running mean score after each split
    so that an Optuna ``pruner`` can stop a poor trial after its first splits.

    Parameters
    ----------
    estimator : estimator object
        The estimator (or pipeline) to tune. Its parameters are set with ``set_params``,
        so search space keys are parameter paths such as ``"age__head__alpha"``.

    search_space : callable or dict
        What to search.

        - A callable ``search_space(trial) -> dict`` (define-by-run): it asks the Optuna
          ``trial`` for values (``trial.suggest_categorical``, ``trial.suggest_float``, ...)
          and returns the estimator parameters to set. Conditional spaces, such as one
          set of hyperparameters per head family, are written with ``if``. The callable
          must depend on the trial only: it is replayed on an
          :class:`optuna.trial.FixedTrial` to rebuild the parameters of stored trials.
          Give a picklable object (a module-level function or class) if the search is to
          be pickled. :func:`default_head_space` returns one for the heads of
          :mod:`skagegender.heads`.
        - A dict ``{parameter path: optuna distribution}`` for a flat space, e.g.
          ``{"ridge__alpha": FloatDistribution(1e-3, 1e3, log=True)}``.

    scoring : str, callable or None, default=None
        Higher is better. A string is resolved by :func:`skagegender.metrics.get_scorer`
        (which knows ``"one_class_off"`` and falls back to scikit-learn's names, e.g.
        ``"neg_mean_absolute_error"``). None uses the one-class-off scorer when the
        estimator is an :class:`~skagegender.heads.AgeRegressor` (or a pipeline ending in
        one) and the estimator's ``score`` method otherwise.

    cv : int, cross-validation generator or iterable, default=5
        As in GridSearchCV (:func:`~sklearn.model_selection.check_cv`). Pass
        ``GroupKFold`` and ``groups`` to :meth:`fit` for subject-disjoint splits.

    n_trials : int or None, default=20
        The number of finished (COMPLETE or PRUNED) trials wanted in the study. A fresh
        study runs ``n_trials`` trials; a resumed study (see ``storage``) runs only the
        missing ones, so an interrupted search restarted with the same arguments ends
        with ``n_trials`` finished trials in total. Trials that fail (all-NaN score,
        killed process) do not count towards the total but do use up the current call's
        budget. None runs until ``timeout``.

    timeout : float or None, default=None
        Stop starting new trials after this many seconds.

    pruner : optuna.pruners.BasePruner or None, default=None
        Decides, after each split, whether to stop a trial; for example
        ``MedianPruner(n_warmup_steps=1)``. None never prunes, so every trial is scored
        on all splits as in GridSearchCV.

    sampler : optuna.samplers.BaseSampler or None, default=None
        Proposes the trials. None uses TPE (:class:`optuna.samplers.TPESampler`) seeded
        per trial from ``random_state`` and the trial's number (see ``random_state``). A
        given sampler is copied at each :meth:`fit` and used as it is: a seeded one
        replays its first points when a stored study is resumed or shared.

    storage : str, optuna.storages.BaseStorage or None, default=None
        Where the study lives. None keeps it in memory for this fit only. A database URL
        such as ``"sqlite:///search.db"`` makes the search resumable: with the same
        ``study_name`` and ``load_if_exists=True`` a new fit continues the stored study
        (all its finished trials count and appear in ``cv_results_``). Any URL that
        :class:`optuna.storages.RDBStorage` accepts works; with a server database
        (``"postgresql+psycopg://user:password@host/db"``) several processes or machines
        can fit the same search at once, also on a fresh database, and share the work:
        together they run exactly ``n_trials`` finished trials, and each returns once
        the study holds them (waiting, if need be, for the trials still running
        elsewhere). Each trial records the worker that ran it (``"host:pid"``) in its
        ``"worker"`` user attribute. A URL gets a heartbeat: a trial left RUNNING by a
        killed process is marked FAIL once its heartbeat is more than 60 s old (checked
        at the start and end of :meth:`fit`, before each trial and while waiting), and
        a live worker runs another in its place. Pass an ``RDBStorage`` built with your
        own ``heartbeat_interval``/``grace_period`` to change that; with a storage
        without heartbeat such trials stay RUNNING (they do not count towards
        ``n_trials``) and concurrent workers may finish a few trials more than asked. A
        URL that cannot be parsed or a database that cannot be opened raises a
        ``ValueError`` naming the problem (the password is not shown).

        The study records what it searches in its user attribute
        ``"skagegender_search"``: the estimator's class, the scorer, the direction
        (maximize) and the search space. A stored study is continued only by a search
        with the same record; any other study of that name (another estimator or target,
        scorer or space, a study that minimizes, or one with trials but no record) raises a
        ``ValueError`` before any trial runs.

    study_name : str or None, default=None
        Name of the study in ``storage``. Needed to resume; None lets Optuna generate one.

    load_if_exists : bool, default=True
        Continue the study named ``study_name`` if it is in ``storage``; if False, an
        existing study of that name is an error.

    refit : bool, default=True
        Refit the estimator with the best parameters on the whole data
        (``best_estimator_``), enabling ``predict`` and the other delegated methods.

    random_state : int, RandomState instance or None, default=None
        Seeds the default TPE sampler: a fresh seeded search of a deterministic estimator
        proposes the same trials and finds the same ``best_params_`` every time. Each
        trial's randomness comes from this seed and the trial's number in the study, so a
        resumed study and several processes sharing one study draw new points instead of
        replaying the first ones. Ignored when ``sampler`` is given. Seed the estimator
        itself too if it is random.

    n_jobs : int or None, default=1
        Number of processes (joblib) fitting the splits of one trial in parallel. Trials
        themselves run one after another, so the sampler sees every finished trial and a
        seeded search stays reproducible; the pruner is asked after each batch of
        ``n_jobs`` splits. To run trials in parallel, start several fits on one
        ``storage``. None means 1 unless in a joblib context; -1 uses all processors.

    error_score : 'raise' or float, default=np.nan
        Score of a split whose fit or scoring fails. 'raise' raises the error. With NaN,
        a trial with a failed split ends FAIL (Optuna rejects NaN objectives) and is left
        out of ``cv_results_``; if no trial completes, :meth:`fit` raises.

    return_train_score : bool, default=False
        Also score each split's training part.

    verbose : int, default=0
        0 silences Optuna's per-trial log lines; >0 shows them.

    Attributes
    ----------
    cv_results_ : dict of ndarray
        One entry per finished trial of the study (COMPLETE or PRUNED), in trial order:
        ``number`` (Optuna trial number), ``state`` ("COMPLETE" or "PRUNED"), ``params``,
        ``param_<name>`` (masked arrays), ``split{i}_test_score`` (NaN for splits a pruned
        trial did not reach), ``mean_test_score``, ``std_test_score`` (NaN for pruned
        trials), ``rank_test_score`` (pruned trials rank last), ``mean_fit_time``,
        ``std_fit_time``, ``mean_score_time``, ``std_score_time`` and, with
        ``return_train_score``, the ``*_train_score`` keys. Loads into a DataFrame.

    best_estimator_ : estimator
        The estimator refit with ``best_params_`` on all the data (``refit=True`` only).

    best_params_ : dict
        Estimator parameters of the best trial.

    best_score_ : float
        Mean cross-validated score of the best trial.

    best_index_ : int
        Index of the best trial in ``cv_results_``.

    study_ : optuna.study.Study
        The study, with every trial (failed ones included).

    n_trials_ : int
        Number of finished (COMPLETE or PRUNED) trials in the study.

    n_splits_ : int
        Number of cross-validation splits.

    scorer_ : callable
        The scorer used for the search and by :meth:`score`.

    refit_time_ : float
        Seconds spent refitting the best estimator.

    classes_ : ndarray of shape (n_classes,)
        Class labels (classifiers, ``refit=True`` only).

    n_features_in_ : int
        Number of features seen during :meth:`fit` (``refit=True`` only).

    See Also
    --------
    sklearn.model_selection.GridSearchCV : Exhaustive search over a grid.
    default_head_space : Search space over the head families of :mod:`skagegender.heads`.

    Examples
    --------
    >>> from optuna.distributions import FloatDistribution
    >>> from sklearn.datasets import make_regression
    >>> from sklearn.linear_model import Ridge
    >>> from skagegender.model_selection import HeadSearchCV
    >>> X, y = make_regression(n_samples=60, n_features=5, noise=1.0, random_state=0)
    >>> search = HeadSearchCV(
    ...     Ridge(), {"alpha": FloatDistribution(1e-3, 1e3, log=True)},
    ...     n_trials=8, cv=3, random_state=0,
    ... ).fit(X, y)
    >>> sorted(search.best_params_)
    ['alpha']
    >>> len(search.cv_results_["mean_test_score"])
    8

    A conditional space chooses a model family, then that family's parameters:

    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.neighbors import KNeighborsRegressor
    >>> def space(trial):
    ...     family = trial.suggest_categorical("family", ["ridge", "knn"])
    ...     if family == "ridge":
    ...         alpha = trial.suggest_float("ridge_alpha", 1e-3, 1e3, log=True)
    ...         return {"model": Ridge(alpha=alpha)}
    ...     k = trial.suggest_int("knn_k", 1, 15)
    ...     return {"model": KNeighborsRegressor(n_neighbors=k)}
    >>> pipe = make_pipeline(StandardScaler(), Ridge())
    >>> pipe.steps[-1] = ("model", pipe.steps[-1][1])
    >>> search = HeadSearchCV(pipe, space, n_trials=6, cv=3, random_state=0).fit(X, y)
    >>> type(search.best_params_["model"]).__name__ in {"Ridge", "KNeighborsRegressor"}
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        "estimator": [HasMethods(["fit"])],
        "search_space": [dict, callable],
        "scoring": [str, callable, None],
        "cv": ["cv_object"],
        "n_trials": [Interval(Integral, 1, None, closed="left"), None],
        "timeout": [Interval(Real, 0, None, closed="neither"), None],
        "pruner": [HasMethods(["prune"]), None],
        "sampler": [HasMethods(["sample_relative", "sample_independent"]), None],
        "storage": [str, HasMethods(["get_all_trials"]), None],
        "study_name": [str, None],
        "load_if_exists": ["boolean"],
        "refit": ["boolean"],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "error_score": [StrOptions({"raise"}), Real],
        "return_train_score": ["boolean"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        estimator,
        search_space,
        *,
        scoring=None,
        cv=5,
        n_trials=20,
        timeout=None,
        pruner=None,
        sampler=None,
        storage=None,
        study_name=None,
        load_if_exists=True,
        refit=True,
        random_state=None,
        n_jobs=1,
        error_score=np.nan,
        return_train_score=False,
        verbose=0,
    ):
        self.estimator = estimator
        self.search_space = search_space
        self.scoring = scoring
        self.cv = cv
        self.n_trials = n_trials
        self.timeout = timeout
        self.pruner = pruner
        self.sampler = sampler
        self.storage = storage
        self.study_name = study_name
        self.load_if_exists = load_if_exists
        self.refit = refit
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        sub_tags = get_tags(self.estimator)
        tags.estimator_type = sub_tags.estimator_type
        tags.classifier_tags = copy.deepcopy(sub_tags.classifier_tags)
        tags.regressor_tags = copy.deepcopy(sub_tags.regressor_tags)
        tags.target_tags = copy.deepcopy(sub_tags.target_tags)
        tags.input_tags.pairwise = sub_tags.input_tags.pairwise
        tags.input_tags.sparse = sub_tags.input_tags.sparse
        return tags

    def _get_scorer(self):
        if callable(self.scoring):
            # scikit-learn's check: a metric function of its own is refused with a
            # message naming make_scorer
            return check_scoring(self.estimator, self.scoring)
        if isinstance(self.scoring, str):
            from ..metrics import get_scorer

            return get_scorer(self.scoring)
        if _is_age_regressor(self.estimator):
            from ..metrics import one_class_off_scorer

            return one_class_off_scorer
        return check_scoring(self.estimator)

    def _study_record(self, scorer):
        """What this search is, as stored in (and checked against) the study."""
        final = _final_estimator(self.estimator)
        estimator = type(self.estimator).__name__
        if final is not self.estimator:
            estimator += f" ending in {type(final).__name__}"
        if isinstance(self.search_space, dict):
            space = {name: repr(dist) for name, dist in sorted(self.search_space.items())}
        else:
            space = _describe(self.search_space)
        record = {"estimator": estimator, "scorer": _describe(scorer),
                  "direction": "maximize", "search_space": space}
        return json.loads(json.dumps(record))  # as the storage gives it back

    def _create_study(self, optuna, record):
        storage = self.storage
        if isinstance(storage, str):
            storage = _open_storage(optuna, storage)
        if self.sampler is not None:
            sampler = copy.deepcopy(self.sampler)
        elif self.random_state is None:
            sampler = optuna.samplers.TPESampler()
        else:
            seed = self.random_state
            if not isinstance(seed, Integral):
                seed = int(check_random_state(seed).randint(np.iinfo(np.int32).max))
            sampler = _TrialSeededSampler(seed)
        pruner = optuna.pruners.NopPruner() if self.pruner is None else copy.deepcopy(self.pruner)

        def create():
            study = optuna.create_study(
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                study_name=self.study_name,
                direction="maximize",
                load_if_exists=self.load_if_exists,
            )
            _check_study(study, record)
            return study

        try:
            return _retry_creation_race(create)  # workers starting at once create it together
        except (optuna.exceptions.DuplicatedStudyError, StudyError):
            raise
        except Exception as exc:
            if isinstance(storage, optuna.storages.RDBStorage):  # not usable as a storage
                reason = _without_password(str(exc), storage.url)
                raise StudyError(f"cannot create or load the study in the storage: {reason}") \
                    from exc
            raise

    def open_study(self):
        """Create or load the study in ``storage`` now and check that it is this search's.

        :meth:`fit` does the same first. Calling it before costly work (loading or
        embedding the data) reports early, and quietly otherwise, a storage that cannot
        be opened or a stored study of another search. No trial is run.

        Returns
        -------
        study : optuna.study.Study
            The study named ``study_name`` in ``storage``.

        Raises
        ------
        StudyError
            If the storage cannot be opened, or the stored study belongs to another
            search (see ``storage``).
        """
        self._validate_params()
        optuna = _import_optuna()
        self._check_search_params(optuna)
        with _optuna_verbosity(optuna, 0), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            return self._create_study(optuna, self._study_record(self._get_scorer()))

    def _params_of(self, frozen_trial):
        """Estimator parameters of a stored trial, replayed through the search space."""
        optuna = _import_optuna()
        return _sample_params(self.search_space, optuna.trial.FixedTrial(frozen_trial.params))

    @_fit_context(prefer_skip_nested_validation=False)  # estimator is validated by its own fit
    def fit(self, X, y=None, groups=None, **fit_params):
        """Run the search, then refit the best parameters on all the data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.

        y : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
            Targets.

        groups : array-like of shape (n_samples,), default=None
            Group labels (e.g. subject ids) for a group-aware ``cv`` such as GroupKFold.

        **fit_params : dict
            Passed to the estimator's ``fit``; arrays of length n_samples are split with
            the data.

        Returns
        -------
        self : HeadSearchCV
            The fitted search.
        """
        optuna = _import_optuna()
        self._check_search_params(optuna)
        X, y, groups = indexable(X, y, groups)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        splits = list(cv.split(X, y, groups))
        scorer = self._get_scorer()
        objective = _TrialObjective(self, X, y, splits, scorer, fit_params)
        study = self._run_study(optuna, objective, self._study_record(scorer))

        self.study_ = study
        self.n_splits_ = len(splits)
        self.scorer_ = scorer
        trials = study.get_trials(deepcopy=False, states=_finished_states(optuna))
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
            self._raise_all_failed(study)
        if objective.fit_errors:
            _warn_fit_errors(objective.fit_errors, objective.n_fits, self.error_score)
        self._set_best(study, trials)
        if self.refit:
            self._refit(X, y, fit_params)
        return self

    def _check_search_params(self, optuna):
        """What ``_parameter_constraints`` cannot say: the search ends, the space is Optuna's."""
        if self.n_trials is None and self.timeout is None:
            raise ValueError("n_trials and timeout cannot both be None: the search would not end")
        if isinstance(self.search_space, dict):
            for name, dist in self.search_space.items():
                if not isinstance(dist, optuna.distributions.BaseDistribution):
                    raise TypeError(
                        f"search_space[{name!r}] must be an optuna distribution, got {dist!r}; "
                        "use a callable search_space for anything else"
                    )

    def _run_study(self, optuna, objective, record):
        """Create or resume the study and run the trials it still lacks; returns the study."""
        with _optuna_verbosity(optuna, self.verbose), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            study = self._create_study(optuna, record)
            optuna.storages.fail_stale_trials(study)
            if self.n_trials is None:
                study.optimize(objective, timeout=self.timeout)
            else:
                self._run_missing_trials(optuna, study, objective)
            optuna.storages.fail_stale_trials(study)
        return study

    def _run_missing_trials(self, optuna, study, objective):
        """Run trials until ``study`` holds ``n_trials`` finished ones, with any other workers.

        Other processes may work on the same study. Each trial, once created, counts the
        trials numbered before it that are finished, running or waiting; if they already
        fill ``n_trials`` it is not run (it ends FAIL with the ``not_run`` user
        attribute), so the study never holds more than ``n_trials`` finished trials. A
        trial that runs records its worker, ``"host:pid"``, in the ``worker`` attribute. When
        the trials still running elsewhere would fill the study, this process waits for
        them: if one of their workers dies, its trial is marked FAIL once its heartbeat is
        ``grace_period`` old, and this process runs a trial in its place. That needs a
        storage with heartbeat (a URL gets one); without, the others' running trials are
        not waited for and concurrent workers may finish a few trials more than asked.
        At most ``n_trials`` minus the finished trials found at the start are run here
        (failed trials included), and none is started after ``timeout``.
        """
        state = optuna.trial.TrialState
        storage = study._storage
        get_interval = getattr(storage, "get_heartbeat_interval", None)
        heartbeat = callable(get_interval) and get_interval() is not None
        finished = _finished_states(optuna)
        claims = (*finished, state.WAITING) + ((state.RUNNING,) if heartbeat else ())

        def claimed(trial):
            taken = sum(t.number < trial.number
                        for t in study.get_trials(deepcopy=False, states=claims))
            if taken >= self.n_trials:
                reason = (f"the study already held {self.n_trials} finished or running "
                          "trials (another worker took the last one)")
                trial.set_user_attr(_ATTR_NOT_RUN, reason)
                raise _TrialNotRun(f"not run: {reason}")
            trial.set_user_attr(_ATTR_WORKER, f"{socket.gethostname()}:{os.getpid()}")
            return objective(trial)

        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        budget = self.n_trials - len(study.get_trials(deepcopy=False, states=finished))
        while budget > 0 and (deadline is None or time.monotonic() < deadline):
            trials = study.get_trials(deepcopy=False)
            n_done = sum(t.state in finished for t in trials)
            n_running = sum(t.state == state.RUNNING for t in trials) if heartbeat else 0
            if n_done >= self.n_trials:
                break
            if n_done + n_running >= self.n_trials:  # the others' trials would fill it
                time.sleep(_POLL_INTERVAL)
                optuna.storages.fail_stale_trials(study)
                continue
            try:
                study.optimize(claimed, n_trials=1)
            except _TrialNotRun:
                continue  # another worker took the last slot first: look again
            budget -= 1

    def _set_best(self, study, trials):
        """``n_trials_``, ``cv_results_`` and the ``best_*`` attributes from the finished trials."""
        self.n_trials_ = len(trials)
        self.cv_results_ = self._format_results(trials, self.n_splits_)
        # the best of these trials: another worker may finish a better one meanwhile,
        # which study.best_trial would name although it is not among them
        done = _import_optuna().trial.TrialState.COMPLETE
        complete = [i for i, t in enumerate(trials) if t.state == done]
        self.best_index_ = max(complete, key=lambda i: trials[i].value)
        self.best_params_ = self.cv_results_["params"][self.best_index_]
        self.best_score_ = float(trials[self.best_index_].value)

    def _refit(self, X, y, fit_params):
        """Fit ``best_estimator_`` with ``best_params_`` on all the data."""
        self.best_estimator_ = clone(self.estimator).set_params(
            **clone(self.best_params_, safe=False)
        )
        start = time.perf_counter()
        if y is None:
            self.best_estimator_.fit(X, **fit_params)
        else:
            self.best_estimator_.fit(X, y, **fit_params)
        self.refit_time_ = time.perf_counter() - start
        if hasattr(self.best_estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.best_estimator_.feature_names_in_

    def _raise_all_failed(self, study):
        details = _summarize_errors(
            [error for t in study.trials for error in t.user_attrs.get(_ATTR_ERRORS, [])]
        )
        raise ValueError(
            f"No trial of {len(study.trials)} completed; all their fits failed or the "
            "study holds no finished trial. You can debug the error by setting "
            f"error_score='raise'.\n\n{details}"
        )

    def _format_results(self, trials, n_splits):
        optuna = _import_optuna()
        n = len(trials)
        complete = np.array([t.state == optuna.trial.TrialState.COMPLETE for t in trials])
        params = [self._params_of(t) for t in trials]
        results = {
            "number": np.array([t.number for t in trials]),
            "state": np.array([t.state.name for t in trials], dtype=object),
            "params": params,
        }
        for name in sorted({key for p in params for key in p}):
            column = np.ma.MaskedArray(np.empty(n, dtype=object), mask=True)
            for i, p in enumerate(params):
                if name in p:
                    column[i] = p[name]
            results[f"param_{name}"] = column

        def splits(attr):
            table = np.full((n, n_splits), np.nan)
            for i, t in enumerate(trials):
                values = np.asarray(t.user_attrs.get(attr, []), dtype=float)[:n_splits]
                table[i, : len(values)] = values
            return table

        for key, attr in [("fit_time", _ATTR_FIT_TIME), ("score_time", _ATTR_SCORE_TIME)]:
            table = splits(attr)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
                results[f"mean_{key}"] = np.nanmean(table, axis=1)
                results[f"std_{key}"] = np.nanstd(table, axis=1)

        sets = ["test", "train"] if self.return_train_score else ["test"]
        for kind in sets:
            table = splits(_ATTR_TEST if kind == "test" else _ATTR_TRAIN)
            for i in range(n_splits):
                results[f"split{i}_{kind}_score"] = table[:, i]
            mean = np.where(complete, table.mean(axis=1), np.nan)
            results[f"mean_{kind}_score"] = mean
            results[f"std_{kind}_score"] = np.where(complete, table.std(axis=1), np.nan)
            if kind == "test":
                # Like GridSearchCV: rank 1 is best; NaN means (pruned) share the last rank.
                finite = np.isfinite(mean)
                ranks = np.full(n, finite.sum() + 1, dtype=np.int32)
                ranks[finite] = rankdata(-mean[finite], method="min").astype(np.int32)
                results["rank_test_score"] = ranks
        return results

    predict = _delegate_to_best(
        "predict", "Predict with the best estimator.",
        "y_pred : ndarray of shape (n_samples,)")
    predict_proba = _delegate_to_best(
        "predict_proba", "Class probabilities from the best estimator.",
        "proba : ndarray of shape (n_samples, n_classes)")
    predict_log_proba = _delegate_to_best(
        "predict_log_proba", "Log class probabilities from the best estimator.",
        "log_proba : ndarray of shape (n_samples, n_classes)")
    decision_function = _delegate_to_best(
        "decision_function", "Decision function of the best estimator.",
        "scores : ndarray of shape (n_samples,) or (n_samples, n_classes)")
    transform = _delegate_to_best(
        "transform", "Transform with the best estimator.",
        "Xt : ndarray of shape (n_samples, n_output_features)")

    @available_if(_search_estimator_has("score"))
    def score(self, X, y=None):
        """Score of the best estimator with the search's scorer (``scorer_``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        y : array-like of shape (n_samples,), default=None
            True targets.

        Returns
        -------
        score : float
            ``scorer_(best_estimator_, X, y)``; higher is better.
        """
        check_is_fitted(self)
        return self.scorer_(self.best_estimator_, X, y)

    @property
    def classes_(self):
        """Class labels of the best estimator (classifiers, ``refit=True`` only)."""
        _search_estimator_has("classes_")(self)
        return self.best_estimator_.classes_

    @property
    def n_features_in_(self):
        """Number of features seen during :meth:`fit` (``refit=True`` only)."""
        try:
            check_is_fitted(self)
        except NotFittedError as exc:
            raise AttributeError(
                f"{type(self).__name__} object has no n_features_in_ attribute."
            ) from exc
        return self.best_estimator_.n_features_in_

    def __sklearn_is_fitted__(self):
        return hasattr(self, "study_")
