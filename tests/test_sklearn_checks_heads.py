"""scikit-learn's estimator contract on every public estimator of skagegender.heads.

Each estimator runs with small-data parameters (few iterations, few trees) so the suite
stays fast. Known deviations are named with a reason in ``EXPECTED_FAILED_CHECKS``;
``xfail_strict`` makes a deviation that disappears fail the suite too.
"""

import importlib.util
import os
import subprocess
import sys

import pytest
from sklearn.ensemble import VotingRegressor
from sklearn.utils.estimator_checks import parametrize_with_checks

from skagegender.heads import (
    AgeRegressor,
    ExpectedAgeRegressor,
    GatedExpertsRegressor,
    GenderClassifier,
    OrdinalLogisticRegression,
    make_age_head,
    make_gender_head,
)

HAS_LIGHTGBM = importlib.util.find_spec("lightgbm") is not None
NO_LIGHTGBM = "the lightgbm family needs lightgbm: pip install skagegender[lightgbm]"

# Small-data parameters per family. The checks' regression targets are standardised
# (negative, |y| < 3), so AgeRegressor runs with age_range=None (no clipping); the MLP
# needs a larger learning rate to fit 200 samples within a few hundred tiny epochs, on
# every row (early stopping is off so the small fits see every row). Seeds go into
# the head itself: the checks seed only a
# top-level random_state. The family defaults run too, as a user gets them.
SMALL_MLP = {"hidden_layer_sizes": (16,), "max_iter": 300, "learning_rate_init": 0.01,
             "early_stopping": False, "random_state": 0}
SMALL_LGBM = {"n_estimators": 50, "learning_rate": 0.1, "min_child_samples": 5, "n_jobs": 1,
              "random_state": 0}

ESTIMATORS = [
    AgeRegressor(make_age_head("mlp", **SMALL_MLP), age_range=None),
    AgeRegressor(make_age_head("ordinal", max_iter=50), age_range=None),
    AgeRegressor(make_age_head("ordinal", max_iter=50), age_range=None, interval_cv=3),
    AgeRegressor(age_range=None, random_state=0),
    GenderClassifier(make_gender_head("mlp", **SMALL_MLP)),
    GenderClassifier(random_state=0),
    GenderClassifier("ordinal"),
    GenderClassifier("ordinal", calibration="isotonic"),
    OrdinalLogisticRegression(variant="at"),
    OrdinalLogisticRegression(variant="it"),
    ExpectedAgeRegressor(),
    # two "experts" reading the same two columns; the checks' data has 2+ features except
    # in check_fit2d_1feature, which expects the error this gives
    GatedExpertsRegressor(experts=[(0, [20.0, 40.0]), (0, [30.0, 50.0])]),
    # A learned head blended with the expected value of probability columns, on the
    # checks' small data (the shipped model blends two ExpectedAgeRegressors).
    AgeRegressor(VotingRegressor([("mlp", make_age_head("mlp", **SMALL_MLP)),
                                  ("expected", ExpectedAgeRegressor(start=0))],
                                 weights=[0.9, 0.1]), age_range=None),
]

CALIBRATION_NEEDS_5_PER_CLASS = (
    "calibration runs 5-fold stratified cross-validation, which needs 5 samples per "
    "class; this check fits 10 samples of 2-3 classes and expects an error naming the "
    "single feature instead"
)


ORDINAL_ONE_DIRECTION = (
    "the check's three classes are blobs around unordered centres; an ordinal model "
    "cuts one linear score with thresholds, so it cannot separate them (accuracy "
    "< 0.83). Accuracy on ordered classes is tested in tests/test_ordinal.py"
)


BLEND_OF_UNTRAINED_OPINION = (
    "the blend adds the expected value of the check's random columns, an opinion "
    "that learns nothing from y, so the fit cannot reach R^2 > 0.5 on them; the "
    "blend's accuracy on real features is measured by benchmarks/accuracy.py"
)


GATE_OF_UNTRAINED_OPINIONS = (
    "the gate only weighs the experts' distributions (here: the check's random columns "
    "read as probabilities), which learn nothing from y, so it cannot reach R^2 > 0.5; "
    "its accuracy on real experts is tested in tests/test_fusion.py and measured by "
    "benchmarks/accuracy.py"
)


def expected_failed_checks(estimator):
    """Known deviations from the sklearn contract: check name -> reason."""
    if isinstance(estimator, GatedExpertsRegressor):
        return {"check_regressors_train": GATE_OF_UNTRAINED_OPINIONS}
    if isinstance(estimator, AgeRegressor) and isinstance(estimator.head, VotingRegressor):
        return {"check_regressors_train": BLEND_OF_UNTRAINED_OPINION}
    if isinstance(estimator, OrdinalLogisticRegression):
        return {"check_classifiers_train": ORDINAL_ONE_DIRECTION}
    if isinstance(estimator, GenderClassifier) and estimator.calibration is not None:
        return {"check_fit2d_1feature": CALIBRATION_NEEDS_5_PER_CLASS}
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# Without lightgbm its heads cannot be built: the family names stand in, so that each
# of their checks is still listed, as skipped.
LIGHTGBM_ESTIMATORS = (
    [AgeRegressor(make_age_head("lightgbm", **SMALL_LGBM), age_range=None),
     GenderClassifier(make_gender_head("lightgbm", **SMALL_LGBM))]
    if HAS_LIGHTGBM else [AgeRegressor("lightgbm", age_range=None), GenderClassifier("lightgbm")]
)


@pytest.mark.skipif(not HAS_LIGHTGBM, reason=NO_LIGHTGBM)
@parametrize_with_checks(LIGHTGBM_ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible_lightgbm_estimator(estimator, check):
    check(estimator)


@pytest.mark.slow  # a fresh interpreter and pytest run: about 15 s on two shared cores
def test_without_lightgbm_only_its_checks_are_skipped():
    # lightgbm made unimportable (None in sys.modules) in a fresh pytest run of this file,
    # one cheap check per estimator
    code = ("import sys; sys.modules['lightgbm'] = None; import pytest; "
            f"sys.exit(pytest.main([{__file__!r}, '-q', '-p', 'no:cacheprovider', "
            "'-k', 'check_no_attributes_set_in_init and not only_its']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(__file__), timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = run.stdout.strip().splitlines()[-1]
    assert f"{len(ESTIMATORS)} passed, 2 skipped" in summary, run.stdout
