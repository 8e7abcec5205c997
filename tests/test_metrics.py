"""skagegender.metrics: age classes, scores, report, ECE and scorers in a real search."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, cross_val_score

from skagegender.metrics import (
    ADIENCE_EDGES,
    age_classes,
    age_error_report,
    cumulative_score,
    cumulative_scorer,
    exact_class_score,
    exact_class_scorer,
    expected_calibration_error,
    get_scorer,
    mean_absolute_error,
    one_class_off_score,
    one_class_off_scorer,
)


def test_default_classes_are_five_years_with_85_plus():
    ages = np.array([0, 4, 5, 9, 10, 84, 85, 99, 116])
    np.testing.assert_array_equal(age_classes(ages), [0, 0, 1, 1, 2, 16, 17, 17, 17])
    assert age_classes(np.arange(0, 120)).max() == 17  # 18 classes


def test_predictions_are_rounded_half_up_before_binning():
    np.testing.assert_array_equal(age_classes([4.49, 4.5, 9.5, -0.4]), [0, 1, 2, 0])


def test_adience_gaps_go_to_nearest_group_ties_to_older():
    # groups 0-2, 4-6, 8-13, 15-20, 25-32, 38-43, 48-53, 60+
    ages = [0, 2, 3, 4, 6, 7, 13, 14, 20, 22, 23, 32, 34, 35, 43, 45, 46, 53, 56, 57, 60, 90]
    expected = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7]
    np.testing.assert_array_equal(age_classes(ages, bins="adience"), expected)
    assert len(ADIENCE_EDGES) == 8


def test_custom_lower_edges():
    np.testing.assert_array_equal(age_classes([1, 18, 40, 70], bins=[0, 18, 65]), [0, 1, 1, 2])
    with pytest.raises(ValueError, match="increasing"):
        age_classes([1], bins=[10, 5])
    with pytest.raises(ValueError, match="Unknown bins"):
        age_classes([1], bins="imdb")


def test_one_class_off_and_exact_class():
    y_true = [22, 22, 22, 22, 22]
    y_pred = [22, 17, 29.6, 30, np.nan]  # same, one below, two above after rounding, NaN
    assert one_class_off_score(y_true, y_pred) == pytest.approx(2 / 5)
    assert exact_class_score(y_true, y_pred) == pytest.approx(1 / 5)
    weights = [3, 1, 1, 1, 0]
    assert one_class_off_score(y_true, y_pred, sample_weight=weights) == pytest.approx(4 / 6)
    assert one_class_off_score([3], [8], bins="adience") == 1.0  # groups 1 and 2
    with pytest.raises(ValueError, match="NaN"):
        one_class_off_score([np.nan], [3])


def test_cumulative_score_uses_raw_error():
    assert cumulative_score([30, 30, 30, 30], [35, 35.4, 24, np.nan]) == pytest.approx(0.25)
    assert cumulative_score([30, 30], [35, 37], threshold=7) == 1.0


def test_mean_absolute_error_is_sklearns():
    import sklearn.metrics

    assert mean_absolute_error is sklearn.metrics.mean_absolute_error


def test_age_error_report_groups_and_missing_predictions():
    y_true = np.array([5, 8, 15, 30, 45, 70, 72])
    y_pred = np.array([6, 8, 25, 30, 45, np.nan, 60])
    gender = np.array(["f", "m", "f", "m", "f", "m", "f"])
    rows = age_error_report(y_true, y_pred, groups={"gender": gender})
    by_key = {(r["group_type"], r["group"]): r for r in rows}
    overall = by_key["all", "all"]
    assert overall["n"] == 7 and overall["n_missing"] == 1
    assert overall["mae"] == pytest.approx((1 + 0 + 10 + 0 + 0 + 12) / 6)
    assert overall["cs5"] == pytest.approx(4 / 7)  # the NaN counts as wrong
    assert by_key["age_group", "0-12"]["n"] == 2
    assert by_key["age_group", "60+"]["n_missing"] == 1
    assert by_key["age_group", "60+"]["mae"] == 12
    assert ("age_group", "40-59") in by_key
    assert by_key["gender", "f"]["n"] == 4
    assert by_key["gender", "m"]["one_class_off"] == pytest.approx(2 / 3)
    assert set(overall) == {"group_type", "group", "n", "n_missing", "mae", "one_class_off", "cs5"}
    pd = pytest.importorskip("pandas")
    assert pd.DataFrame(rows).shape == (len(rows), 7)


def test_expected_calibration_error():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = (rng.uniform(size=20000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02  # calibrated by construction
    overconfident = np.clip((p - 0.5) * 3 + 0.5, 0, 1)
    assert expected_calibration_error(y, overconfident) > 0.1
    proba = np.column_stack([1 - p, p])
    assert expected_calibration_error(y, proba) == pytest.approx(expected_calibration_error(y, p))
    with pytest.raises(ValueError, match="columns"):
        expected_calibration_error([0, 1, 2], proba[:3])


def test_get_scorer_knows_our_names_and_falls_back():
    assert get_scorer("one_class_off") is one_class_off_scorer
    assert get_scorer("exact_class") is exact_class_scorer
    assert get_scorer("cumulative_score") is cumulative_scorer
    assert get_scorer("r2") is not None
    with pytest.raises(ValueError):
        get_scorer("no_such_scorer")


def _age_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    age = np.clip(40 + 15 * X[:, 0] + 3 * rng.normal(size=n), 0, 100)
    return X, age


def test_scorers_in_multi_metric_grid_search_with_refit():
    X, age = _age_data()
    search = GridSearchCV(
        Ridge(),
        {"alpha": [1e-2, 1e5]},
        scoring={
            "one_class_off": one_class_off_scorer,
            "cs5": cumulative_scorer,
            "exact": exact_class_scorer,
            "mae": "neg_mean_absolute_error",
        },
        refit="one_class_off",
        cv=3,
    ).fit(X, age)
    results = search.cv_results_
    assert search.best_params_ == {"alpha": 1e-2}
    for name in ("one_class_off", "cs5", "exact"):
        scores = results[f"mean_test_{name}"]
        assert scores[0] > scores[1]  # higher is better, the good model wins
        assert 0 <= scores.min() and scores.max() <= 1
    assert results["mean_test_mae"][0] > results["mean_test_mae"][1]
    pred = search.predict(X)
    assert search.score(X, age) == pytest.approx(one_class_off_score(age, pred))


def test_scorer_by_name_in_cross_val_score():
    X, age = _age_data()
    scores = cross_val_score(Ridge(), X, age, scoring=get_scorer("one_class_off"), cv=3)
    assert scores.shape == (3,) and scores.min() > 0.5


def test_round_age_and_known_labels_are_the_one_convention():
    from skagegender._utils import known_labels, round_age
    from skagegender.heads import AgeRegressor

    assert round_age([4.5, 4.49, 85.5, -0.5]).tolist() == [5.0, 4.0, 86.0, 0.0]
    assert np.isnan(round_age([np.nan]))[0]
    # the ordinal head learns the ages the metrics' classes are cut from: 4.5 -> 5
    X = np.arange(40, dtype=float).reshape(-1, 1)
    y = np.where(X[:, 0] < 20, 4.5, 9.5)
    head = AgeRegressor("ordinal").fit(X, y).head_
    assert head.classes_.tolist() == [5, 10]
    assert known_labels(["f", None, "", np.nan, "m"]).tolist() == [True, False, False, False,
                                                                   True]
    assert known_labels(np.array(["f", ""])).tolist() == [True, False]
    assert known_labels(np.array([1.0, np.nan])).tolist() == [True, False]
    assert known_labels(np.array([0, 1])).tolist() == [True, True]
