"""Uncertainty that keeps its promise: conformal age intervals, age-aware gender calibration.

Both estimators wrap a head and calibrate it on *held-out* predictions: with an int
``cv`` they cross-fit the head (out-of-fold predictions of ``cv`` clones) and then fit
it on all rows; with ``cv=None`` the rows given to :meth:`fit` are the calibration rows
and the head is used as it is (pass a :class:`~sklearn.frozen.FrozenEstimator` of a head
fitted elsewhere, or a head that learns nothing from ``y`` such as a blend of
:class:`ExpectedAgeRegressor`).
"""

import numbers
from typing import ClassVar

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    _fit_context,
    clone,
)
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._utils import AGE_GROUP_EDGES, check_coverage
from ._base import (
    MissingRowsMixin,
    drop_missing_rows,
    predict_present_rows,
    validate_for_predict,
)
from ._expected import expected_age_moments

__all__ = ["AgeAwareCalibratedClassifier", "ConformalAgeRegressor"]


def _cross_fit(estimator, X, y, cv, random_state, predict, splitter=KFold):
    """(estimator fitted on all rows, out-of-fold ``predict(fitted, X_fold)`` stacked)."""
    if cv is None:
        fitted = clone(estimator).fit(X, y)
        return fitted, predict(fitted, X)
    folds = splitter(cv, shuffle=True, random_state=random_state).split(X, y)
    out = None
    for train, test in folds:
        part = predict(clone(estimator).fit(X[train], y[train]), X[test])
        if out is None:
            out = np.zeros((len(X), *np.shape(part)[1:]))
        out[test] = part
    return clone(estimator).fit(X, y), out


def _unwrap(estimator):
    """The fitted estimator under FrozenEstimator / AgeRegressor wrappers."""
    while True:
        if hasattr(estimator, "head_"):
            estimator = estimator.head_
        elif type(estimator).__name__ == "FrozenEstimator":
            estimator = estimator.estimator
        else:
            return estimator


def distribution_moments(estimator, X):
    """Mean and standard deviation of the age distribution a fitted age model holds.

    Understands :class:`GatedExpertsRegressor` (its fused distribution),
    :class:`ExpectedAgeRegressor` (its probability columns), a
    :class:`~sklearn.ensemble.VotingRegressor` of those (the mixture of the members'
    distributions with the voting weights) and an :class:`AgeRegressor` with a
    classifier head (its predicted distribution), also inside a
    :class:`~sklearn.frozen.FrozenEstimator`.

    Returns
    -------
    mean, std : ndarray of shape (n_samples,)

    Raises
    ------
    TypeError
        For a model without an age distribution.
    """
    if hasattr(estimator, "ages_") and hasattr(estimator, "_distribution"):
        proba = estimator._distribution(X)
        mean = proba @ estimator.ages_
        return mean, np.sqrt(np.maximum(proba @ estimator.ages_**2 - mean**2, 0))
    inner = _unwrap(estimator)
    if hasattr(inner, "predict_distribution") and hasattr(inner, "ages_"):
        proba = inner.predict_distribution(X)
        mean = proba @ inner.ages_
        return mean, np.sqrt(np.maximum(proba @ inner.ages_**2 - mean**2, 0))
    if hasattr(inner, "class_ages_") and hasattr(inner, "start"):
        return expected_age_moments(X, inner.start, inner.class_ages_)
    if hasattr(inner, "estimators_") and hasattr(inner, "weights"):
        weights = np.ones(len(inner.estimators_)) if inner.weights is None else np.asarray(
            inner.weights, dtype=float)
        weights = weights / weights.sum()
        mean = np.zeros(len(X))
        second = np.zeros(len(X))
        for w, member in zip(weights, inner.estimators_):
            m, s = distribution_moments(member, X)
            mean += w * m
            second += w * (s**2 + m**2)
        return mean, np.sqrt(np.maximum(second - mean**2, 0))
    raise TypeError(f"{type(inner).__name__} holds no age distribution.")


