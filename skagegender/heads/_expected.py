"""Age read off class probabilities that are already among the features."""

import numbers
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data


def expected_age_moments(X, start, class_ages):
    """Mean and standard deviation of the ages under probability columns of ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    start : int
        First probability column.
    class_ages : ndarray of shape (k,)
        Age of each of the ``k`` columns from ``start``.

    Returns
    -------
    mean, std : ndarray of shape (n_samples,)
        NaN where the block has NaN.
    """
    block = X[:, start:start + len(class_ages)]
    mean = block @ class_ages
    return mean, np.sqrt(np.maximum(block @ class_ages**2 - mean**2, 0))


class ExpectedAgeRegressor(RegressorMixin, BaseEstimator):
    """The expected age under a block of age-class probability columns.

    Some feature sets carry another model's age opinion as class probabilities,
    e.g. the 81 ``dlib_age_p*`` columns of ``ArcFaceEmbedder(layers=
    "age-gender-dlib")``. This regressor returns ``X[:, start:start + k] @
    class_ages``; it learns nothing from ``y`` (fit only checks the width). It is
    meant as one member of a :class:`~sklearn.ensemble.VotingRegressor`, whose
    ``weights`` blend it with a trained head (the shipped model does this).

    Parameters
    ----------
    start : int, default=0
        Index of the first probability column.
    class_ages : array-like of shape (k,) or None, default=None
        Age of each class. None: ``0, 1, 2, ...`` for every column from ``start``
        to the last one.

    Attributes
    ----------
    n_features_in_ : int
    class_ages_ : ndarray of shape (k,)

    Examples
    --------
    >>> import numpy as np
    >>> from skagegender.heads import ExpectedAgeRegressor
    >>> X = np.array([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    >>> ExpectedAgeRegressor(class_ages=[20, 30, 40]).fit(X, [30, 30]).predict(X)
    array([30., 30.])
    """

    _parameter_constraints: ClassVar[dict] = {
        "start": [Interval(numbers.Integral, 0, None, closed="left")],
        "class_ages": ["array-like", None],
    }

    def __init__(self, *, start=0, class_ages=None):
        self.start = start
        self.class_ages = class_ages

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        # It learns nothing from y, so it cannot score well on arbitrary data.
        tags.regressor_tags.poor_score = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Check the width of ``X``; ``y`` is validated and ignored.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self : ExpectedAgeRegressor
        """
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        if self.class_ages is None:
            ages = np.arange(X.shape[1] - self.start, dtype=np.float64)
        else:
            ages = np.asarray(self.class_ages, dtype=np.float64).ravel()
        if len(ages) == 0 or self.start + len(ages) > X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features: no room for {len(ages)} probability "
                f"columns from column {self.start}"
            )
        self.class_ages_ = ages
        return self

    def predict(self, X):
        """Expected age of each row (NaN where the block has NaN).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        age : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        return expected_age_moments(X, self.start, self.class_ages_)[0]
