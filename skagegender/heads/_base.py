"""Helpers shared by the head estimators: missing faces, predict-time checks, heads."""

import warnings

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted, validate_data

from .._utils import user_stacklevel


class MissingRowsMixin:
    """For heads that take rows of NaN (no face found upstream): the ``allow_nan`` tag.

    Such a head drops them in ``fit`` (:func:`drop_missing_rows`) and gives NaN outputs
    for them (:func:`predict_present_rows`). Put it left of ``BaseEstimator``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def drop_missing_rows(estimator, X, *arrays):
    """Drop training rows whose features contain NaN, with a warning that counts them.

    A face that was not found upstream arrives as a row of NaN. A row with any NaN is
    treated as missing: the heads need the whole feature vector.

    Parameters
    ----------
    estimator : estimator
        Named in the warning.
    X : ndarray of shape (n_samples, n_features)
    *arrays : ndarray of shape (n_samples, ...) or None
        Filtered like ``X`` (``None`` passes through).

    Returns
    -------
    X : ndarray of shape (n_kept, n_features)
    *arrays : the filtered arrays.
    """
    missing = np.isnan(X).any(axis=1)
    n_missing = int(missing.sum())
    if n_missing:
        name = type(estimator).__name__
        if n_missing == len(X):
            raise ValueError(
                f"{name}: all {n_missing} training rows contain NaN (no face found); "
                "nothing to fit."
            )
        warnings.warn(
            f"{name}: dropped {n_missing} of {len(X)} training rows that contain NaN "
            "(no face found upstream).",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        keep = ~missing
        X = X[keep]
        arrays = tuple(None if a is None else a[keep] for a in arrays)
    return (X, *arrays)


def predict_present_rows(func, X, tail_shape=(), dtype=float):
    """Apply ``func`` to the rows of ``X`` without NaN; NaN rows give NaN outputs.

    Parameters
    ----------
    func : callable
        ``func(X_present) -> ndarray of shape (n_present, *tail_shape)``.
    X : ndarray of shape (n_samples, n_features)
    tail_shape : tuple of int, default=()
        Output shape per sample, used when every row is missing.
    dtype : dtype, default=float
        Output dtype when every row is missing.

    Returns
    -------
    out : ndarray of shape (n_samples, *tail_shape)
        Numeric outputs are promoted to float so they can hold NaN; other outputs
        (string labels) become ``object`` arrays holding ``np.nan``.
    """
    missing = np.isnan(X).any(axis=1)
    if not missing.any():
        return func(X)
    if missing.all():
        present = np.empty((0, *tail_shape), dtype=dtype)
    else:
        present = func(X[~missing])
    if np.issubdtype(present.dtype, np.number) or present.dtype == bool:
        out_dtype = np.result_type(present.dtype, np.float64)
    else:
        out_dtype = object
    out = np.full((len(X), *present.shape[1:]), np.nan, dtype=out_dtype)
    out[~missing] = present
    return out


def validate_for_predict(estimator, X, **params):
    """Check that ``estimator`` is fitted, then validate ``X`` against its fit.

    Parameters
    ----------
    estimator : fitted estimator
    X : array-like of shape (n_samples, n_features)
    **params
        Passed to :func:`~sklearn.utils.validation.validate_data`; rows containing
        NaN are allowed unless ``ensure_all_finite`` says otherwise.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    """
    check_is_fitted(estimator)
    params.setdefault("ensure_all_finite", "allow-nan")
    return validate_data(estimator, X, reset=False, **params)


def resolve_head(head, factory, random_state):
    """An unfitted copy of ``head``: a family name built by ``factory``, or a clone."""
    if isinstance(head, str):
        return factory(head, random_state=random_state)
    return clone(head)
