"""One report of every score of age and gender predictions, overall and per group."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import check_consistent_length

from .._utils import known_labels
from ._age import _REPORT_AGE_GROUPS, age_error_report, age_group_labels
from ._calibration import calibration_report, interval_report

__all__ = ["evaluation_report"]

_NAN = float("nan")
# keys of the first row of interval_report / calibration_report -> keys of ours
_INTERVAL_KEYS = {"coverage": "interval_coverage", "mean_width": "interval_width",
                  "n_missing": "n_interval_missing"}
_CALIBRATION_KEYS = {"ece": "gender_ece", "mean_confidence": "gender_confidence",
                     "accuracy": "gender_proba_accuracy", "n_missing": "n_proba_missing"}


def _labels(values, name, n):
    """``values`` as an object array of length ``n`` (None stays None)."""
    values = np.asarray(values, dtype=object)
    if values.ndim != 1 or len(values) != n:
        raise ValueError(f"{name} must have shape ({n},); got {values.shape}.")
    return values


def evaluation_report(age_true: ArrayLike, age_pred: ArrayLike, *,
                      gender_true: ArrayLike | None = None,
                      gender_pred: ArrayLike | None = None,
                      gender_proba: ArrayLike | None = None,
                      interval: ArrayLike | None = None,
                      groups: dict[str, ArrayLike] | None = None) -> dict:
    """Every score of age and gender predictions, overall and per group, in one dict.

    Age scores (:func:`age_error_report`: MAE, one-class-off with 5-year classes, CS@5)
    are taken over the samples with a true age; a missing prediction (NaN, e.g. no face
    found) is left out of the MAE, counted in ``n_missing`` and counts as wrong in
    one-class-off and CS@5. To count a missing face as an error everywhere, predict
    a fallback age for it (``skagegender evaluate`` predicts the median training age).
    Gender scores are taken over the samples with a true gender; a missing gender
    prediction counts as wrong. Interval coverage and width (:func:`interval_report`)
    are taken over the samples with a true age; gender calibration
    (:func:`calibration_report`: the expected calibration error of the probability
    given to the predicted gender) over the samples with a true gender and a
    probability.

    Parameters
    ----------
    age_true : array-like of shape (n_samples,)
        True ages, NaN where unknown.
    age_pred : array-like of shape (n_samples,)
        Predicted ages, NaN where missing.
    gender_true : array-like of shape (n_samples,), default=None
        True genders (any labels), None, ``""`` or NaN where unknown. Needs
        ``gender_pred``.
    gender_pred : array-like of shape (n_samples,), default=None
        Predicted genders, None (or NaN) where missing. Without ``gender_true`` (or
        with no known true gender) there is nothing to score: the gender keys are None.
    gender_proba : array-like of shape (n_samples,), default=None
        Probability of the predicted gender (what
        :meth:`~skagegender.model.AgeGenderModel.predict_features` gives as
        ``gender_probability``), NaN where missing. Needs ``gender_pred``.
    interval : array-like of shape (n_samples, 2), default=None
        Lower and upper age of each prediction interval, NaN where missing.
    groups : dict of str to array-like of shape (n_samples,), default=None
        Extra groupings reported in ``per_group``, e.g. ``{"race": race}``; samples
        whose label is None, ``""`` or NaN are in no group of that grouping. The names
        ``"age"`` and (when gender is scored) ``"gender"`` are taken.

    Returns
    -------
    report : dict
        Overall scores and ``per_group``. Each set of scores (overall, and each group)
        has the keys:

        - ``n``: samples; ``n_age``: samples with a true age; ``n_gender``: samples
          with a true gender (0 when gender is not scored).
        - ``n_missing``: samples with a true age but no predicted age.
        - ``mae``, ``one_class_off``, ``cs5``: age scores.
        - ``gender_accuracy``: fraction of the predicted genders that are right.
        - ``interval_coverage``, ``interval_width``: fraction of the true ages inside
          their interval, and the intervals' mean width in years;
          ``n_interval_missing``: samples with a true age but no interval.
        - ``gender_ece``, ``gender_confidence``: expected calibration error (10 bins)
          and mean of ``gender_proba``; ``gender_proba_accuracy``: the accuracy they
          are compared with, over the samples with a probability;
          ``n_proba_missing``: samples with a true gender but no probability.

        A score is None when its inputs were not given (no ``interval``, no known true
        gender, ...) and NaN when the group has no sample to take it on. ``per_group``
        maps ``"age"`` (groups 0-12, 13-19, 20-39, 40-59, 60+ by true age),
        ``"gender"`` (by true gender, when gender is scored) and each key of
        ``groups`` to ``{label as str: scores}``, empty groups left out.

    See Also
    --------
    age_error_report, interval_report, calibration_report : the per-metric reports.

    Examples
    --------
    >>> from skagegender.metrics import evaluation_report
    >>> report = evaluation_report(
    ...     [5, 30, 70, 40], [7, 31, float("nan"), 44],
    ...     gender_true=["female", "male", "male", None],
    ...     gender_pred=["female", "female", None, "male"],
    ...     gender_proba=[0.9, 0.6, float("nan"), 0.8],
    ...     interval=[[3, 9], [25, 29], [float("nan")] * 2, [40, 50]])
    >>> report["n"], report["n_missing"], report["mae"], report["gender_accuracy"]
    (4, 1, 2.3333333333333335, 0.3333333333333333)
    >>> report["interval_coverage"], report["interval_width"]
    (0.5, 6.666666666666667)
    >>> sorted(report["per_group"]), sorted(report["per_group"]["age"])
    (['age', 'gender'], ['0-12', '20-39', '40-59', '60+'])
    >>> report["per_group"]["gender"]["male"]["gender_accuracy"]
    0.0
    """
    age_true = np.asarray(age_true, dtype=float)
    age_pred = np.asarray(age_pred, dtype=float)
    if age_true.ndim != 1:
        raise ValueError(f"age_true must be 1-d; got shape {age_true.shape}.")
    check_consistent_length(age_true, age_pred)
    n = len(age_true)
    if gender_true is not None and gender_pred is None:
        raise ValueError("gender_true needs gender_pred: the predictions to score.")
    if gender_proba is not None and gender_pred is None:
        raise ValueError("gender_proba needs gender_pred: the labels it is the probability of.")
    aged = ~np.isnan(age_true)
    gendered = np.zeros(n, dtype=bool)
    if gender_true is not None:
        gender_true = _labels(gender_true, "gender_true", n)
        gender_pred = _labels(gender_pred, "gender_pred", n)
        gendered = known_labels(gender_true)
        predicted = known_labels(gender_pred)
        correct = np.array([bool(p and t == g) for p, t, g in
                            zip(predicted, gender_true, gender_pred)], dtype=bool)
    scored_gender = bool(gendered.any())
    if gender_proba is not None:
        gender_proba = np.asarray(gender_proba, dtype=float)
        check_consistent_length(age_true, gender_proba)
    if interval is not None:
        interval = np.asarray(interval, dtype=float)
        if interval.shape != (n, 2):
            raise ValueError(f"interval must have shape ({n}, 2); got {interval.shape}.")

    def scores(mask):
        """Every score on the samples of ``mask``."""
        with_age, with_gender = mask & aged, mask & gendered
        row = {"n": int(mask.sum()), "n_age": int(with_age.sum()),
               "n_gender": int(with_gender.sum()), "n_missing": 0,
               "mae": _NAN, "one_class_off": _NAN, "cs5": _NAN}
        if with_age.any():
            ages = age_error_report(age_true[with_age], age_pred[with_age])[0]
            row.update({key: ages[key] for key in ("n_missing", "mae", "one_class_off", "cs5")})
        row["gender_accuracy"] = None
        if scored_gender:
            row["gender_accuracy"] = (float(correct[with_gender].mean())
                                      if with_gender.any() else _NAN)
        row.update(dict.fromkeys(_INTERVAL_KEYS.values()))
        if interval is not None:
            row.update(dict.fromkeys(_INTERVAL_KEYS.values(), _NAN), n_interval_missing=0)
            if with_age.any():
                spans = interval_report(age_true[with_age], interval[with_age])[0]
                row.update({ours: spans[theirs] for theirs, ours in _INTERVAL_KEYS.items()})
        row.update(dict.fromkeys(_CALIBRATION_KEYS.values()))
        if scored_gender and gender_proba is not None:
            row.update(dict.fromkeys(_CALIBRATION_KEYS.values(), _NAN), n_proba_missing=0)
            if with_gender.any():
                # calibration of "the predicted gender is right" at the given probability
                calibration = calibration_report(
                    correct[with_gender].astype(int), gender_proba[with_gender],
                    age=age_true[with_gender], labels=[0, 1])[0]
                row.update({ours: calibration[theirs]
                            for theirs, ours in _CALIBRATION_KEYS.items()})
        return row

    groupings = {"age": age_group_labels(age_true)}
    if scored_gender:
        groupings["gender"] = np.where(gendered, gender_true, None)
    for name, labels in (groups or {}).items():
        if name in groupings:
            raise ValueError(f"groups cannot be named {name!r}: per_group has it already.")
        groupings[name] = _labels(labels, f"groups[{name!r}]", n)
    report = scores(np.ones(n, dtype=bool))
    report["per_group"] = {}
    for name, labels in groupings.items():
        known = known_labels(labels)
        if name == "age":  # in age order
            values = [label for label, _, _ in _REPORT_AGE_GROUPS]
        else:
            values = sorted({str(value) for value in labels[known]})
        text = np.array([str(value) for value in labels], dtype=object)
        table = {}
        for value in values:
            mask = known & (text == value)
            if mask.any():
                table[value] = scores(mask)
        report["per_group"][name] = table
    return report
