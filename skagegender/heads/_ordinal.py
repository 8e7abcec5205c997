"""Ordinal logistic regression with ordered thresholds.

A tested functional core (:func:`threshold_loss_grad`, :func:`threshold_fit`,
:func:`threshold_predict_proba`, :func:`threshold_predict`) under a thin estimator,
:class:`OrdinalLogisticRegression`.

Model: one weight vector ``w`` and ordered thresholds ``theta_0 < ... < theta_{K-2}``
for ``K`` classes encoded ``0 .. K-1``, with ``P(y <= k | x) = sigmoid(theta_k - x @ w)``.
The all-threshold loss ("at", like mord's ``LogisticAT``) sums, over every sample ``i``
and every threshold ``k``, the logistic loss ``log(1 + exp(-m_ik))`` of the margin
``m_ik = s_ik * (x_i @ w - theta_k)`` with ``s_ik = +1`` when ``y_i > k`` and ``-1``
otherwise. The immediate-threshold loss ("it", like ``LogisticIT``) keeps only the two
thresholds around each sample's class. Both add ``alpha * ||w||^2 / 2``.

Thresholds are parametrised as ``theta_0 = t`` and
``theta_k = t + sum_{j<k} exp(d_j)``, so any parameter vector gives ordered thresholds
and L-BFGS can run unconstrained.
"""

import numbers
from typing import ClassVar

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, validate_data

from ._base import validate_for_predict

__all__ = [
    "OrdinalLogisticRegression",
    "threshold_fit",
    "threshold_loss_grad",
    "threshold_predict",
    "threshold_predict_proba",
]

_VARIANTS = ("at", "it")


def _thresholds_from_params(params_theta):
    """Ordered thresholds and the exp of the log-increments.

    Parameters
    ----------
    params_theta : ndarray of shape (n_classes - 1,)
        ``[t, d_0, ..., d_{K-3}]``.

    Returns
    -------
    theta : ndarray of shape (n_classes - 1,)
    increments : ndarray of shape (n_classes - 2,)
        ``exp(d)``, the derivative of each increment with respect to its parameter.
    """
    increments = np.exp(params_theta[1:])
    theta = params_theta[0] + np.concatenate(([0.0], np.cumsum(increments)))
    return theta, increments


def _params_from_thresholds(theta):
    """Inverse of :func:`_thresholds_from_params` for strictly increasing ``theta``."""
    return np.concatenate(([theta[0]], np.log(np.diff(theta))))


def _threshold_mask(y, n_classes, variant):
    """Sign matrix ``s`` (n_samples, n_classes - 1) times the threshold mask of the variant."""
    k = np.arange(n_classes - 1)
    signs = np.where(y[:, None] > k[None, :], 1.0, -1.0)
    if variant == "it":
        # only thresholds y-1 (below the class) and y (above it)
        keep = (k[None, :] == y[:, None] - 1) | (k[None, :] == y[:, None])
        signs = signs * keep
    return signs


def threshold_loss_grad(params, X, y, n_classes, *, alpha=1.0, variant="at", sample_weight=None):
    """Loss and gradient of the threshold model.

    Parameters
    ----------
    params : ndarray of shape (n_features + n_classes - 1,)
        ``[w, t, d_0, ..., d_{K-3}]``: the weights, the first threshold and the logs of
        the gaps between consecutive thresholds.
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Integer classes in ``0 .. n_classes - 1``.
    n_classes : int
        ``K >= 2``.
    alpha : float, default=1.0
        L2 penalty on ``w`` (thresholds are not penalised).
    variant : {"at", "it"}, default="at"
        All thresholds or immediate thresholds.
    sample_weight : ndarray of shape (n_samples,), default=None

    Returns
    -------
    loss : float
    grad : ndarray of shape (n_features + n_classes - 1,)

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.optimize import check_grad
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(20, 3)), rng.integers(0, 4, size=20)
    >>> p0 = rng.normal(size=3 + 3)
    >>> f = lambda p: threshold_loss_grad(p, X, y, 4)[0]
    >>> g = lambda p: threshold_loss_grad(p, X, y, 4)[1]
    >>> bool(check_grad(f, g, p0) < 1e-5)
    True
    """
    n_features = X.shape[1]
    w = params[:n_features]
    theta, increments = _thresholds_from_params(params[n_features:])
    signs = _threshold_mask(y, n_classes, variant)
    margins = (X @ w)[:, None] - theta[None, :]
    margins *= signs
    # loss log(1 + exp(-m)) = -log_expit(m), dloss/dm = -expit(-m); masked entries have
    # sign 0, so their margin is 0 and their constant loss log(2) is subtracted below
    losses = log_expit(margins)
    dloss_dmargin = expit(-margins)
    dloss_dmargin *= -signs  # times dm/d(xw) = s
    if sample_weight is None:
        loss = -losses.sum()
    else:
        loss = -sample_weight @ losses.sum(axis=1)
        dloss_dmargin *= sample_weight[:, None]
    if variant == "it":
        n_masked = (signs == 0).sum(axis=1)
        masked = n_masked.sum() if sample_weight is None else sample_weight @ n_masked
        loss -= np.log(2.0) * masked
    loss += 0.5 * alpha * (w @ w)
    grad_w = X.T @ dloss_dmargin.sum(axis=1) + alpha * w
    grad_theta = -dloss_dmargin.sum(axis=0)  # dm/dtheta_k = -s
    # theta_k = t + sum_{j<k} exp(d_j): dtheta_k/dt = 1, dtheta_k/dd_j = exp(d_j) for k > j
    grad_t = grad_theta.sum()
    grad_d = increments * np.cumsum(grad_theta[::-1])[::-1][1:]
    return loss, np.concatenate((grad_w, [grad_t], grad_d))


