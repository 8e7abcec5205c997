"""OrdinalLogisticRegression and its functional core."""

import numpy as np
import pytest
from scipy.optimize import check_grad

from skagegender.heads import OrdinalLogisticRegression
from skagegender.heads._ordinal import (
    threshold_fit,
    threshold_loss_grad,
    threshold_predict,
    threshold_predict_proba,
)


def _ordered_data(n=300, n_features=5, n_classes=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    score = X @ rng.normal(size=n_features) + 0.3 * rng.normal(size=n)
    edges = np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1])
    return X, np.searchsorted(edges, score)


@pytest.mark.parametrize("variant", ["at", "it"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_matches_finite_differences(variant, weighted):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 5, size=40)
    sample_weight = rng.uniform(0.5, 2.0, size=40) if weighted else None
    params = rng.normal(size=4 + 4)

    def loss(p):
        return threshold_loss_grad(
            p, X, y, 5, alpha=0.7, variant=variant, sample_weight=sample_weight
        )[0]

    def grad(p):
        return threshold_loss_grad(
            p, X, y, 5, alpha=0.7, variant=variant, sample_weight=sample_weight
        )[1]

    assert check_grad(loss, grad, params) < 1e-4 * np.linalg.norm(grad(params))


@pytest.mark.parametrize("variant", ["at", "it"])
def test_loss_matches_definition(variant):
    # sum over samples and (all or immediate) thresholds of log(1 + exp(-s (x.w - theta_k)))
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(15, 3)), rng.integers(0, 4, size=15)
    params = rng.normal(size=3 + 3)
    w = params[:3]
    theta = params[3] + np.concatenate(([0.0], np.cumsum(np.exp(params[4:]))))
    expected = 0.5 * 0.3 * w @ w
    for x_i, y_i in zip(X, y):
        for k in range(3):
            if variant == "it" and k not in (y_i - 1, y_i):
                continue
            sign = 1.0 if y_i > k else -1.0
            expected += np.log1p(np.exp(-sign * (x_i @ w - theta[k])))
    loss, _ = threshold_loss_grad(params, X, y, 4, alpha=0.3, variant=variant)
    assert loss == pytest.approx(expected)


def test_core_probabilities_and_median():
    X = np.array([[-5.0], [0.0], [5.0]])
    theta = np.array([-1.0, 1.0])
    proba = threshold_predict_proba(X, np.ones(1), theta)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba >= 0).all()
    np.testing.assert_array_equal(proba.argmax(axis=1), [0, 1, 2])
    np.testing.assert_array_equal(threshold_predict(X, np.ones(1), theta), [0, 1, 2])


def test_fit_keeps_thresholds_ordered_and_recovers_order():
    X, y = _ordered_data()
    w, theta, n_iter = threshold_fit(X, y, 6, alpha=0.1)
    assert np.all(np.diff(theta) > 0)
    assert n_iter > 0
    assert np.mean(threshold_predict(X, w, theta) == y) > 0.7


@pytest.mark.parametrize("variant", ["at", "it"])
def test_ordered_classes_are_learned_with_arbitrary_labels(variant):
    X, y = _ordered_data()
    labels = np.array([2, 7, 30, 31, 60, 99])
    clf = OrdinalLogisticRegression(alpha=0.1, variant=variant).fit(X, labels[y])
    np.testing.assert_array_equal(clf.classes_, labels)
    assert clf.score(X, labels[y]) > 0.7
    assert np.all(np.diff(clf.thresholds_) > 0)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # mean absolute error in class steps stays well under one class
    predicted_index = np.searchsorted(labels, clf.predict(X))
    assert np.abs(predicted_index - y).mean() < 0.4


def test_missing_classes_in_training_are_not_predicted():
    X, y = _ordered_data(n_classes=6)
    keep = y != 3  # a class absent from this fold
    clf = OrdinalLogisticRegression(alpha=0.1).fit(X[keep], y[keep])
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2, 4, 5])
    assert set(clf.predict(X)) <= {0, 1, 2, 4, 5}


def test_internal_standardisation_makes_feature_scale_irrelevant():
    X, y = _ordered_data()
    scaled = X * np.array([1e3, 1e-3, 1.0, 50.0, 1e-2]) + 7.0
    a = OrdinalLogisticRegression(alpha=1.0).fit(X, y)
    b = OrdinalLogisticRegression(alpha=1.0).fit(scaled, y)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(scaled), atol=1e-3)


def test_larger_alpha_shrinks_weights():
    X, y = _ordered_data()
    small = OrdinalLogisticRegression(alpha=0.01).fit(X, y)
    large = OrdinalLogisticRegression(alpha=100.0).fit(X, y)
    assert np.linalg.norm(large.coef_) < 0.5 * np.linalg.norm(small.coef_)


def test_single_class_is_rejected():
    with pytest.raises(ValueError, match="at least 2 classes"):
        OrdinalLogisticRegression().fit(np.ones((5, 2)), np.zeros(5))
