"""Age metrics: age classes, one-class-off accuracy, cumulative score, error report."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import mean_absolute_error
from sklearn.utils import check_consistent_length

from .._utils import ADIENCE_AGE_GROUPS, AGE_GROUP_EDGES, round_age
from ._base import metric_and_scorer

__all__ = [
    "ADIENCE_EDGES",
    "FIVE_YEAR_EDGES",
    "age_classes",
    "age_error_report",
    "cumulative_score",
    "exact_class_score",
    "one_class_off_score",
]

#: Lower edges of the default classes: 0-4, 5-9, ..., 80-84, 85+ (18 classes).
FIVE_YEAR_EDGES = np.arange(0, 90, 5)

# Adience groups 0-2, 4-6, 8-13, 15-20, 25-32, 38-43, 48-53, 60+. An age in a gap
# goes to the nearer group; the midpoint of a gap goes to the older group. That is the
# same as lower edges at the gap midpoints.
#: Lower edges equivalent to the 8 Adience groups with gaps assigned to the nearer group.
ADIENCE_EDGES = np.array(
    [0.0] + [(hi + lo) / 2 for (_, hi), (lo, _) in pairwise(ADIENCE_AGE_GROUPS)]
)

# age groups of age_error_report, by true age: (label, lowest age, highest age)
_REPORT_AGE_GROUPS = [
    *((f"{low:.0f}-{high - 1:.0f}", low, high - 1)
      for low, high in pairwise((0.0, *AGE_GROUP_EDGES))),
    (f"{AGE_GROUP_EDGES[-1]:.0f}+", AGE_GROUP_EDGES[-1], np.inf),
]


def age_group_labels(ages: ArrayLike) -> np.ndarray:
    """The report age group of each age: "0-12", "13-19", "20-39", "40-59" or "60+".

    The groups of :func:`age_error_report`, :func:`interval_report` and
    :func:`calibration_report`, after rounding ages to whole years; "" where the
    age is unknown (NaN).

    Parameters
    ----------
    ages : array-like of shape (n_samples,)

    Returns
    -------
    labels : ndarray of shape (n_samples,), dtype object

    Examples
    --------
    >>> from skagegender.metrics import age_group_labels
    >>> age_group_labels([3, 12.5, 19.4, 45, float("nan")]).tolist()
    ['0-12', '13-19', '13-19', '40-59', '']
    """
    rounded = round_age(ages)
    labels = np.full(len(rounded), "", dtype=object)
    for label, low, high in _REPORT_AGE_GROUPS:
        labels[(rounded >= low) & (rounded <= high)] = label
    return labels


def _edges(bins):
    if bins is None:
        return FIVE_YEAR_EDGES
    if isinstance(bins, str):
        if bins == "adience":
            return ADIENCE_EDGES
        raise ValueError(f"Unknown bins {bins!r}; use None, 'adience' or an array of edges.")
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("bins must be a strictly increasing 1-d array of at least 2 lower edges.")
    return edges


def age_classes(ages: ArrayLike, *, bins: str | ArrayLike | None = None) -> np.ndarray:
    """Age class index of each age.

    Ages are first rounded to the nearest whole year (halves up, so 4.5 -> 5). With
    lower edges ``e_0 < e_1 < ... < e_{K-1}``, class ``k`` holds the rounded ages
    ``e_k <= a < e_{k+1}``; the last class is open above and ages below ``e_0`` fall in
    class 0. NaN ages give class ``-10`` (never within one class of a real class).

    Parameters
    ----------
    ages : array-like of shape (n_samples,)
    bins : None, "adience" or array-like of shape (n_classes,), default=None
        ``None``: 5-year classes 0-4, 5-9, ..., 80-84, 85+ (18 classes).
        ``"adience"``: the 8 Adience groups 0-2, 4-6, 8-13, 15-20, 25-32, 38-43, 48-53,
        60+; an age in a gap goes to the nearer group and a tie (3, 7, 14, 35 after
        rounding) to the older one. An array: sorted lower edges.

    Returns
    -------
    classes : ndarray of shape (n_samples,)
        Integer class indices.

    Examples
    --------
    >>> from skagegender.metrics import age_classes
    >>> age_classes([0, 4.4, 4.5, 85, 116]).tolist()
    [0, 0, 1, 17, 17]
    >>> age_classes([2, 3, 21, 23, 35, 60], bins="adience").tolist()
    [0, 1, 3, 4, 5, 7]
    """
    ages = np.asarray(ages, dtype=float)
    classes = np.maximum(np.searchsorted(_edges(bins), round_age(ages), side="right") - 1, 0)
    return np.where(np.isnan(ages), -10, classes)


def _validate(y_true, y_pred, sample_weight):
    y_true = np.asarray(y_true, dtype=float).ravel()
    y_pred = np.asarray(y_pred, dtype=float).ravel()
    check_consistent_length(y_true, y_pred, sample_weight)
    if np.isnan(y_true).any():
        raise ValueError("y_true contains NaN.")
    return y_true, y_pred


def _class_score(y_true, y_pred, bins, sample_weight, max_distance):
    """Fraction of predicted age classes at most ``max_distance`` classes from the truth."""
    y_true, y_pred = _validate(y_true, y_pred, sample_weight)
    distance = np.abs(age_classes(y_pred, bins=bins) - age_classes(y_true, bins=bins))
    return float(np.average(distance <= max_distance, weights=sample_weight))


@metric_and_scorer
def one_class_off_score(y_true: ArrayLike, y_pred: ArrayLike, *,
                        bins: str | ArrayLike | None = None,
                        sample_weight: ArrayLike | None = None) -> float:
    """One-class-off accuracy: fraction whose predicted class is within one class.

    Both ages are rounded to the nearest whole year (halves up) and binned by
    :func:`age_classes`; a prediction counts as correct when
    ``|class(y_pred) - class(y_true)| <= 1``. A NaN prediction counts as wrong.

    It is also a scorer: ``cross_val_score(estimator, X, y,
    scoring=one_class_off_score)`` (and ``GridSearchCV``, ``HeadSearchCV``) calls
    ``one_class_off_score(estimator, X, y)``, which scores ``estimator.predict(X)``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True ages.
    y_pred : array-like of shape (n_samples,)
        Predicted ages (any real values; rounded before binning).
    bins : None, "adience" or array-like of shape (n_classes,), default=None
        See :func:`age_classes`: 5-year classes with 85+ by default.
    sample_weight : array-like of shape (n_samples,), default=None

    Returns
    -------
    score : float
        In [0, 1], higher is better.

    Examples
    --------
    >>> from skagegender.metrics import one_class_off_score
    >>> one_class_off_score([22, 22, 22, 22], [17, 26.4, 31, 90])
    0.5
    """
    return _class_score(y_true, y_pred, bins, sample_weight, max_distance=1)


@metric_and_scorer
def exact_class_score(y_true: ArrayLike, y_pred: ArrayLike, *,
                      bins: str | ArrayLike | None = None,
                      sample_weight: ArrayLike | None = None) -> float:
    """Exact-class accuracy: fraction whose predicted class equals the true class.

    Same rounding and classes as :func:`one_class_off_score`; NaN predictions are wrong.
    Also a scorer, like :func:`one_class_off_score`: ``scoring=exact_class_score``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_pred : array-like of shape (n_samples,)
    bins : None, "adience" or array-like of shape (n_classes,), default=None
    sample_weight : array-like of shape (n_samples,), default=None

    Returns
    -------
    score : float
        In [0, 1], higher is better.

    Examples
    --------
    >>> from skagegender.metrics import exact_class_score
    >>> exact_class_score([22, 22], [24.4, 24.5])
    0.5
    """
    return _class_score(y_true, y_pred, bins, sample_weight, max_distance=0)


@metric_and_scorer
def cumulative_score(y_true: ArrayLike, y_pred: ArrayLike, *, threshold: float = 5,
                     sample_weight: ArrayLike | None = None) -> float:
    """Cumulative score CS@k: fraction with absolute error at most ``threshold`` years.

    The error is taken on the predictions as given (no rounding); NaN predictions are
    wrong.

    Also a scorer, like :func:`one_class_off_score`: ``scoring=cumulative_score`` scores
    CS@5, ``scoring=functools.partial(cumulative_score, threshold=10)`` CS@10.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_pred : array-like of shape (n_samples,)
    threshold : float, default=5
    sample_weight : array-like of shape (n_samples,), default=None

    Returns
    -------
    score : float
        In [0, 1], higher is better.

    Examples
    --------
    >>> from skagegender.metrics import cumulative_score
    >>> cumulative_score([30, 30, 30], [35, 35.5, float("nan")])
    0.3333333333333333
    """
    y_true, y_pred = _validate(y_true, y_pred, sample_weight)
    hit = np.abs(y_pred - y_true) <= threshold
    return float(np.average(hit, weights=sample_weight))


def _report_row(group_type, group, y_true, y_pred):
    present = ~np.isnan(y_pred)
    return {
        "group_type": group_type,
        "group": group,
        "n": len(y_true),
        "n_missing": int((~present).sum()),
        "mae": (
            float(mean_absolute_error(y_true[present], y_pred[present]))
            if present.any()
            else float("nan")
        ),
        "one_class_off": one_class_off_score(y_true, y_pred),
        "cs5": cumulative_score(y_true, y_pred, threshold=5),
    }


def age_error_report(y_true: ArrayLike, y_pred: ArrayLike, *,
                     groups: dict[str, ArrayLike] | None = None) -> list[dict]:
    """Age errors overall, per true-age group and per given group labels.

    Missing predictions (NaN, e.g. no face found) are excluded from the MAE and counted
    in ``n_missing``; they count as wrong in one-class-off and CS@5, so those two are
    fractions of all ``n`` samples.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True ages.
    y_pred : array-like of shape (n_samples,)
        Predicted ages, NaN where missing.
    groups : dict of str to array-like of shape (n_samples,), default=None
        Extra groupings, e.g. ``{"gender": gender, "race": race}``.

    Returns
    -------
    records : list of dict
        One dict per group with keys ``group_type`` (``"all"``, ``"age_group"`` or a key
        of ``groups``), ``group``, ``n``, ``n_missing``, ``mae``, ``one_class_off``
        (5-year classes) and ``cs5``. Age groups by true age: 0-12, 13-19, 20-39,
        40-59, 60+ (empty groups are left out). ``pandas.DataFrame(records)`` makes a
        table.

    Examples
    --------
    >>> from skagegender.metrics import age_error_report
    >>> rows = age_error_report([5, 30, 70], [7, 31, float("nan")],
    ...                         groups={"gender": ["f", "m", "m"]})
    >>> [(r["group_type"], r["group"], r["n"], r["n_missing"], r["mae"]) for r in rows]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('all', 'all', 3, 1, 1.5), ('age_group', '0-12', 1, 0, 2.0),
     ('age_group', '20-39', 1, 0, 1.0), ('age_group', '60+', 1, 1, nan),
     ('gender', 'f', 1, 0, 2.0), ('gender', 'm', 2, 1, 1.0)]
    """
    y_true, y_pred = _validate(y_true, y_pred, None)
    records = [_report_row("all", "all", y_true, y_pred)]
    labels = age_group_labels(y_true)
    for label, _, _ in _REPORT_AGE_GROUPS:
        mask = labels == label
        if mask.any():
            records.append(_report_row("age_group", label, y_true[mask], y_pred[mask]))
    for name, labels in (groups or {}).items():
        labels = np.asarray(labels)
        check_consistent_length(y_true, labels)
        for value in np.unique(labels):
            mask = labels == value
            group = value.item() if hasattr(value, "item") else value
            records.append(_report_row(name, group, y_true[mask], y_pred[mask]))
    return records
