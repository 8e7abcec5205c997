"""Calibration of predicted probabilities and age intervals.

- :func:`expected_calibration_error`: ECE of top-label probabilities.
- :func:`interval_coverage`: how often an interval holds the true value.
- :func:`interval_report`: coverage and mean width of age intervals overall, per
  true-age group and per given group labels.
- :func:`calibration_report`: accuracy, mean confidence and ECE of probabilities
  overall, per true-age group and per given group labels.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import check_consistent_length

from ._age import _REPORT_AGE_GROUPS, age_group_labels

__all__ = [
    "calibration_report",
    "expected_calibration_error",
    "interval_coverage",
    "interval_report",
    "reliability_bins",
]


def expected_calibration_error(y_true: ArrayLike, y_proba: ArrayLike, *, n_bins: int = 10,
                               labels: ArrayLike | None = None) -> float:
    """Expected calibration error (ECE) of the top-label probability.

    Samples are binned by their confidence (largest predicted probability) into
    ``n_bins`` equal-width bins over [0, 1]; ECE is the sample-weighted mean over bins of
    ``|accuracy - mean confidence|``. Rows with NaN probabilities are ignored.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_proba : array-like of shape (n_samples, n_classes) or (n_samples,)
        Probabilities with columns in the order of ``labels``; a 1-d array is the
        probability of the larger of two labels.
    n_bins : int, default=10
    labels : array-like of shape (n_classes,), default=None
        Sorted labels of the columns; ``np.unique(y_true)`` by default.

    Returns
    -------
    ece : float
        In [0, 1], lower is better.

    Examples
    --------
    >>> from skagegender.metrics import expected_calibration_error
    >>> expected_calibration_error([0, 1, 1, 1], [0.75, 0.75, 0.75, 0.75])
    0.0
    >>> expected_calibration_error(["f", "m"], [[0.9, 0.1], [0.9, 0.1]])
    0.4
    """
    y_true = np.asarray(y_true)
    y_proba = np.asarray(y_proba, dtype=float)
    check_consistent_length(y_true, y_proba)
    if y_proba.ndim == 1:
        y_proba = np.column_stack((1 - y_proba, y_proba))
    labels = np.unique(y_true) if labels is None else np.asarray(labels)
    if y_proba.shape[1] != len(labels):
        raise ValueError(
            f"y_proba has {y_proba.shape[1]} columns but there are {len(labels)} labels."
        )
    present = ~np.isnan(y_proba).any(axis=1)
    y_true, y_proba = y_true[present], y_proba[present]
    confidence = y_proba.max(axis=1)
    correct = labels[y_proba.argmax(axis=1)] == y_true
    return _binned_ece(*reliability_bins(correct, confidence, n_bins=n_bins))


def _binned_ece(count, accuracy, mean_confidence):
    """ECE of :func:`reliability_bins`: the count-weighted mean ``|accuracy - confidence|``."""
    used = count > 0
    gaps = np.abs(accuracy[used] - mean_confidence[used])
    return float((count[used] * gaps).sum() / count.sum())


def reliability_bins(correct: ArrayLike, confidence: ArrayLike, *,
                     n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples, accuracy and mean confidence per equal-width confidence bin over [0, 1].

    The bins of :func:`expected_calibration_error` and of
    :class:`~skagegender.metrics.GenderReliabilityDisplay`; a confidence of 1 is in
    the last bin.

    Parameters
    ----------
    correct : array-like of shape (n_samples,)
        Whether each prediction is right (bool or 0/1).
    confidence : array-like of shape (n_samples,)
        The probability given to each prediction, in [0, 1].
    n_bins : int, default=10

    Returns
    -------
    count : ndarray of shape (n_bins,)
    accuracy, mean_confidence : ndarray of shape (n_bins,)
        NaN for an empty bin.
    """
    correct = np.asarray(correct, dtype=float)
    confidence = np.asarray(confidence, dtype=float)
    check_consistent_length(correct, confidence)
    index = np.clip((confidence * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
        mean_confidence = np.bincount(index, weights=confidence, minlength=n_bins) / count
    return count.astype(int), accuracy, mean_confidence


def _intervals(intervals, n):
    intervals = np.asarray(intervals, dtype=float)
    if intervals.ndim != 2 or intervals.shape != (n, 2):
        raise ValueError(f"intervals must have shape ({n}, 2); got {intervals.shape}.")
    return intervals


def interval_coverage(y_true: ArrayLike, intervals: ArrayLike) -> float:
    """Fraction of samples whose interval holds the true value (bounds included).

    A missing interval (NaN, e.g. no face found) counts as not covering.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    intervals : array-like of shape (n_samples, 2)
        Lower and upper bounds.

    Returns
    -------
    coverage : float
        In [0, 1]; compare with the nominal coverage the intervals were made for.

    Examples
    --------
    >>> from skagegender.metrics import interval_coverage
    >>> interval_coverage([10, 30, 50, 70], [[8, 12], [31, 35], [40, 60], [70, 80]])
    0.75
    """
    y_true = np.asarray(y_true, dtype=float)
    intervals = _intervals(intervals, len(y_true))
    covered = (intervals[:, 0] <= y_true) & (y_true <= intervals[:, 1])
    return float(covered.mean()) if len(y_true) else float("nan")


def _age_groups(age, groups):
    """(group_type, group, mask) triples: all, age groups of ``age``, then ``groups``."""
    age = np.asarray(age, dtype=float)
    yield "all", "all", np.ones(len(age), bool)
    labels = age_group_labels(age)
    for label, _, _ in _REPORT_AGE_GROUPS:
        mask = labels == label
        if mask.any():
            yield "age_group", label, mask
    for name, labels in (groups or {}).items():
        labels = np.asarray(labels)
        check_consistent_length(age, labels)
        for value in np.unique(labels):
            yield name, value.item() if hasattr(value, "item") else value, labels == value


def interval_report(y_true: ArrayLike, intervals: ArrayLike, *,
                    groups: dict[str, ArrayLike] | None = None) -> list[dict]:
    """Coverage and mean width of age intervals, overall and per group.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True ages.
    intervals : array-like of shape (n_samples, 2)
        Lower and upper ages, NaN where missing (counted as not covering, left out
        of the width).
    groups : dict of str to array-like of shape (n_samples,), default=None
        Extra groupings, e.g. ``{"domain": labels}``.

    Returns
    -------
    records : list of dict
        Keys ``group_type`` (``"all"``, ``"age_group"`` or a key of ``groups``),
        ``group``, ``n``, ``n_missing``, ``coverage`` and ``mean_width``. Age groups by
        true age as in :func:`~skagegender.metrics.age_error_report`.

    Examples
    --------
    >>> from skagegender.metrics import interval_report
    >>> rows = interval_report([5, 30, 70], [[3, 7], [20, 28], [60, 80]])
    >>> [(r["group"], r["coverage"], r["mean_width"]) for r in rows]
    [('all', 0.6666666666666666, 10.666666666666666), ('0-12', 1.0, 4.0), ('20-39', 0.0, 8.0), ('60+', 1.0, 20.0)]
    """
    y_true = np.asarray(y_true, dtype=float)
    intervals = _intervals(intervals, len(y_true))
    present = ~np.isnan(intervals).any(axis=1)
    width = intervals[:, 1] - intervals[:, 0]
    records = []
    for kind, label, mask in _age_groups(y_true, groups):
        shown = mask & present
        records.append({
            "group_type": kind, "group": label, "n": int(mask.sum()),
            "n_missing": int((mask & ~present).sum()),
            "coverage": interval_coverage(y_true[mask], intervals[mask]),
            "mean_width": float(width[shown].mean()) if shown.any() else float("nan"),
        })
    return records


def calibration_report(y_true: ArrayLike, y_proba: ArrayLike, *, age: ArrayLike,
                       groups: dict[str, ArrayLike] | None = None, n_bins: int = 10,
                       labels: ArrayLike | None = None) -> list[dict]:
    """Accuracy, mean confidence and ECE of probabilities, overall and per age group.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_proba : array-like of shape (n_samples, n_classes) or (n_samples,)
        As in :func:`expected_calibration_error`; NaN rows (no face) are left out
        and counted in ``n_missing``.
    age : array-like of shape (n_samples,)
        True ages, for the age groups (0-12, 13-19, 20-39, 40-59, 60+).
    groups : dict of str to array-like of shape (n_samples,), default=None
        Extra groupings.
    n_bins : int, default=10
    labels : array-like of shape (n_classes,), default=None
        Sorted labels of the columns; ``np.unique(y_true)`` by default.

    Returns
    -------
    records : list of dict
        Keys ``group_type``, ``group``, ``n``, ``n_missing``, ``accuracy`` (of the
        most probable label), ``mean_confidence`` and ``ece``.

    Examples
    --------
    >>> from skagegender.metrics import calibration_report
    >>> rows = calibration_report(["f", "m", "m", "f"], [0.2, 0.9, 0.6, 0.7],
    ...                           age=[4, 8, 30, 35])
    >>> [(r["group"], r["accuracy"], round(r["ece"], 2)) for r in rows]
    [('all', 0.75, 0.35), ('0-12', 1.0, 0.15), ('20-39', 0.5, 0.55)]
    """
    y_true = np.asarray(y_true)
    y_proba = np.asarray(y_proba, dtype=float)
    check_consistent_length(y_true, y_proba, age)
    labels = np.unique(y_true) if labels is None else np.asarray(labels)
    if y_proba.ndim == 1:
        y_proba = np.column_stack((1 - y_proba, y_proba))
    present = ~np.isnan(y_proba).any(axis=1)
    records = []
    for kind, label, mask in _age_groups(age, groups):
        shown = mask & present
        row = {"group_type": kind, "group": label, "n": int(mask.sum()),
               "n_missing": int((mask & ~present).sum()), "accuracy": float("nan"),
               "mean_confidence": float("nan"), "ece": float("nan")}
        if shown.any():
            proba = y_proba[shown]
            row["accuracy"] = float((labels[proba.argmax(axis=1)] == y_true[shown]).mean())
            row["mean_confidence"] = float(proba.max(axis=1).mean())
            row["ece"] = expected_calibration_error(y_true[shown], proba, n_bins=n_bins,
                                                    labels=labels)
        records.append(row)
    return records
