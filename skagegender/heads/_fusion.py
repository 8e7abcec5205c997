"""Fuse several age experts' distributions per face, with a gate learned from their spread."""

import numbers
from typing import ClassVar

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, validate_data

from ._base import (
    MissingRowsMixin,
    drop_missing_rows,
    predict_present_rows,
    validate_for_predict,
)

__all__ = ["GatedExpertsRegressor"]

#: Probability added to every grid age before renormalising, only so that no
#: logarithm is -inf; it is far below what a tempered pool (weights < 1) would
#: turn into heavy tails.
_FLOOR = 1e-12


def _softplus(u):
    return np.logaddexp(0.0, u)


def _sigmoid(u):
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def _on_grid(block, class_ages, grid):
    """Class probabilities (n, k) spread onto the integer ``grid`` by linear interpolation.

    The first and last classes are open-ended ("80 or older" for the dlib network):
    grid ages beyond them share that class's probability evenly.
    """
    block = np.clip(np.nan_to_num(block, nan=0.0), 0.0, None)
    total = block.sum(axis=1, keepdims=True)
    block = np.where(total > 0, block / np.where(total > 0, total, 1.0), 1.0 / block.shape[1])
    position = np.clip(class_ages - grid[0], 0, len(grid) - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, len(grid) - 1)
    upper_share = position - low
    out = np.zeros((len(block), len(grid)))
    np.add.at(out.T, low, (block * (1 - upper_share)).T)
    np.add.at(out.T, high, (block * upper_share).T)
    first, last = int(np.floor(position.min())), int(np.ceil(position.max()))
    if last < len(grid) - 1:
        out[:, last:] = out[:, [last]] / (len(grid) - last)
    if first > 0:
        out[:, :first + 1] = out[:, [first]] / (first + 1)
    out += _FLOOR
    return out / out.sum(axis=1, keepdims=True)


