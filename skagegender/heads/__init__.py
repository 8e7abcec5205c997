"""Estimators that turn face feature vectors into age and gender.

- :class:`AgeRegressor`: age in years, with a distribution and intervals for
  classifier heads.
- :class:`GenderClassifier`: gender labels and (optionally calibrated) probabilities.
- :class:`ExpectedAgeRegressor`: the expected age under class-probability columns
  already among the features (another model's opinion, to blend with a head).
- :class:`OrdinalLogisticRegression`: all-threshold / immediate-threshold ordinal
  logistic regression, usable alone.
- :func:`make_age_head`, :func:`make_gender_head`: the default estimator of each head
  family (``"mlp"``, ``"lightgbm"``, ``"ordinal"``).

Importing this module does not import lightgbm; the ``"lightgbm"`` family imports it
when built.
"""

from ._age import AgeRegressor
from ._expected import ExpectedAgeRegressor
from ._factory import make_age_head, make_gender_head
from ._gender import GenderClassifier
from ._ordinal import OrdinalLogisticRegression

__all__ = [
    "AgeRegressor",
    "ExpectedAgeRegressor",
    "GenderClassifier",
    "OrdinalLogisticRegression",
    "make_age_head",
    "make_gender_head",
]
