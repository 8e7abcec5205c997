"""Scorers for model selection.

The metrics :func:`~skagegender.metrics.one_class_off_score`,
:func:`~skagegender.metrics.exact_class_score` and
:func:`~skagegender.metrics.cumulative_score` are scorers themselves, so they go
wherever scikit-learn takes ``scoring=``::

    cross_val_score(pipe, X, y, scoring=one_class_off_score)
    GridSearchCV(..., scoring={"1coa": one_class_off_score, "mae": "neg_mean_absolute_error"})

Names (``"one_class_off"``, ``"cs@5"`` ...) are resolved by :func:`get_scorer` and
accepted by :class:`~skagegender.model_selection.HeadSearchCV`. scikit-learn's own
functions check ``scoring`` strings against a list fixed when scikit-learn is
imported, with no public way to add to it: pass them the metric (or
``get_scorer(name)``), not the name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from sklearn.metrics import get_scorer as _sklearn_get_scorer
from sklearn.metrics import get_scorer_names as _sklearn_scorer_names
from sklearn.metrics import make_scorer

from ._age import cumulative_score, exact_class_score, one_class_off_score

__all__ = [
    "SCORERS",
    "cumulative_scorer",
    "exact_class_scorer",
    "get_scorer",
    "one_class_off_scorer",
]

#: One-class-off accuracy with 5-year classes (higher is better).
one_class_off_scorer = make_scorer(one_class_off_score)
#: Exact-class accuracy with 5-year classes (higher is better).
exact_class_scorer = make_scorer(exact_class_score)
#: CS@5: fraction within 5 years (higher is better).
cumulative_scorer = make_scorer(cumulative_score, threshold=5)

#: The names :func:`get_scorer` knows beyond scikit-learn's (and ``"cs@K"`` for any
#: whole number of years K).
SCORERS = {
    "one_class_off": one_class_off_scorer,
    "exact_class": exact_class_scorer,
    "cumulative_score": cumulative_scorer,
}

_CS_AT = re.compile(r"cs@(\d{1,3})")
# names a user may try for a lower-is-better metric: scorers are higher-is-better
_NEGATED = {"mae": "neg_mean_absolute_error", "mean_absolute_error": "neg_mean_absolute_error",
            "mse": "neg_mean_squared_error", "mean_squared_error": "neg_mean_squared_error",
            "rmse": "neg_root_mean_squared_error"}
# metric function names -> the scorer name
_METRIC_NAMES = {"one_class_off_score": "one_class_off", "exact_class_score": "exact_class",
                 "cs": "cs@5", "cs5": "cs@5"}


def _unknown(scoring):
    """The ValueError for an unknown scorer name, naming the spelling that works."""
    lowered = scoring.lower().replace("-", "_")
    hint = _NEGATED.get(lowered) or _METRIC_NAMES.get(lowered)
    if hint is None:
        names = [*SCORERS, "cs@5", *_sklearn_scorer_names()]
        close = difflib.get_close_matches(lowered, names, n=1, cutoff=0.6)
        hint = close[0] if close else None
    because = (" (scorers are higher-is-better, so an error is negated)"
               if lowered in _NEGATED else "")
    suggestion = f" Did you mean {hint!r}{because}?" if hint else ""
    return ValueError(
        f"{scoring!r} is not a scorer name.{suggestion} skagegender's names: "
        f"{', '.join(map(repr, SCORERS))}, 'cs@K' (CS@K, e.g. 'cs@5'); scikit-learn's: "
        "sklearn.metrics.get_scorer_names(). In scikit-learn's own functions "
        "(cross_val_score, GridSearchCV) pass the metric instead of the name: "
        "scoring=one_class_off_score."
    )


def get_scorer(scoring: str | Callable) -> Callable:
    """A scorer by name: skagegender's names first, then scikit-learn's.

    Parameters
    ----------
    scoring : str or callable
        ``"one_class_off"``, ``"exact_class"``, ``"cumulative_score"`` (CS@5),
        ``"cs@K"`` (CS@K for a whole number of years K), any name
        :func:`sklearn.metrics.get_scorer` knows, or a callable (returned as is).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)``, higher is better.

    Raises
    ------
    ValueError
        For an unknown name; the message names the closest known one (for
        ``"mae"``: ``"neg_mean_absolute_error"``).

    Examples
    --------
    >>> from skagegender.metrics import get_scorer, one_class_off_scorer
    >>> get_scorer("one_class_off") is one_class_off_scorer
    True
    >>> get_scorer("cs@10")
    make_scorer(cumulative_score, response_method='predict', threshold=10)
    >>> get_scorer("neg_mean_absolute_error")
    make_scorer(mean_absolute_error, greater_is_better=False, response_method='predict')
    """
    if not isinstance(scoring, str):
        return _sklearn_get_scorer(scoring)
    if scoring in SCORERS:
        return SCORERS[scoring]
    match = _CS_AT.fullmatch(scoring.lower())
    if match:
        return make_scorer(cumulative_score, threshold=int(match.group(1)))
    if scoring in _sklearn_scorer_names():
        return _sklearn_get_scorer(scoring)
    raise _unknown(scoring)