class ConformalAgeRegressor(MissingRowsMixin, RegressorMixin, BaseEstimator):
    """Age with conformal prediction intervals whose width follows each face.

    The score of a calibration face is its signed error divided by a *spread*,
    ``(y - prediction) / spread``; the spread is the standard deviation of the age
    distribution behind the prediction (see :func:`distribution_moments`; the mixture
    of the experts' distributions for a :class:`~sklearn.ensemble.VotingRegressor` of
    :class:`ExpectedAgeRegressor`), plus ``spread_floor`` in quadrature. Scores are
    kept per group of *predicted* age (Mondrian conformal prediction), so each group
    gets its own quantiles: an interval is ``prediction + spread * [q_low, q_high]``
    with the group's ``(1 - coverage) / 2`` and ``(1 + coverage) / 2`` score
    quantiles (finite-sample corrected), widened if needed to contain the prediction.

    Held-out scores come from ``cv``-fold cross-fitting, or with ``cv=None`` from the
    rows given to :meth:`fit` (for a head fitted elsewhere, in a
    :class:`~sklearn.frozen.FrozenEstimator`, or one that learns nothing from ``y``).
    The coverage promise holds for faces like the calibration rows: calibrate on rows
    whose features are held-out too (the shipped recipe uses out-of-fold fine-tuned
    features, degraded copies and FG-NET subjects).

    Rows of ``X`` containing NaN (no face found upstream) are dropped in :meth:`fit`
    with a warning and give NaN outputs.

    Parameters
    ----------
    estimator : regressor
        The age model; unfitted (it is cloned and fitted) or a ``FrozenEstimator``.
    spread : {"distribution", "constant"}, default="distribution"
        ``"constant"``: every face has spread 1, so intervals differ only by group.
    spread_floor : float, default=1.0
        Years added in quadrature to the distribution's standard deviation, so a
        very peaked distribution does not give a zero-width interval.
    age_edges : tuple of float, default=(13, 20, 40, 60)
        Predicted-age group edges; ``()`` pools all scores.
    min_group_size : int, default=30
        A group with fewer calibration scores uses the pooled scores.
    cv : int or None, default=5
        Cross-fitting folds, or None (see above).
    age_range : tuple of (float, float) or None, default=(0, 100)
        Predictions and interval bounds are clipped to it.
    random_state : int, RandomState instance or None, default=None
        Shuffling seed of the cross-fitting folds.

    Attributes
    ----------
    estimator_ : regressor
        The age model fitted on all rows.
    scores_ : ndarray of shape (n_calibration,)
        Held-out scores ``(y - prediction) / spread``.
    score_groups_ : ndarray of shape (n_calibration,)
        Predicted-age group index of each score.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from skagegender.heads import ConformalAgeRegressor, ExpectedAgeRegressor
    >>> rng = np.random.default_rng(0)
    >>> true_age = rng.integers(5, 80, 2000)
    >>> guess = np.clip(true_age + rng.normal(0, 2 + true_age / 10), 0, 99).round()
    >>> X = np.zeros((2000, 100))
    >>> for i, g in enumerate(guess.astype(int)):   # a distribution as wide as the error
    ...     X[i] = np.exp(-0.5 * ((np.arange(100) - g) / (2 + g / 10)) ** 2)
    >>> X /= X.sum(axis=1, keepdims=True)
    >>> model = ConformalAgeRegressor(ExpectedAgeRegressor(), cv=None)
    >>> model = model.fit(X[:1000], true_age[:1000])
    >>> interval = model.predict_interval(X[1000:], coverage=0.8)
    >>> covered = (interval[:, 0] <= true_age[1000:]) & (true_age[1000:] <= interval[:, 1])
    >>> bool(0.75 < covered.mean() < 0.85)
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        "estimator": [HasMethods(["fit", "predict"])],
        "spread": [StrOptions({"distribution", "constant"})],
        "spread_floor": [Interval(numbers.Real, 0, None, closed="left")],
        "age_edges": [tuple, list],
        "min_group_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "cv": [Interval(numbers.Integral, 2, None, closed="left"), None],
        "age_range": [tuple, None],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator, *, spread="distribution", spread_floor=1.0,
                 age_edges=AGE_GROUP_EDGES, min_group_size=30, cv=5, age_range=(0, 100),
                 random_state=None):
        self.estimator = estimator
        self.spread = spread
        self.spread_floor = spread_floor
        self.age_edges = age_edges
        self.min_group_size = min_group_size
        self.cv = cv
        self.age_range = age_range
        self.random_state = random_state

    def _point_and_spread(self, estimator, X):
        point = self._clip(np.asarray(estimator.predict(X), dtype=float).reshape(len(X)))
        if self.spread == "constant":
            return point, np.ones(len(X))
        _, std = distribution_moments(estimator, X)
        return point, np.sqrt(std**2 + self.spread_floor**2)

    def _clip(self, age):
        return age if self.age_range is None else np.clip(age, *self.age_range)

    def _groups(self, point):
        return np.searchsorted(np.asarray(self.age_edges, dtype=float), point, side="right")

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit the age model and keep held-out conformal scores.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Ages in years.

        Returns
        -------
        self : ConformalAgeRegressor
        """
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        X, y = drop_missing_rows(self, X, y)
        y = np.asarray(y, dtype=float)
        if self.spread == "distribution" and self.spread_floor == 0:
            raise ValueError("spread_floor must be > 0 with spread='distribution'.")
        self.estimator_, held_out = _cross_fit(
            self.estimator, X, y, self.cv, self.random_state,
            lambda fitted, rows: np.column_stack(self._point_and_spread(fitted, rows)))
        point, spread = held_out[:, 0], held_out[:, 1]
        self.scores_ = (y - point) / spread
        self.score_groups_ = self._groups(point)
        return self

    def predict(self, X):
        """Predicted ages, clipped to ``age_range`` (NaN for rows with NaN).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        age : ndarray of shape (n_samples,)
        """
        X = validate_for_predict(self, X)
        return predict_present_rows(
            lambda rows: self._point_and_spread(self.estimator_, rows)[0], X)

    def score_quantiles(self, coverage=0.8):
        """Lower and upper score quantile of each predicted-age group.

        Parameters
        ----------
        coverage : float, default=0.8

        Returns
        -------
        quantiles : ndarray of shape (len(age_edges) + 1, 2)
        """
        check_is_fitted(self)
        coverage = check_coverage(coverage)
        out = np.zeros((len(self.age_edges) + 1, 2))
        for g in range(len(out)):
            scores = self.scores_[self.score_groups_ == g]
            if len(scores) < self.min_group_size:
                scores = self.scores_
            out[g] = _conformal_quantiles(scores, coverage)
        return out

    def predict_interval(self, X, coverage=0.8):
        """Prediction interval of the age for each face.

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
        quantiles = self.score_quantiles(coverage)
        X = validate_for_predict(self, X)

        def interval(rows):
            point, spread = self._point_and_spread(self.estimator_, rows)
            q = quantiles[self._groups(point)]
            low = np.minimum(point + spread * q[:, 0], point)
            high = np.maximum(point + spread * q[:, 1], point)
            return self._clip(np.column_stack((low, high)))

        return predict_present_rows(interval, X, tail_shape=(2,))


def _conformal_quantiles(scores, coverage):
    """Split-conformal lower/upper quantiles of ``scores`` (each tail (1 - coverage) / 2)."""
    n = len(scores)
    tail = (1 - coverage) / 2
    # k-th smallest with k = ceil((n + 1)(1 - tail)): the finite-sample guarantee
    high = min(np.ceil((n + 1) * (1 - tail)) / n, 1.0)
    low = max(np.floor((n + 1) * tail) / n - 1 / n, 0.0)
    return (np.quantile(scores, low, method="lower"),
            np.quantile(scores, high, method="higher"))


class AgeAwareCalibratedClassifier(MissingRowsMixin, ClassifierMixin, BaseEstimator):
    """Binary classifier whose probabilities are recalibrated per predicted age group.

    A gender head is often right with different confidence at different ages (children
    are hard). This wrapper takes the head's held-out probability of the second class,
    its logit ``z`` and the face's predicted age group ``g`` (the expected age under the
    probability columns ``X[:, age_start:age_start + k]`` with ages ``age_classes``),
    and fits a logistic regression on ``[z * onehot(g), onehot(g)]``: Platt scaling with
    its own slope and intercept per age group.

    Held-out probabilities come from ``cv``-fold cross-fitting (stratified), or with
    ``cv=None`` from the rows given to :meth:`fit` (for a head fitted elsewhere, in a
    :class:`~sklearn.frozen.FrozenEstimator`).

    Parameters
    ----------
    estimator : classifier with predict_proba
        Unfitted, or a ``FrozenEstimator``.
    age_start : int, default=0
        First column of the age probabilities in ``X``.
    age_classes : array-like of shape (k,) or None, default=None
        Age of each probability column; None: ``0, 1, ...`` to the last column.
    age_edges : tuple of float, default=(13, 20, 40, 60)
        Predicted-age group edges; ``()`` gives plain Platt scaling.
    C : float, default=1.0
        Inverse regularisation strength of the logistic regression.
    cv : int or None, default=5
    random_state : int, RandomState instance or None, default=None
        Shuffling seed of the cross-fitting folds.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
    estimator_ : classifier
        The head fitted on all rows.
    calibrator_ : LogisticRegression
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skagegender.heads import AgeAwareCalibratedClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(600, 4))
    >>> X[:, 3] = rng.uniform(0, 80, 600)          # one "age" column
    >>> y = np.where(X[:, 0] + rng.normal(0, 0.5 + (X[:, 3] < 13), 600) > 0, "m", "f")
    >>> clf = AgeAwareCalibratedClassifier(LogisticRegression(), age_start=3,
    ...                                    age_classes=[1.0], random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    """

    _parameter_constraints: ClassVar[dict] = {
        "estimator": [HasMethods(["fit", "predict_proba"])],
        "age_start": [Interval(numbers.Integral, 0, None, closed="left")],
        "age_classes": ["array-like", None],
        "age_edges": [tuple, list],
        "C": [Interval(numbers.Real, 0, None, closed="neither")],
        "cv": [Interval(numbers.Integral, 2, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator, *, age_start=0, age_classes=None, age_edges=AGE_GROUP_EDGES,
                 C=1.0, cv=5, random_state=None):
        self.estimator = estimator
        self.age_start = age_start
        self.age_classes = age_classes
        self.age_edges = age_edges
        self.C = C
        self.cv = cv
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _design(self, X, positive):
        classes = (np.arange(X.shape[1] - self.age_start, dtype=float)
                   if self.age_classes is None else np.asarray(self.age_classes, dtype=float))
        age, _ = expected_age_moments(X, self.age_start, classes)
        groups = np.searchsorted(np.asarray(self.age_edges, dtype=float), age, side="right")
        onehot = np.eye(len(self.age_edges) + 1)[groups]
        p = np.clip(positive, 1e-6, 1 - 1e-6)
        z = np.log(p / (1 - p))
        return np.hstack([z[:, None] * onehot, onehot])

    @staticmethod
    def _positive(fitted, X, positive_label):
        proba = fitted.predict_proba(X)
        return proba[:, list(fitted.classes_).index(positive_label)]

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit the head and the age-group calibration on held-out probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Two classes.

        Returns
        -------
        self : AgeAwareCalibratedClassifier
        """
        from sklearn.linear_model import LogisticRegression

        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan")
        check_classification_targets(y)
        X, y = drop_missing_rows(self, X, y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"Only binary classification is supported: {type(self).__name__} "
                             f"needs 2 classes in y; got {len(self.classes_)} class(es).")
        width = 1 if self.age_classes is None else len(np.ravel(self.age_classes))
        if self.age_start + width > X.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features: no age columns from column "
                             f"{self.age_start}.")
        positive = self.classes_[1]
        self.estimator_, held_out = _cross_fit(
            self.estimator, X, y, self.cv, self.random_state,
            lambda fitted, rows: self._positive(fitted, rows, positive),
            splitter=StratifiedKFold)
        self.calibrator_ = LogisticRegression(C=self.C).fit(
            self._design(X, held_out), (y == positive).astype(int))
        return self

    def _proba(self, X):
        positive = self._positive(self.estimator_, X, self.classes_[1])
        p = self.calibrator_.predict_proba(self._design(X, positive))[:, 1]
        return np.column_stack((1 - p, p))

    def predict_proba(self, X):
        """Calibrated class probabilities (NaN rows for rows of ``X`` with NaN).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, 2)
            Columns follow ``classes_``.
        """
        X = validate_for_predict(self, X)
        return predict_present_rows(self._proba, X, tail_shape=(2,))

    def predict(self, X):
        """The more probable class (``np.nan`` for rows of ``X`` with NaN).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        X = validate_for_predict(self, X)
        return predict_present_rows(
            lambda rows: self.classes_[self._proba(rows).argmax(axis=1)], X,
            dtype=self.classes_.dtype)