class GatedExpertsRegressor(MissingRowsMixin, RegressorMixin, BaseEstimator):
    """Age from several experts' age distributions, weighted per face by a learned gate.

    Each expert is a block of age-class probability columns already in ``X`` (for the
    shipped features: the fine-tuned SFace layer's 101 and the dlib age network's 81).
    The fused distribution over integer ages is a weighted log-linear pool,

        p(a | x)  proportional to  prod_k p_k(a | x) ** w_k(x),

    whose weights ``w_k(x) = softplus(theta_k . z(x))`` come from *gate features*
    ``z(x)`` computed from the experts' own distributions: each expert's mean,
    standard deviation and entropy, and each pair's difference of means and its
    absolute value (plus the raw columns ``gate_columns``), standardised. ``w = (1, 0)``
    is the first expert alone, ``(1, 1)`` the product of the two; the gate learns
    which expert to trust for which kind of face, e.g. from how spread out each one
    is and how far they disagree. ``theta`` minimises the cross-entropy between the
    pool and a Gaussian label of width ``label_sigma`` years around each true age
    (L-BFGS, L2 penalty ``alpha``), so train it on rows the experts did not learn
    from, in every photo domain the model should handle.

    The prediction is the pool's mean (``point="mean"``) or median. The pool itself is
    :meth:`predict_distribution`; :class:`ConformalAgeRegressor` reads its spread.

    Parameters
    ----------
    experts : list of (int, array-like)
        ``(start, class_ages)`` per expert: the first probability column and the age
        of each class (as :class:`ExpectedAgeRegressor` takes them). At least one.
    gate_columns : list of int or None, default=None
        Raw columns of ``X`` added to the gate features.
    label_sigma : float, default=1.0
        Width in years of the Gaussian label (small: plain likelihood of the true age;
        larger: a smoother target for noisy labels).
    alpha : float, default=1e-3
        L2 penalty on the gate weights (not on the intercepts).
    point : {"mean", "median"}, default="mean"
        Point prediction from the pool.
    max_iter : int, default=200
        L-BFGS iterations.

    Attributes
    ----------
    ages_ : ndarray of shape (n_ages,)
        The integer age grid of the pool (from the lowest to the highest class age).
    coef_ : ndarray of shape (n_experts, 1 + n_gate_features)
        Intercept and weights of each expert's gate.
    n_features_in_ : int

    See Also
    --------
    ExpectedAgeRegressor : One expert's expected age.

    Examples
    --------
    >>> import numpy as np
    >>> from skagegender.heads import GatedExpertsRegressor
    >>> rng = np.random.default_rng(0)
    >>> age = rng.uniform(0, 10, 200)
    >>> sharp = np.exp(-0.5 * (np.arange(11) - age[:, None]) ** 2)     # a good expert
    >>> vague = np.exp(-0.02 * (np.arange(11) - 5.0) ** 2) * np.ones((200, 1))
    >>> X = np.hstack([sharp / sharp.sum(1, keepdims=True), vague / vague.sum(1, keepdims=True)])
    >>> model = GatedExpertsRegressor(experts=[(0, np.arange(11)), (11, np.arange(11))])
    >>> float(np.abs(model.fit(X, age).predict(X) - age).mean()) < 1.0
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        "experts": [list],
        "gate_columns": [list, None],
        "label_sigma": [Interval(numbers.Real, 0, None, closed="neither")],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "point": [StrOptions({"mean", "median"})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(self, experts, *, gate_columns=None, label_sigma=1.0, alpha=1e-3,
                 point="mean", max_iter=200):
        self.experts = experts
        self.gate_columns = gate_columns
        self.label_sigma = label_sigma
        self.alpha = alpha
        self.point = point
        self.max_iter = max_iter

    def _check_experts(self, n_features):
        experts = []
        for item in self.experts:
            if len(item) != 2:
                raise ValueError(f"each expert is (start, class_ages), got {item!r}")
            start, ages = int(item[0]), np.asarray(item[1], dtype=np.float64).ravel()
            if len(ages) < 2 or start < 0 or start + len(ages) > n_features:
                raise ValueError(f"X has {n_features} feature(s): no room for {len(ages)} "
                                 f"probability columns from column {start}")
            experts.append((start, ages))
        if not experts:
            raise ValueError("experts is empty: give at least one (start, class_ages)")
        columns = [] if self.gate_columns is None else [int(c) for c in self.gate_columns]
        if any(c < 0 or c >= n_features for c in columns):
            raise ValueError(f"gate_columns must be column indices below {n_features}")
        return experts, columns

    def _log_experts(self, X):
        """(n_experts, n, n_ages) log-probabilities on the grid."""
        return np.stack([np.log(_on_grid(X[:, s:s + len(a)], a, self.ages_))
                         for s, a in self.experts_])

    def _gate_features(self, X, log_p):
        p = np.exp(log_p)
        mean = p @ self.ages_
        std = np.sqrt(np.maximum(p @ self.ages_**2 - mean**2, 0.0))
        entropy = -(p * log_p).sum(axis=2)
        parts = [mean.T, std.T, entropy.T]
        for i in range(len(mean)):
            for j in range(i + 1, len(mean)):
                parts += [(mean[i] - mean[j])[:, None], np.abs(mean[i] - mean[j])[:, None]]
        if self.gate_columns_:
            parts.append(X[:, self.gate_columns_])
        return np.hstack(parts)

    def _design(self, X, log_p):
        z = (self._gate_features(X, log_p) - self.z_mean_) / self.z_scale_
        return np.hstack([np.ones((len(X), 1)), z])

    @staticmethod
    def _pool(log_p, weights):
        logits = np.einsum("kn,kna->na", weights, log_p)
        logits -= logits.max(axis=1, keepdims=True)
        pool = np.exp(logits)
        return pool / pool.sum(axis=1, keepdims=True)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Learn the gate.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows with NaN (no face found upstream) are dropped with a warning.
        y : array-like of shape (n_samples,)
            True ages.
        sample_weight : array-like of shape (n_samples,) or None

        Returns
        -------
        self : GatedExpertsRegressor
        """
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        w = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
        if not w.sum() > 0:
            raise ValueError("Sample weights must contain at least one non-zero number.")
        X, y, w = drop_missing_rows(self, X, y, w)
        self.experts_, self.gate_columns_ = self._check_experts(X.shape[1])
        low = np.floor(min(a.min() for _, a in self.experts_))
        high = np.ceil(max(a.max() for _, a in self.experts_))
        self.ages_ = np.arange(low, high + 1)
        log_p = self._log_experts(X)
        z = self._gate_features(X, log_p)
        # weighted, so a weight of 2 is the same as a repeated row
        self.z_mean_ = np.average(z, axis=0, weights=w)
        scale = np.sqrt(np.average((z - self.z_mean_) ** 2, axis=0, weights=w))
        self.z_scale_ = np.where(scale > 1e-12, scale, 1.0)
        design = self._design(X, log_p)
        label = np.exp(-0.5 * ((self.ages_[None] - np.asarray(y, float)[:, None])
                               / self.label_sigma) ** 2)
        label /= np.maximum(label.sum(axis=1, keepdims=True), 1e-300)
        w = w / w.sum()
        label_log_p = np.einsum("na,kna->kn", label, log_p)
        n_experts, n_coef = len(self.experts_), design.shape[1]
        penalty = np.ones((n_experts, n_coef))
        penalty[:, 0] = 0.0

        def loss(theta):
            theta = theta.reshape(n_experts, n_coef)
            u = theta @ design.T
            pool = self._pool(log_p, _softplus(u))
            cross_entropy = -(label * np.log(pool)).sum(axis=1)
            # d/dw_k of -sum_a label log pool = -(E_label[log p_k] - E_pool[log p_k])
            d_weight = -(label_log_p - np.einsum("na,kna->kn", pool, log_p))
            grad = (d_weight * _sigmoid(u) * w) @ design + self.alpha * penalty * theta
            value = w @ cross_entropy + 0.5 * self.alpha * np.sum(penalty * theta**2)
            return value, grad.ravel()

        start = np.zeros((n_experts, n_coef))
        start[:, 0] = np.log(np.expm1(1.0 / n_experts))  # equal weights summing to one
        result = minimize(loss, start.ravel(), jac=True, method="L-BFGS-B",
                          options={"maxiter": self.max_iter})
        self.coef_ = result.x.reshape(n_experts, n_coef)
        self.n_iter_ = int(result.nit)
        return self

    def _present_distribution(self, X):
        log_p = self._log_experts(X)
        return self._pool(log_p, _softplus(self.coef_ @ self._design(X, log_p).T))

    def predict_distribution(self, X):
        """The fused age distribution of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_ages)
            Over :attr:`ages_`; NaN rows for rows with NaN.
        """
        X = validate_for_predict(self, X)
        return predict_present_rows(self._present_distribution, X, (len(self.ages_),))

    def expert_weights(self, X):
        """The gate's weight of each expert for each row, shape (n_samples, n_experts)."""
        X = validate_for_predict(self, X)

        def weights(rows):
            return _softplus(self.coef_ @ self._design(rows, self._log_experts(rows)).T).T

        return predict_present_rows(weights, X, (len(self.experts_),))

    def predict(self, X):
        """The fused distribution's mean (or median) age.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        age : ndarray of shape (n_samples,)
        """
        proba = self.predict_distribution(X)
        if self.point == "mean":
            return proba @ self.ages_
        cumulative = np.cumsum(np.nan_to_num(proba), axis=1)
        median = self.ages_[np.minimum((cumulative < 0.5).sum(axis=1), len(self.ages_) - 1)]
        return np.where(np.isnan(proba[:, 0]), np.nan, median)
