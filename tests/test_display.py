"""The Display objects: the values they hold, what they draw, from_estimator = from_predictions."""

import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression, Ridge

from skagegender.metrics import (
    AgeErrorDisplay,
    GenderReliabilityDisplay,
    IntervalCoverageDisplay,
    age_error_report,
    expected_calibration_error,
    interval_report,
)

TRUE = np.array([3, 8, 15, 25, 33, 45, 52, 70, 81, 30])
PRED = np.array([4, 12, 14, 31, 33, 40, float("nan"), 61, 85, 29])


def _ax():
    return Figure().add_subplot()


def test_age_error_scatter_and_groups():
    ax = _ax()
    display = AgeErrorDisplay.from_predictions(TRUE, PRED, ax=ax)
    assert display.ax_ is ax and display.figure_ is ax.figure
    shown = ~np.isnan(PRED)
    np.testing.assert_allclose(display.artist_.get_offsets(),
                               np.column_stack([TRUE[shown], PRED[shown]]))
    assert display.errors_ == age_error_report(TRUE, PRED)
    assert ax.get_title().startswith("MAE 3.44, CS@5 70.0%")  # 31 / 9 years, 7 of 10

    bars = AgeErrorDisplay.from_predictions(TRUE, PRED, kind="per_group", ax=_ax())
    groups = [r for r in age_error_report(TRUE, PRED) if r["group_type"] == "age_group"]
    assert [t.get_text() for t in bars.ax_.get_xticklabels()] == [r["group"] for r in groups]
    np.testing.assert_allclose([b.get_height() for b in bars.artist_],
                               [r["mae"] for r in groups])
    with pytest.raises(ValueError, match="kind must be"):
        AgeErrorDisplay.from_predictions(TRUE, PRED, kind="residuals", ax=_ax())


def test_interval_coverage_bars_are_the_report():
    lo, hi = PRED - 4, PRED + 4
    intervals = np.column_stack([lo, hi])
    display = IntervalCoverageDisplay.from_predictions(TRUE, intervals, coverage=0.8, ax=_ax())
    rows = interval_report(TRUE, intervals)
    assert display.groups == [r["group"] for r in rows]  # "all", then the age groups
    np.testing.assert_allclose([b.get_height() for b in display.bars_],
                               [r["coverage"] for r in rows])
    assert display.line_.get_ydata()[0] == 0.8


def test_gender_reliability_matches_the_ece():
    rng = np.random.default_rng(0)
    p_female = rng.uniform(0, 1, 400)
    truth = np.where(rng.uniform(0, 1, 400) < p_female, "female", "male")
    pred = np.where(p_female >= 0.5, "female", "male")
    confidence = np.maximum(p_female, 1 - p_female)
    display = GenderReliabilityDisplay.from_predictions(truth, pred, confidence, ax=_ax())
    ece = expected_calibration_error(truth, np.column_stack([p_female, 1 - p_female]),
                                     labels=["female", "male"])
    assert display.ece == pytest.approx(ece)
    used = display.count > 0
    np.testing.assert_allclose(display.line_.get_ydata(), display.accuracy[used])
    assert display.count.sum() == 400
    # a calibrated source: every filled bin is near the diagonal
    big = display.count >= 30
    assert np.all(np.abs(display.accuracy[big] - display.mean_confidence[big]) < 0.15)


def test_from_estimator_is_from_predictions_of_its_outputs():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 3))
    age = 40 + 10 * X[:, 0] + rng.normal(size=80)
    ridge = Ridge().fit(X, age)
    by_estimator = AgeErrorDisplay.from_estimator(ridge, X, age, ax=_ax())
    assert by_estimator.errors_ == age_error_report(age, ridge.predict(X))

    gender = np.where(X[:, 1] + rng.normal(size=80) > 0, "female", "male")
    clf = LogisticRegression().fit(X, gender)
    display = GenderReliabilityDisplay.from_estimator(clf, X, gender, ax=_ax())
    proba = clf.predict_proba(X)
    assert display.ece == pytest.approx(expected_calibration_error(gender, proba))
    with pytest.raises(TypeError, match="gives no age intervals"):
        IntervalCoverageDisplay.from_estimator(ridge, X, age, ax=_ax())


@pytest.mark.slow
def test_from_estimator_takes_an_age_gender_model_and_images(fgnet_pair):
    from skagegender import load

    model = load()
    display = IntervalCoverageDisplay.from_estimator(model, fgnet_pair, [2, 29], coverage=0.9,
                                                     ax=_ax())
    intervals = model.predict_details(fgnet_pair, coverage=0.9)["age_interval"]
    covered = (intervals[:, 0] <= [2, 29]) & ([2, 29] <= intervals[:, 1])
    assert display.coverage[0] == covered.mean() and display.nominal == 0.9


def test_plot_without_ax_makes_a_figure_and_without_matplotlib_says_what_to_install(
        monkeypatch):
    import matplotlib.pyplot as plt

    display = AgeErrorDisplay.from_predictions(TRUE, PRED)
    assert display.figure_ is not None
    plt.close(display.figure_)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="matplotlib"):
        AgeErrorDisplay(y_true=TRUE, y_pred=PRED).plot()
