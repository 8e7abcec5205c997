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
    evaluation_report,
    exact_class_score,
    exact_class_scorer,
    expected_calibration_error,
    get_scorer,
    interval_report,
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


def _predictions(seed=0, n=300):
    """True and predicted ages and genders with every kind of gap the report must handle."""
    rng = np.random.default_rng(seed)
    age_true = rng.uniform(1, 90, n)
    age_true[:10] = np.nan  # unknown true age
    age_pred = age_true + rng.normal(0, 6, n)
    age_pred[10:25] = np.nan  # no face found
    gender_true = rng.choice(np.array(["female", "male"], dtype=object), n)
    gender_true[25:40] = None  # unknown true gender
    gender_true[40:45] = ""
    right = rng.random(n) < 0.85
    gender_pred = np.where(right, gender_true, np.where(gender_true == "male", "female", "male"))
    gender_pred[10:25] = None  # no face, no gender either
    proba = np.where(right, rng.uniform(0.7, 1, n), rng.uniform(0.5, 0.8, n))
    proba[10:25] = np.nan
    interval = np.column_stack((age_pred - 8, age_pred + 8))
    race = rng.choice(np.array(["White", "Black", None], dtype=object), n)
    return age_true, age_pred, gender_true, gender_pred, proba, interval, race


def test_evaluation_report_is_the_component_reports_on_the_right_rows():
    age_true, age_pred, gender_true, gender_pred, proba, interval, race = _predictions()
    report = evaluation_report(age_true, age_pred, gender_true=gender_true,
                               gender_pred=gender_pred, gender_proba=proba,
                               interval=interval, groups={"race": race})
    aged = ~np.isnan(age_true)
    both = aged & ~np.isnan(age_pred)
    assert (report["n"], report["n_age"], report["n_gender"], report["n_missing"]) == (
        300, 290, 280, 15)
    # age: over the rows with a true age; a missing prediction is out of the MAE and
    # wrong in one-class-off and CS@5
    assert report["mae"] == pytest.approx(mean_absolute_error(age_true[both], age_pred[both]))
    assert report["one_class_off"] == pytest.approx(
        one_class_off_score(age_true[aged], age_pred[aged]))
    assert report["cs5"] == pytest.approx(np.mean(np.abs(age_true - age_pred)[aged] <= 5))
    # gender: over the known true genders; a missing prediction is wrong
    known = np.array([g not in (None, "") for g in gender_true])
    hit = np.array([p is not None and p == g for p, g in zip(gender_pred, gender_true)])
    assert report["gender_accuracy"] == pytest.approx(hit[known].mean())
    assert report["gender_accuracy"] < hit[known & both].mean()  # the missed faces count
    # the interval: interval_report's numbers on the rows with a true age
    overall = interval_report(age_true[aged], interval[aged])[0]
    assert report["interval_coverage"] == overall["coverage"] < 1
    assert report["interval_width"] == pytest.approx(16)
    assert report["n_interval_missing"] == overall["n_missing"] == (aged & ~both).sum() == 15
    # calibration of "the printed gender is right" at the printed probability, faces found
    shown = known & ~np.isnan(proba)
    assert report["gender_ece"] == pytest.approx(
        expected_calibration_error(hit[shown].astype(int), proba[shown], labels=[0, 1]))
    assert report["gender_confidence"] == pytest.approx(proba[shown].mean())
    # the accuracy that confidence is compared with: over the rows with a probability,
    # so above the accuracy that counts the missed faces
    assert report["gender_proba_accuracy"] == pytest.approx(hit[shown].mean())
    assert report["gender_proba_accuracy"] > report["gender_accuracy"]
    assert report["n_proba_missing"] == (known & np.isnan(proba)).sum() > 0

    groups = report["per_group"]
    assert list(groups) == ["age", "gender", "race"]
    assert list(groups["age"]) == ["0-12", "13-19", "20-39", "40-59", "60+"]
    assert sorted(groups["gender"]) == ["female", "male"]
    assert sorted(groups["race"]) == ["Black", "White"]  # None is in no group
    for name in ("age", "gender", "race"):
        rows = groups[name].values()
        # each grouping covers the rows it can label, and the overall scores are their
        # size-weighted means
        labeled = {"age": aged, "gender": known, "race": race != None}[name]
        assert sum(row["n"] for row in rows) == labeled.sum()
        if name == "age":
            for key in ("one_class_off", "cs5", "interval_coverage"):
                weighted = sum(row["n"] * row[key] for row in rows) / labeled.sum()
                assert weighted == pytest.approx(report[key])
    old = age_true >= 59.5
    assert groups["age"]["60+"]["mae"] == pytest.approx(
        mean_absolute_error(age_true[both & old], age_pred[both & old]))
    black = race == "Black"
    assert groups["race"]["Black"]["gender_accuracy"] == pytest.approx(hit[known & black].mean())
    male = gender_true == "male"
    assert groups["gender"]["male"]["n_missing"] == (male & aged & np.isnan(age_pred)).sum()


def test_evaluation_report_without_gender_or_intervals_says_none():
    age_true, age_pred, _, gender_pred, *_ = _predictions(1)
    report = evaluation_report(age_true, age_pred)
    for key in ("gender_accuracy", "interval_coverage", "interval_width",
                "n_interval_missing", "gender_ece", "gender_confidence",
                "gender_proba_accuracy", "n_proba_missing"):
        assert report[key] is None
    assert list(report["per_group"]) == ["age"]
    assert report["n_gender"] == 0
    # no true gender known: nothing to score, even with predictions
    unknown = np.full(len(age_true), None, dtype=object)
    report = evaluation_report(age_true, age_pred, gender_true=unknown, gender_pred=gender_pred)
    assert report["gender_accuracy"] is None and "gender" not in report["per_group"]
    # a group with no true age has NaN age scores, not a crash
    only_unknown = np.where(np.isnan(age_true), "x", None)
    row = evaluation_report(age_true, age_pred, groups={"g": only_unknown})["per_group"]["g"]
    assert row["x"]["n"] == 10 and row["x"]["n_age"] == 0 and np.isnan(row["x"]["mae"])


def test_evaluation_report_refuses_inputs_it_cannot_score():
    age_true, age_pred, gender_true, _, proba, interval, _ = _predictions(2)
    with pytest.raises(ValueError, match="gender_true needs gender_pred"):
        evaluation_report(age_true, age_pred, gender_true=gender_true)
    with pytest.raises(ValueError, match="gender_proba needs gender_pred"):
        evaluation_report(age_true, age_pred, gender_proba=proba)
    with pytest.raises(ValueError, match="interval must have shape"):
        evaluation_report(age_true, age_pred, interval=interval[:, :1])
    with pytest.raises(ValueError, match="cannot be named 'age'"):
        evaluation_report(age_true, age_pred, groups={"age": gender_true})
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        evaluation_report(age_true, age_pred[:-1])
