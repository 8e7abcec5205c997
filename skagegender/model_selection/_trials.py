"""Trials of a stored study checked against the search that continues it.

A study in a shared database can be edited by anyone who can write to it: a trial
with a forged score would be reported as the best, and one with parameters outside
the search space breaks every new trial. :func:`check_study_trials` refuses such a
study before a search uses it.
"""

import math
import warnings

import numpy as np

from ._space import _sample_params
from ._storage import _ATTR_TEST, StudyError, _import_optuna

__all__ = ["check_study_trials"]


#: Scorers whose values lie in [0, 1]: these names and their variants (``f1_macro``, ...).
_UNIT_SCORERS = ("one_class_off", "exact_class", "cumulative_score", "accuracy",
                 "balanced_accuracy", "top_k_accuracy", "average_precision", "roc_auc", "f1",
                 "precision", "recall", "jaccard")


def _score_range(scoring):
    """The values the scorer ``scoring`` (a name, None for the default) can give."""
    if scoring is None:  # one-class-off accuracy (age) or accuracy (gender)
        return 0.0, 1.0
    if not isinstance(scoring, str):  # a callable: any value
        return -math.inf, math.inf
    if scoring.startswith("neg_"):
        return -math.inf, 0.0
    if scoring in ("r2", "explained_variance") or scoring.startswith("d2_"):
        return -math.inf, 1.0
    if scoring == "matthews_corrcoef":
        return -1.0, 1.0
    if any(scoring == name or scoring.startswith(name + "_") for name in _UNIT_SCORERS):
        return 0.0, 1.0
    return -math.inf, math.inf


def _trial_problem(search, trial, score_range, optuna):
    """Why ``trial`` is not one this search could have written, or None.

    A finished trial's score must be finite, within the scorer's range and the mean
    of its stored per-split scores; every trial's parameters must be the ones the
    search space asks for given them, each within its distribution, and recorded
    with a distribution Optuna accepts beside the space's (a categorical parameter
    with other choices makes every new trial fail).
    """
    if trial.state == optuna.trial.TrialState.COMPLETE:
        value, (low, high) = trial.value, score_range
        if value is None or not math.isfinite(value) or not low <= value <= high:
            return f"score {value!r} outside the scorer's range [{low}, {high}]"
        splits = trial.user_attrs.get(_ATTR_TEST)
        try:
            mean = float(np.mean(np.asarray(splits, dtype=float)))
        except (TypeError, ValueError):
            mean = math.nan
        if not math.isclose(mean, value, rel_tol=1e-9, abs_tol=1e-12):
            return f"score {value!r} is not the mean of its per-split scores {splits!r}"
    if not trial.params:
        return None
    finished = trial.state == optuna.trial.TrialState.COMPLETE
    replay, complete = optuna.trial.FixedTrial(trial.params), True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _sample_params(search.search_space, replay)
        except (ValueError, TypeError, KeyError) as exc:
            # A trial stopped while its parameters were drawn may lack the last ones.
            if finished or "is not found" not in str(exc):
                return f"parameters {trial.params!r} outside the search space ({exc})"
            complete = False
    outside = [str(w.message) for w in caught if "out of the range" in str(w.message)]
    if outside:
        return outside[0]
    extra = sorted(set(trial.params) - set(replay.distributions))
    if extra and complete:
        return f"parameters {extra} that the search space never asks for"
    for name, asked in replay.distributions.items():
        stored = trial.distributions.get(name)
        try:
            optuna.distributions.check_distribution_compatibility(stored, asked)
        except (ValueError, AttributeError):
            return f"parameter {name!r} recorded over {stored}, the search space has {asked}"
    return None


def check_study_trials(search, study, *, when="in the storage"):
    """Refuse a study holding trials ``search`` could not have written (forged, edited).

    Such a trial would be reported as the best (a score of inf, or 5.0 for an
    accuracy) or break every new trial (a categorical parameter with other choices).
    A finished trial's score must be finite, within the range of ``search.scoring``
    and the mean of its stored per-split scores; every trial's parameters must be
    those ``search.search_space`` asks for, each within its distribution. Nothing is
    written to the study.

    Parameters
    ----------
    search : HeadSearchCV
        The search whose ``search_space`` and ``scoring`` the trials must fit.
    study : optuna.study.Study
        The study, e.g. from :meth:`HeadSearchCV.open_study` or ``search.study_``.
    when : str, default="in the storage"
        Words placed after the study's name in the message.

    Raises
    ------
    StudyError
        Naming up to three such trials and why each is refused.
    """
    optuna = _import_optuna()
    score_range = _score_range(search.scoring)
    bad = []
    for trial in study.get_trials(deepcopy=False):
        problem = _trial_problem(search, trial, score_range, optuna)
        if problem is not None:
            bad.append(f"trial {trial.number}: {problem}")
    if bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise StudyError(
            f"the study {study.study_name!r} {when} holds {len(bad)} "
            f"trial{'s' if len(bad) != 1 else ''} that this search could not have written "
            f"({shown}); nothing was written to it. Delete the study or pass another "
            "--study-name"
        )
