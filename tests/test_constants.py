"""One definition per constant: the places that share a constant agree."""

import numpy as np
import pytest


def test_report_and_calibrator_age_groups_are_the_same_groups():
    from skagegender.heads import AgeAwareCalibratedClassifier, ConformalAgeRegressor
    from skagegender.metrics import age_group_labels

    ages = np.arange(0, 101)
    labels = age_group_labels(ages)
    names = list(dict.fromkeys(labels))
    assert names == ["0-12", "13-19", "20-39", "40-59", "60+"]
    for head in (ConformalAgeRegressor, AgeAwareCalibratedClassifier):
        edges = head.__init__.__kwdefaults__["age_edges"]
        # the calibrator's group of each whole age is the report's group of it
        np.testing.assert_array_equal(np.digitize(ages, edges),
                                      [names.index(label) for label in labels])


def test_the_adience_loader_and_the_adience_classes_use_the_same_groups():
    from skagegender.datasets import ADIENCE_AGE_GROUPS, adience_age_group
    from skagegender.metrics import age_classes

    assert len(ADIENCE_AGE_GROUPS) == 8
    for index, (low, high) in enumerate(ADIENCE_AGE_GROUPS):
        for age in (low, (low + high) / 2, high):  # inside a group: the same class in both
            assert adience_age_group(str(age)) == index
            assert age_classes([age], bins="adience")[0] == index


@pytest.mark.slow
def test_coverage_is_checked_once_with_one_message(capsys):

    from skagegender.cli import main
    from skagegender.heads import AgeRegressor, ConformalAgeRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    age = np.clip(40 + 10 * X[:, 0], 1, 90)
    heads = (AgeRegressor("ordinal").fit(X, age),
             ConformalAgeRegressor(AgeRegressor("ordinal"), min_group_size=5, cv=2).fit(X, age))
    message = "coverage must be a number strictly between 0 and 1, got "
    for bad in (0, 1, 1.5, -0.2, float("nan"), True, "0.8"):
        for head in heads:
            with pytest.raises(ValueError, match=message):
                head.predict_interval(X[:2], coverage=bad)
    with pytest.raises(SystemExit):
        main(["predict", "--coverage", "1.5", "x.jpg"])
    assert message + "1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--coverage", "wide", "x.jpg"])
    assert message + "'wide'" in capsys.readouterr().err


def test_the_aligned_crop_size_is_one_constant():
    from skagegender.embedding import ALIGNED_SIZE, ARCFACE_TEMPLATE, align_face

    assert ALIGNED_SIZE == 112
    assert (0 < ARCFACE_TEMPLATE).all() and (ARCFACE_TEMPLATE < ALIGNED_SIZE).all()
    image = np.zeros((300, 300, 3), np.uint8)
    assert align_face(image, ARCFACE_TEMPLATE * 2).shape == (ALIGNED_SIZE, ALIGNED_SIZE, 3)


def test_the_layer_batch_size_is_one_constant():
    from skagegender.training import LAYER_BATCH_SIZE, fit_recipe, train_finetuned_layer

    assert train_finetuned_layer.__kwdefaults__["batch_size"] == LAYER_BATCH_SIZE == 128
    n = 40
    rng = np.random.default_rng(0)
    X, age = rng.normal(size=(n, 8)), rng.uniform(1, 80, n)
    maps = np.zeros((n, 1024, 7, 7), np.float16)
    with pytest.raises(ValueError, match=f"at least its batch size, {LAYER_BATCH_SIZE}"):
        fit_recipe("default", X, age, maps=maps)
