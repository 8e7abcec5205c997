"""Metrics for age and gender estimation.

Naming rule: ``*_score`` is higher-is-better, ``*_error`` is lower-is-better.

- :func:`one_class_off_score`, :func:`exact_class_score`: accuracy over age classes
  (5-year classes with 85+ by default, Adience groups, or any lower edges), after
  rounding ages to whole years; :func:`age_classes` gives the classes.
- :func:`cumulative_score`: CS@k, the fraction within ``k`` years.
- :func:`mean_absolute_error`: scikit-learn's, re-exported.
- :func:`age_error_report`: MAE, one-class-off and CS@5 overall, per age group and per
  any given group labels; :func:`age_group_labels` names each age's group.
- :func:`expected_calibration_error`: ECE of predicted probabilities;
  :func:`calibration_report`: accuracy, confidence and ECE overall and per age group.
- :func:`interval_coverage`, :func:`interval_report`: coverage and mean width of age
  intervals, overall and per age group.
- :func:`evaluation_report`: every score above of age and gender predictions at once,
  overall and per group (what ``skagegender evaluate`` prints).
- :func:`reliability_bins`: accuracy and confidence per probability bin.
- Plots: :class:`AgeErrorDisplay` (predicted against true age, error per age group),
  :class:`IntervalCoverageDisplay`, :class:`GenderReliabilityDisplay`, each with
  ``from_predictions`` and ``from_estimator``; :func:`write_evaluation_report` writes
  them with the tables of ``skagegender evaluate`` into one HTML page.
- Scorers :data:`one_class_off_scorer`, :data:`exact_class_scorer`,
  :data:`cumulative_scorer` and :func:`get_scorer` (our names, then scikit-learn's).
"""

from sklearn.metrics import mean_absolute_error

from ._age import (
    ADIENCE_EDGES,
    FIVE_YEAR_EDGES,
    age_classes,
    age_error_report,
    age_group_labels,
    cumulative_score,
    exact_class_score,
    one_class_off_score,
)
from ._calibration import (
    calibration_report,
    expected_calibration_error,
    interval_coverage,
    interval_report,
    reliability_bins,
)
from ._evaluation import evaluation_report
from ._plot import AgeErrorDisplay, GenderReliabilityDisplay, IntervalCoverageDisplay
from ._report import evaluation_html, evaluation_text, write_evaluation_report
from ._scorer import (
    SCORERS,
    cumulative_scorer,
    exact_class_scorer,
    get_scorer,
    one_class_off_scorer,
)

__all__ = [
    "ADIENCE_EDGES",
    "FIVE_YEAR_EDGES",
    "SCORERS",
    "AgeErrorDisplay",
    "GenderReliabilityDisplay",
    "IntervalCoverageDisplay",
    "age_classes",
    "age_error_report",
    "age_group_labels",
    "calibration_report",
    "cumulative_score",
    "cumulative_scorer",
    "evaluation_html",
    "evaluation_report",
    "evaluation_text",
    "exact_class_score",
    "exact_class_scorer",
    "expected_calibration_error",
    "get_scorer",
    "interval_coverage",
    "interval_report",
    "mean_absolute_error",
    "one_class_off_score",
    "one_class_off_scorer",
    "reliability_bins",
    "write_evaluation_report",
]
