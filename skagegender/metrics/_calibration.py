"""Calibration error of predicted probabilities."""

import numpy as np
from sklearn.utils import check_consistent_length

__all__ = ["expected_calibration_error"]


def expected_calibration_error(y_true, y_proba, *, n_bins=10, labels=None):
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
    bin_index = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bin_index):
        mask = bin_index == b
        ece += mask.sum() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece / len(y_true))
