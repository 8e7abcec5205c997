"""The objective of a :class:`HeadSearchCV` trial: fit and score the sampled estimator
on every split, report the running mean to the pruner and store the per-split results.
"""

import time
import traceback
import warnings
from collections import Counter

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import (
    clone,
)
from sklearn.exceptions import FitFailedWarning
from sklearn.utils import _safe_indexing
from sklearn.utils.metaestimators import _safe_split
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import _num_samples

from ._space import _sample_params
from ._storage import (
    _ATTR_ERRORS,
    _ATTR_FIT_TIME,
    _ATTR_SCORE_TIME,
    _ATTR_TEST,
    _ATTR_TRAIN,
    _import_optuna,
)


def _summarize_errors(errors):
    """Distinct tracebacks with their counts, as GridSearchCV reports them."""
    delimiter = "-" * 80 + "\n"
    summary = "\n".join(
        f"{delimiter}{n} fits failed with the following error:\n{error}"
        for error, n in Counter(errors).items()
    )
    return f"Below are more details about the failures:\n{summary}"


def _fit_and_score(estimator, X, y, scorer, train, test, fit_params, return_train, error_score):
    """Fit on one split and score; a failure gives ``error_score`` and its traceback."""
    X_train, y_train = _safe_split(estimator, X, y, train)
    X_test, y_test = _safe_split(estimator, X, y, test, train)
    n_samples = _num_samples(X)
    fit_params = {
        k: _safe_indexing(v, train) if hasattr(v, "__len__") and len(v) == n_samples else v
        for k, v in fit_params.items()
    }
    result = {"test": error_score, "train": error_score, "score_time": 0.0, "error": None}
    start = time.perf_counter()
    try:
        estimator.fit(X_train, y_train, **fit_params)
        result["fit_time"] = time.perf_counter() - start
        start = time.perf_counter()
        result["test"] = float(scorer(estimator, X_test, y_test))
        result["score_time"] = time.perf_counter() - start
        if return_train:
            result["train"] = float(scorer(estimator, X_train, y_train))
    except Exception:
        if isinstance(error_score, str) and error_score == "raise":
            raise
        result.setdefault("fit_time", time.perf_counter() - start)
        result["error"] = traceback.format_exc()
    return result


def _warn_fit_errors(fit_errors, n_fits, error_score):
    """Warn, as GridSearchCV does, that some of the ``n_fits`` fits of this call failed."""
    warnings.warn(
        f"\n{len(fit_errors)} fits failed out of a total of {n_fits}.\n"
        f"The score on these splits was set to {error_score}; a trial with a NaN "
        "score ends FAIL and is left out of cv_results_. You can debug the errors "
        f"by setting error_score='raise'.\n\n{_summarize_errors(fit_errors)}",
        FitFailedWarning,
    )


class _TrialObjective:
    """The Optuna objective of one :meth:`HeadSearchCV.fit`: the mean score over the splits.

    Each trial fits and scores a clone of the estimator with the sampled parameters on
    every split, ``n_jobs`` splits at a time; after each batch it reports the running mean
    so that the pruner may stop the trial. The per-split results are stored in the trial's
    user attributes. ``n_fits`` and ``fit_errors`` count over all the trials of this call.
    """

    def __init__(self, search, X, y, splits, scorer, fit_params):
        self.search = search
        self.X, self.y = X, y
        self.splits = splits
        self.scorer = scorer
        self.fit_params = fit_params
        self.batch = max(1, min(len(splits), effective_n_jobs(search.n_jobs)))
        self.parallel = Parallel(n_jobs=search.n_jobs)
        self.n_fits = 0
        self.fit_errors = []

    def __call__(self, trial):
        optuna = _import_optuna()
        search = self.search
        n_splits = len(self.splits)
        params = _sample_params(search.search_space, trial)
        base = clone(search.estimator).set_params(**clone(params, safe=False))
        results = {attr: [np.nan] * n_splits
                   for attr in (_ATTR_TEST, _ATTR_TRAIN, _ATTR_FIT_TIME, _ATTR_SCORE_TIME)}
        errors = []
        for start in range(0, n_splits, self.batch):
            indices = range(start, min(start + self.batch, n_splits))
            self._fit_batch(base, indices, results, errors)
            for i in indices:
                running = np.mean(results[_ATTR_TEST][: i + 1])
                if np.isfinite(running):
                    trial.report(float(running), step=i)
            if indices[-1] < n_splits - 1 and trial.should_prune():
                self._record(trial, results, errors)
                raise optuna.TrialPruned()
        self._record(trial, results, errors)
        return float(np.mean(results[_ATTR_TEST]))

    def _fit_batch(self, base, indices, results, errors):
        """Fit and score clones of ``base`` on the splits ``indices``, in parallel."""
        search = self.search
        outcomes = self.parallel(
            delayed(_fit_and_score)(
                clone(base), self.X, self.y, self.scorer, *self.splits[i], self.fit_params,
                search.return_train_score, search.error_score,
            )
            for i in indices
        )
        self.n_fits += len(indices)
        for i, outcome in zip(indices, outcomes):
            results[_ATTR_TEST][i] = outcome["test"]
            results[_ATTR_TRAIN][i] = outcome["train"]
            results[_ATTR_FIT_TIME][i] = outcome["fit_time"]
            results[_ATTR_SCORE_TIME][i] = outcome["score_time"]
            if outcome["error"] is not None:
                errors.append(outcome["error"])
                self.fit_errors.append(outcome["error"])

    def _record(self, trial, results, errors):
        """Store the trial's per-split results: once per trial, each is a database write."""
        for attr in (_ATTR_TEST, _ATTR_FIT_TIME, _ATTR_SCORE_TIME):
            trial.set_user_attr(attr, results[attr])
        if self.search.return_train_score:
            trial.set_user_attr(_ATTR_TRAIN, results[_ATTR_TRAIN])
        if errors:
            trial.set_user_attr(_ATTR_ERRORS, errors)
