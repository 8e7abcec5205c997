"""Age estimation from face feature vectors."""

import numbers
from functools import partial
from typing import ClassVar

import numpy as np
from sklearn.base import (
    BaseEstimator,
    RegressorMixin,
    _fit_context,
    clone,
    is_classifier,
)
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import validate_data

from .._utils import check_coverage, round_age
from ._base import (
    MissingRowsMixin,
    drop_missing_rows,
    predict_present_rows,
    resolve_head,
    validate_for_predict,
)
from ._factory import HEAD_FAMILIES, make_age_head

__all__ = ["AgeRegressor"]

_DISTRIBUTION_FAMILIES = ("ordinal",)


def _is_distribution_head(head):
    if isinstance(head, str):
        return head in _DISTRIBUTION_FAMILIES
    return is_classifier(head) and hasattr(head, "predict_proba")


class AgeRegressor(MissingRowsMixin, RegressorMixin, BaseEstimator):
    """Age in years from face feature vectors.

    ``head`` picks the model. A family name is a shorthand, resolved at fit time to
    :func:`make_age_head` ``(head, random_state=random_state)``; an estimator instance is
    cloned and fitted. To tune a family's hyperparameters, pass the instance:
    ``head=make_age_head("mlp")`` exposes ``head__model__alpha`` and friends through
    ``get_params(deep=True)`` / ``set_params``, so ``GridSearchCV`` and Optuna reach them
    (``age__head__model__alpha`` inside a ``Pipeline`` step named ``age``).

    A *classifier* head (the ``"ordinal"`` family, or any classifier
    with ``predict_proba``) is fitted on ages rounded to whole years (halves up) and
    gives a distribution over integer ages: :meth:`predict` returns its mean,
    :meth:`predict_distribution` the distribution and :meth:`predict_interval` its
    quantiles. A *regressor* head (``"mlp"``, ``"lightgbm"``, ``Ridge()``, ...) is
    fitted on the ages as given; it has intervals only with ``interval_cv``.

    Rows of ``X`` containing NaN (no face found upstream) are dropped in :meth:`fit`
    with a warning that counts them, and give NaN outputs in every predict method.

    Parameters
    ----------
    head : {"mlp", "lightgbm", "ordinal"} or estimator, default="mlp"
        Head family or an unfitted scikit-learn regressor or classifier.
    age_range : tuple of (float, float) or None, default=(0, 100)
        Predictions are clipped to this range, and a classifier head's training ages
        are clipped into it (116 becomes 100), so the distribution covers the integer
        ages of the range. ``None`` disables clipping; the distribution then covers the
        integer ages from the youngest to the oldest training age.
    interval_cv : int or None, default=None
        If an int ``k``, :meth:`fit` also runs ``k``-fold cross-validation
        (``k`` extra fits) and keeps the out-of-fold residuals; :meth:`predict_interval`
        then uses their quantiles for any head. If None, only classifier heads have
        :meth:`predict_interval`, from their distribution.
    random_state : int, RandomState instance or None, default=None
        Seed given to :func:`make_age_head` for a family name, and the shuffling seed of
        ``interval_cv``. Unused for an estimator instance's own randomness (set
        ``head__...random_state`` for that).

    Attributes
    ----------
    head_ : estimator
        The fitted head.
    ages_ : ndarray of shape (n_ages,)
        Integer ages of the distribution's columns (classifier heads only).
    residuals_ : ndarray of shape (n_samples_fit,)
        Sorted out-of-fold residuals ``y - prediction`` (only with ``interval_cv``).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when ``X`` has string column names.

    See Also
    --------
    make_age_head : the family defaults.
    GenderClassifier : the matching gender estimator.

    Examples
    --------
    >>> import numpy as np
    >>> from skagegender.heads import AgeRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 8))
    >>> age = np.clip(40 + 12 * X[:, 0] + rng.normal(0, 2, 300), 1, 90)
    >>> est = AgeRegressor("ordinal").fit(X, age)
    >>> est.predict(X[:2]).shape, est.predict_distribution(X[:2]).shape
    ((2,), (2, 101))
    >>> lo, hi = est.predict_interval(X[:1], coverage=0.8)[0]
    >>> bool(lo <= est.predict(X[:1])[0] <= hi)
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        "head": [StrOptions(set(HEAD_FAMILIES)), HasMethods(["fit", "predict"])],
        "age_range": [tuple, None],
        "interval_cv": [Interval(numbers.Integral, 2, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def __init__(self, head="mlp", *, age_range=(0, 100), interval_cv=None, random_state=None):
        self.head = head
        self.age_range = age_range
        self.interval_cv = interval_cv
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit the head on ages.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Face features; rows containing NaN are dropped with a warning.
        y : array-like of shape (n_samples,)
            Ages in years.

        Returns
        -------
        self : AgeRegressor
        """
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        X, y = drop_missing_rows(self, X, y)
        y = np.asarray(y, dtype=float)
        if self.age_range is not None:
            low, high = self.age_range
            if not low < high:
                raise ValueError(
                    f"age_range must be (low, high) with low < high; got {self.age_range}."
                )
        self.head_ = resolve_head(
            self.head, partial(make_age_head, n_samples=len(X)), self.random_state)
        if _is_distribution_head(self.head_):
            targets = round_age(self._clip(y))
            self.ages_ = np.arange(
                *(
                    (np.ceil(self.age_range[0]), np.floor(self.age_range[1]) + 1)
                    if self.age_range is not None
                    else (targets.min(), targets.max() + 1)
                )
            )
            self.head_.fit(X, targets.astype(int))
        else:
            self.head_.fit(X, y)
        if self.interval_cv is not None:
            cv = KFold(self.interval_cv, shuffle=True, random_state=self.random_state)
            oof = cross_val_predict(clone(self).set_params(interval_cv=None), X, y, cv=cv)
            self.residuals_ = np.sort(y - oof)
        return self

    def _clip(self, ages):
        if self.age_range is None:
            return ages
        return np.clip(ages, *self.age_range)

    def _distribution(self, X):
        proba = self.head_.predict_proba(X)
        columns = np.asarray(self.head_.classes_, dtype=int) - int(self.ages_[0])
        out = np.zeros((X.shape[0], len(self.ages_)))
        out[:, columns] = proba
        return out

    def predict(self, X):
        """Predict ages in years, clipped to ``age_range``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        age : ndarray of shape (n_samples,)
            NaN for rows of ``X`` that contain NaN.
        """
        X = validate_for_predict(self, X)
        return predict_present_rows(self._predict, X)

    def _predict(self, X):
        if hasattr(self, "ages_"):
            return self._clip(self._distribution(X) @ self.ages_)
        return self._clip(np.asarray(self.head_.predict(X), dtype=float).reshape(len(X)))

    @available_if(lambda self: _is_distribution_head(self.head))
    def predict_distribution(self, X):
        """Predicted distribution over integer ages (classifier heads only).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_ages)
            Columns follow ``ages_``; rows sum to 1, ages never seen in training get 0.
            NaN rows for rows of ``X`` that contain NaN.
        """
        X = validate_for_predict(self, X)
        return predict_present_rows(self._distribution, X, tail_shape=(len(self.ages_),))

    @available_if(
        lambda self: self.interval_cv is not None or _is_distribution_head(self.head)
    )
    def predict_interval(self, X, coverage=0.8):
        """Central prediction interval of the age.

        With ``interval_cv``, the interval is the prediction plus the
        ``(1 - coverage) / 2`` and ``(1 + coverage) / 2`` quantiles of the out-of-fold
        residuals (the same width for every sample). Otherwise it runs between those
        quantiles of the predicted age distribution (integer ages).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        coverage : float, default=0.8
            Intended probability that the true age lies inside, in (0, 1).

        Returns
        -------
        interval : ndarray of shape (n_samples, 2)
            Lower and upper ages, clipped to ``age_range``; NaN rows for rows of ``X``
            that contain NaN.
        """
        coverage = check_coverage(coverage)
        X = validate_for_predict(self, X)
        quantiles = np.array([(1 - coverage) / 2, (1 + coverage) / 2])

        def interval(X):
            if self.interval_cv is not None:
                offsets = np.quantile(self.residuals_, quantiles)
                return self._clip(self._predict(X)[:, None] + offsets[None, :])
            cdf = np.cumsum(self._distribution(X), axis=1)
            # first age whose cumulative probability reaches the quantile
            index = (cdf[:, :, None] < quantiles[None, None, :] - 1e-12).sum(axis=1)
            return self.ages_[np.minimum(index, len(self.ages_) - 1)].astype(float)

        return predict_present_rows(interval, X, tail_shape=(2,))
