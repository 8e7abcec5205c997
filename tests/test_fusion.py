"""GatedExpertsRegressor: a per-face gate over several experts' age distributions."""

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator

from skagegender.heads import ConformalAgeRegressor, GatedExpertsRegressor

AGES = np.arange(0, 81, dtype=float)


def _gaussian_rows(centre, sd):
    p = np.exp(-0.5 * ((AGES[None] - centre[:, None]) / sd[:, None]) ** 2)
    return p / p.sum(axis=1, keepdims=True)


def two_domains(n=1200, seed=0):
    """Expert 1 is right in domain 0 and 9 years off in domain 1; expert 2 the reverse.

    The last column says the domain (as a photo-domain score would).
    """
    rng = np.random.default_rng(seed)
    age = rng.uniform(5, 75, n)
    domain = rng.integers(0, 2, n)
    noise = rng.normal(0, 1.0, (2, n))
    first = _gaussian_rows(age + noise[0] + 9.0 * domain, np.full(n, 3.0))
    second = _gaussian_rows(age + noise[1] + 9.0 * (1 - domain), np.full(n, 3.0))
    X = np.hstack([first, second, domain[:, None].astype(float)])
    return X, age, domain


EXPERTS = [(0, AGES), (len(AGES), AGES)]


def test_the_gate_trusts_each_expert_where_it_is_right():
    X, age, _ = two_domains()
    Xt, aget, domaint = two_domains(seed=1)
    gate = GatedExpertsRegressor(EXPERTS, gate_columns=[2 * len(AGES)]).fit(X, age)
    fused = np.abs(gate.predict(Xt) - aget).mean()
    first = np.abs(Xt[:, :81] @ AGES - aget).mean()
    second = np.abs(Xt[:, 81:162] @ AGES - aget).mean()
    best_fixed = min(np.abs(w * Xt[:, :81] @ AGES + (1 - w) * Xt[:, 81:162] @ AGES - aget).mean()
                     for w in np.linspace(0, 1, 11))
    assert fused < 0.6 * best_fixed < first
    assert best_fixed < second
    weights = gate.expert_weights(Xt)
    assert np.all(weights[domaint == 0, 0] > 3 * weights[domaint == 0, 1])
    assert np.all(weights[domaint == 1, 1] > 3 * weights[domaint == 1, 0])


def test_without_a_domain_signal_it_falls_back_to_a_shared_weighting():
    X, age, _ = two_domains()
    gate = GatedExpertsRegressor(EXPERTS).fit(X, age)
    weights = gate.expert_weights(X)
    # the two experts are equally good on average: neither is switched off
    assert 0.5 < weights[:, 0].mean() / weights[:, 1].mean() < 2.0


def test_a_broad_expert_counts_less_than_a_sharp_one():
    # expert 1 is sharp and right; expert 2 is broad and biased: the spread is the signal
    rng = np.random.default_rng(0)
    age = rng.uniform(5, 75, 800)
    X = np.hstack([_gaussian_rows(age + rng.normal(0, 1, 800), np.full(800, 2.0)),
                   _gaussian_rows(age + 12.0, np.full(800, 15.0))])
    gate = GatedExpertsRegressor(EXPERTS).fit(X, age)
    assert np.abs(gate.predict(X) - age).mean() < 1.5
    assert np.abs(X[:, 81:] @ AGES - age).mean() > 9


def test_distribution_median_and_missing_rows():
    X, age, _ = two_domains(n=300)
    gate = GatedExpertsRegressor(EXPERTS, point="median").fit(X, age)
    X = X.copy()
    X[3] = np.nan
    proba = gate.predict_distribution(X)
    assert proba.shape == (300, len(gate.ages_))
    np.testing.assert_allclose(np.nansum(proba[np.arange(300) != 3], axis=1), 1.0)
    pred = gate.predict(X)
    assert np.isnan(pred[3]) and np.isnan(proba[3]).all()
    cdf = np.cumsum(proba[0])
    assert cdf[int(pred[0] - gate.ages_[0])] >= 0.5 > cdf[int(pred[0] - gate.ages_[0]) - 1]


def test_sample_weight_is_repetition():
    X, age, _ = two_domains(n=200)
    w = np.r_[np.full(100, 3.0), np.ones(100)]
    repeated = np.r_[np.repeat(np.arange(100), 3), np.arange(100, 200)]
    a = GatedExpertsRegressor(EXPERTS).fit(X, age, sample_weight=w)
    b = GatedExpertsRegressor(EXPERTS).fit(X[repeated], age[repeated])
    np.testing.assert_allclose(a.predict(X), b.predict(X), atol=0.05)


def test_conformal_intervals_follow_the_fused_spread():
    # one expert, whose spread tells how wrong it is: intervals must widen with it
    rng = np.random.default_rng(0)
    n = 3000
    age = rng.uniform(10, 70, n)
    sd = rng.choice([1.5, 6.0], n)
    X = np.hstack([_gaussian_rows(age + rng.normal(0, sd), sd),
                   _gaussian_rows(age + rng.normal(0, sd), sd)])
    gate = GatedExpertsRegressor(EXPERTS).fit(X[:1500], age[:1500])
    conformal = ConformalAgeRegressor(FrozenEstimator(gate), cv=None, age_edges=()).fit(
        X[1500:2250], age[1500:2250])
    low, high = conformal.predict_interval(X[2250:], coverage=0.8).T
    width, test_sd = high - low, sd[2250:]
    assert width[test_sd == 6.0].mean() > 1.5 * width[test_sd == 1.5].mean()
    covered = (age[2250:] >= low) & (age[2250:] <= high)
    assert 0.72 < covered.mean() < 0.88


def test_bad_experts_are_refused():
    X, age, _ = two_domains(n=50)
    with pytest.raises(ValueError, match="no room"):
        GatedExpertsRegressor([(150, AGES)]).fit(X, age)
    with pytest.raises(ValueError, match="at least one"):
        GatedExpertsRegressor([]).fit(X, age)
    with pytest.raises(ValueError, match="gate_columns"):
        GatedExpertsRegressor(EXPERTS, gate_columns=[999]).fit(X, age)