def threshold_fit(
    X, y, n_classes, *, alpha=1.0, variant="at", sample_weight=None, max_iter=500, tol=1e-3
):
    """Fit the threshold model with L-BFGS.

    Starts from ``w = 0`` and thresholds at the logits of the cumulative class
    frequencies (the optimum when ``w = 0`` for the "at" loss).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Integer classes in ``0 .. n_classes - 1``; every class should occur.
    n_classes : int
    alpha : float, default=1.0
    variant : {"at", "it"}, default="at"
    sample_weight : ndarray of shape (n_samples,), default=None
    max_iter : int, default=500
    tol : float, default=1e-3
        Stop when the largest gradient entry falls below ``tol`` times the total sample
        weight (L-BFGS ``gtol``). Held-out error stops improving well before the
        training loss does, so this is loose on purpose.

    Returns
    -------
    w : ndarray of shape (n_features,)
    theta : ndarray of shape (n_classes - 1,)
        Strictly increasing.
    n_iter : int

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    >>> y = np.array([0, 0, 1, 1, 2, 2])
    >>> w, theta, _ = threshold_fit(X, y, 3, alpha=0.01)
    >>> threshold_predict(X, w, theta).tolist()
    [0, 0, 1, 1, 2, 2]
    """
    weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    counts = np.bincount(y, weights=weights, minlength=n_classes)
    # smoothed cumulative frequencies keep every gap strictly positive
    cum = np.cumsum(counts + 0.5)[:-1] / (counts.sum() + 0.5 * n_classes)
    theta0 = np.log(cum) - np.log1p(-cum)
    params0 = np.concatenate((np.zeros(X.shape[1]), _params_from_thresholds(theta0)))
    result = minimize(
        lambda p: threshold_loss_grad(
            p, X, y, n_classes, alpha=alpha, variant=variant, sample_weight=sample_weight
        ),
        params0,
        method="L-BFGS-B",
        jac=True,
        options={"maxiter": max_iter, "gtol": tol * weights.sum()},
    )
    n_features = X.shape[1]
    theta, _ = _thresholds_from_params(result.x[n_features:])
    return result.x[:n_features], theta, result.nit


def threshold_predict_proba(X, w, theta):
    """Class probabilities of the threshold model.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    w : ndarray of shape (n_features,)
    theta : ndarray of shape (n_classes - 1,)
        Increasing thresholds.

    Returns
    -------
    proba : ndarray of shape (n_samples, n_classes)
        ``P(y = k) = sigmoid(theta_k - x @ w) - sigmoid(theta_{k-1} - x @ w)``.

    Examples
    --------
    >>> import numpy as np
    >>> p = threshold_predict_proba(np.zeros((1, 2)), np.ones(2), np.array([-1.0, 1.0]))
    >>> p.shape, bool(np.isclose(p.sum(), 1.0))
    ((1, 3), True)
    """
    cdf = expit(theta[None, :] - (X @ w)[:, None])
    n = X.shape[0]
    cdf = np.hstack((np.zeros((n, 1)), cdf, np.ones((n, 1))))
    return np.diff(cdf, axis=1)


