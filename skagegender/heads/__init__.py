"""Estimators that turn face feature vectors into age and gender.

- :class:`AgeRegressor`: age in years, with a distribution and intervals for
  classifier heads.
- :class:`GenderClassifier`: gender labels and (optionally calibrated) probabilities.
- :class:`ExpectedAgeRegressor`: the expected age under class-probability columns
  already among the features (another model's opinion, to blend with a head).
- :class:`ConformalAgeRegressor`: age intervals from conformal scores, as wide as
  each face's age distribution and calibrated per predicted age group.
- :class:`AgeAwareCalibratedClassifier`: gender probabilities recalibrated per
  predicted age group (Platt scaling on held-out probabilities).
- :class:`OrdinalLogisticRegression`: all-threshold / immediate-threshold ordinal
  logistic regression, usable alone.
- :data:`HEAD_FAMILIES`: the head families (``"mlp"``, ``"lightgbm"``, ``"ordinal"``),
  each with its default estimators and search space;
  :func:`make_age_head`, :func:`make_gender_head` build a family's default estimator.

Importing this module does not import lightgbm; the ``"lightgbm"`` family imports it
when built.
"""

from ._age import AgeRegressor
from ._calibration import AgeAwareCalibratedClassifier, ConformalAgeRegressor
from ._expected import ExpectedAgeRegressor
from ._factory import (
    HEAD_FAMILIES,
    HeadFamily,
    available_head_families,
    make_age_head,
    make_gender_head,
)
from ._fusion import GatedExpertsRegressor
from ._gender import GenderClassifier
from ._ordinal import OrdinalLogisticRegression

__all__ = [
    "HEAD_FAMILIES",
    "AgeAwareCalibratedClassifier",
    "AgeRegressor",
    "ConformalAgeRegressor",
    "ExpectedAgeRegressor",
    "GatedExpertsRegressor",
    "GenderClassifier",
    "HeadFamily",
    "OrdinalLogisticRegression",
    "available_head_families",
    "make_age_head",
    "make_gender_head",
]
