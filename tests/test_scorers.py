"""The age metrics go where scikit-learn's scorers go, and a wrong spelling names the right one."""

import functools
import pickle

import numpy as np
import pytest
from sklearn.datasets import make_regression
from sklearn.linear_model import Ridge
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    cross_val_predict,
    cross_val_score,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skagegender.metrics import (
    cumulative_score,
    exact_class_score,
    get_scorer,
    mean_absolute_error,
    one_class_off_score,
)

CV = KFold(3, shuffle=True, random_state=0)


@pytest.fixture(scope="module")
def ages():
    X, y = make_regression(n_samples=120, n_features=5, noise=40.0, random_state=0)
    return X, np.clip(40 + y / 6, 1, 90)


def _per_fold(metric, pipe, X, y, **kwargs):
    """The metric of each fold's predictions, computed by hand."""
    scores = []
    for train, test in CV.split(X):
        fitted = make_pipeline(StandardScaler(), Ridge()).fit(X[train], y[train])
        scores.append(metric(y[test], fitted.predict(X[test]), **kwargs))
    return np.array(scores)


@pytest.mark.parametrize("metric", [one_class_off_score, exact_class_score, cumulative_score])
def test_metric_as_scoring_in_cross_val_score(ages, metric):
    X, y = ages
    pipe = make_pipeline(StandardScaler(), Ridge())
    scores = cross_val_score(pipe, X, y, cv=CV, scoring=metric, error_score="raise")
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, _per_fold(metric, pipe, X, y))
    # and still a plain metric with its keywords
    pred = cross_val_predict(pipe, X, y, cv=CV)
    assert 0 < metric(y, pred) <= 1


def test_cs_at_k_by_partial_and_by_name(ages):
    X, y = ages
    pipe = make_pipeline(StandardScaler(), Ridge())
    cs10 = functools.partial(cumulative_score, threshold=10)
    by_partial = cross_val_score(pipe, X, y, cv=CV, scoring=cs10)
    by_name = cross_val_score(pipe, X, y, cv=CV, scoring=get_scorer("cs@10"))
    np.testing.assert_allclose(by_partial, _per_fold(cumulative_score, pipe, X, y, threshold=10))
    np.testing.assert_allclose(by_name, by_partial)
    assert (by_partial >= cross_val_score(pipe, X, y, cv=CV, scoring=cumulative_score)).all()


def test_metrics_in_a_real_grid_search(ages):
    X, y = ages
    grid = GridSearchCV(
        make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": [0.1, 1e4]}, cv=CV,
        scoring={"1coa": one_class_off_score, "cs5": cumulative_score,
                 "mae": "neg_mean_absolute_error"},
        refit="1coa", error_score="raise").fit(X, y)
    results = grid.cv_results_
    for alpha_index, alpha in enumerate([0.1, 1e4]):
        pipe = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
        expected = []
        for train, test in CV.split(X):
            fitted = pipe.fit(X[train], y[train])
            expected.append(one_class_off_score(y[test], fitted.predict(X[test])))
        assert results["mean_test_1coa"][alpha_index] == pytest.approx(np.mean(expected))
    # a huge ridge penalty predicts about the mean age: worse one-class-off
    assert grid.best_params_ == {"ridge__alpha": 0.1}
    assert results["mean_test_mae"][0] > results["mean_test_mae"][1]


def test_metrics_pickle_by_reference():
    for metric in (one_class_off_score, exact_class_score, cumulative_score):
        assert pickle.loads(pickle.dumps(metric)) is metric
    assert one_class_off_score.__name__ == "one_class_off_score"
    assert "bins" in str(__import__("inspect").signature(one_class_off_score))


def test_scorer_call_with_wrong_arity_says_so(ages):
    X, y = ages
    fitted = Ridge().fit(X, y)
    with pytest.raises(TypeError, match=r"one_class_off_score\(estimator, X, y\)"):
        one_class_off_score(fitted, X)


@pytest.mark.parametrize(("wrong", "right"), [
    ("mae", "neg_mean_absolute_error"),
    ("mean_absolute_error", "neg_mean_absolute_error"),
    ("one_class_off_score", "one_class_off"),
    ("one_class_of", "one_class_off"),
    ("cs5", "cs@5"),
])
def test_wrong_names_name_the_right_one(wrong, right):
    with pytest.raises(ValueError, match=f"Did you mean '{right}'"):
        get_scorer(wrong)


def test_mae_metric_as_scoring_is_refused_with_make_scorer_hint(ages):
    X, y = ages
    with pytest.raises(ValueError, match="make_scorer"):
        cross_val_score(Ridge(), X, y, cv=CV, scoring=mean_absolute_error)


def test_head_search_takes_metric_names_and_objects(ages):
    pytest.importorskip("optuna")
    from optuna.distributions import FloatDistribution

    from skagegender.model_selection import HeadSearchCV

    X, y = ages
    space = {"alpha": FloatDistribution(1e-2, 1e2, log=True)}
    results = {}
    for scoring in ("one_class_off", one_class_off_score, "cs@5", cumulative_score):
        search = HeadSearchCV(Ridge(), space, cv=CV, n_trials=2, random_state=0,
                              scoring=scoring).fit(X, y)
        results[scoring if isinstance(scoring, str) else scoring.__name__] = (
            search.cv_results_["mean_test_score"])
    np.testing.assert_allclose(results["one_class_off"], results["one_class_off_score"])
    np.testing.assert_allclose(results["cs@5"], results["cumulative_score"])
    with pytest.raises(ValueError, match="Did you mean 'neg_mean_absolute_error'"):
        HeadSearchCV(Ridge(), space, cv=CV, n_trials=1, scoring="mae").fit(X, y)
    with pytest.raises(ValueError, match="make_scorer"):
        HeadSearchCV(Ridge(), space, cv=CV, n_trials=1, scoring=mean_absolute_error).fit(X, y)
