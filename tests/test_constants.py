"""One definition per constant: the places that share a constant agree."""

import numpy as np


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