def threshold_predict(X, w, theta):
    """Median class of the threshold model.

    The median class is the number of thresholds lying below ``x @ w``: the first class
    whose cumulative probability reaches 1/2. It minimises the expected absolute error
    in class steps.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    w : ndarray of shape (n_features,)
    theta : ndarray of shape (n_classes - 1,)

    Returns
    -------
    y : ndarray of shape (n_samples,)
        Integer classes in ``0 .. n_classes - 1``.

    Examples
    --------
    >>> import numpy as np
    >>> threshold_predict(np.array([[-3.0], [0.0], [3.0]]), np.ones(1), np.array([-1.0, 1.0]))
    array([0, 1, 2])
    """
    return np.sum(theta[None, :] < (X @ w)[:, None], axis=1)


class OrdinalLogisticRegression(ClassifierMixin, BaseEstimator):
    """Ordinal logistic regression (all-threshold or immediate-threshold).

    One linear score ``x @ coef_`` is cut by ordered thresholds into the classes. Classes
    are ``np.unique(y)`` in sorted order, encoded ``0 .. K-1``, so labels may have gaps
    (``[2, 7, 30]``, ages absent from a fold) and need not start at 0. Features are
    standardised internally (with the sample weights); ``coef_`` and ``thresholds_`` are
    reported on the original feature scale, so ``alpha`` acts on standardised weights.

    Parameters
    ----------
    alpha : float, default=1.0
        L2 penalty ``alpha * ||w||^2 / 2`` on the standardised weights. The data term is a
        sum over samples, so the penalty weakens relative to it as data grows.
    variant : {"at", "it"}, default="at"
        ``"at"``: all-threshold loss (every sample against every threshold), usually
        better for absolute error; ``"it"``: immediate-threshold loss (only the two
        thresholds around the sample's class).
    max_iter : int, default=500
        L-BFGS iterations.
    tol : float, default=1e-3
        Stop when the largest gradient entry falls below ``tol`` times the total sample
        weight.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted class labels.
    coef_ : ndarray of shape (n_features,)
        Weights on the original feature scale.
    thresholds_ : ndarray of shape (n_classes - 1,)
        Increasing thresholds on the original feature scale.
    n_iter_ : int
        L-BFGS iterations run.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when ``X`` has string column names.

    See Also
    --------
    threshold_fit : the functional core this class wraps.

    Examples
    --------
    >>> import numpy as np
    >>> from skagegender.heads import OrdinalLogisticRegression
    >>> X = np.arange(12.0).reshape(-1, 1)
    >>> y = np.repeat([2, 7, 30], 4)
    >>> clf = OrdinalLogisticRegression(alpha=0.01).fit(X, y)
    >>> clf.classes_.tolist()
    [2, 7, 30]
    >>> clf.predict([[0.0], [5.5], [11.0]]).tolist()
    [2, 7, 30]
    >>> clf.predict_proba([[5.5]]).shape
    (1, 3)
    """

    _parameter_constraints: ClassVar[dict] = {
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "variant": [StrOptions(set(_VARIANTS))],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(self, alpha=1.0, *, variant="at", max_iter=500, tol=1e-3):
        self.alpha = alpha
        self.variant = variant
        self.max_iter = max_iter
        self.tol = tol

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Ordered labels (any sortable values).
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : OrdinalLogisticRegression
        """
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                f"OrdinalLogisticRegression needs at least 2 classes in y; got 1 class: "
                f"{self.classes_[0]!r}."
            )
        total = sample_weight.sum()
        mean = sample_weight @ X / total
        scale = np.sqrt(sample_weight @ (X - mean) ** 2 / total)
        scale[scale < 10 * np.finfo(float).eps * np.maximum(1.0, np.abs(mean))] = 1.0
        w, theta, self.n_iter_ = threshold_fit(
            (X - mean) / scale,
            y_encoded,
            n_classes,
            alpha=self.alpha,
            variant=self.variant,
            sample_weight=sample_weight,
            max_iter=self.max_iter,
            tol=self.tol,
        )
        # (x - mean) / scale @ w = x @ (w / scale) - mean @ (w / scale)
        self.coef_ = w / scale
        self.thresholds_ = theta + mean @ self.coef_
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        X = validate_for_predict(self, X, ensure_all_finite=True, dtype=np.float64)
        return threshold_predict_proba(X, self.coef_, self.thresholds_)

    def predict(self, X):
        """Median class (see :func:`threshold_predict`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        X = validate_for_predict(self, X, ensure_all_finite=True, dtype=np.float64)
        return self.classes_[threshold_predict(X, self.coef_, self.thresholds_)]
