"""Scorers for model selection.

scikit-learn has no public way to add names to its scorer registry (only the private
``sklearn.metrics._scorer._SCORERS``), so ``scoring="one_class_off"`` as a plain string
is not registered. Pass the scorer objects, or names resolved by :func:`get_scorer`::

    GridSearchCV(..., scoring={"1coa": one_class_off_scorer, "mae": "neg_mean_absolute_error"})
    cross_val_score(est, X, y, scoring=get_scorer("one_class_off"))
"""

from sklearn.metrics import get_scorer as _sklearn_get_scorer
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

#: The names :func:`get_scorer` knows beyond scikit-learn's.
SCORERS = {
    "one_class_off": one_class_off_scorer,
    "exact_class": exact_class_scorer,
    "cumulative_score": cumulative_scorer,
}


def get_scorer(scoring):
    """A scorer by name: skagegender's names first, then scikit-learn's.

    Parameters
    ----------
    scoring : str or callable
        ``"one_class_off"``, ``"exact_class"``, ``"cumulative_score"``, any name
        :func:`sklearn.metrics.get_scorer` knows, or a callable (returned as is).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)``.

    Examples
    --------
    >>> from skagegender.metrics import get_scorer, one_class_off_scorer
    >>> get_scorer("one_class_off") is one_class_off_scorer
    True
    >>> get_scorer("neg_mean_absolute_error")
    make_scorer(mean_absolute_error, greater_is_better=False, response_method='predict')
    """
    if isinstance(scoring, str) and scoring in SCORERS:
        return SCORERS[scoring]
    return _sklearn_get_scorer(scoring)
