"""Scores of a fitted model on a labeled dataset, as ``skagegender evaluate`` prints them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..metrics import evaluation_report

if TYPE_CHECKING:
    from sklearn.utils import Bunch

    from ._age_gender import AgeGenderModel

__all__ = ["evaluate_model", "has_intervals"]


def has_intervals(model: AgeGenderModel) -> bool:
    """Whether a fitted AgeGenderModel's age head gives age intervals.

    Parameters
    ----------
    model : AgeGenderModel
        Fitted.

    Returns
    -------
    bool
        False for a head without ``predict_interval`` (such a model's intervals are
        None in :meth:`~AgeGenderModel.predict_faces` and NaN elsewhere).
    """
    return hasattr(model.age_head_, "predict_interval")


def evaluate_model(model: AgeGenderModel, features: np.ndarray, data: Bunch, *,
                   return_predictions: bool = False) -> dict | tuple[dict, dict]:
    """Scores of a fitted AgeGenderModel on embedded dataset rows (``skagegender evaluate``).

    :func:`skagegender.metrics.evaluation_report` of the model's predictions, with
    ``n_images`` and ``n_faces_found``. Images without a found face are predicted
    ``model.fallback_age_`` (the median training age) and no gender: they stay in
    every age score and count as gender errors. The gender probability's calibration
    is taken on the faces found. A model whose age head gives no intervals (the
    shipped "fast" model) gets None for the interval scores, not a coverage of 0.
    Groups: age (by true age), gender and race where the dataset has them.

    Parameters
    ----------
    model : AgeGenderModel
        Fitted.
    features : ndarray of shape (n_images, n_features)
        ``model.embedder_``'s rows of the dataset's images (NaN rows: no face).
    data : Bunch
        The dataset (``age``; ``gender`` and ``race`` where known), in the rows' order.
    return_predictions : bool, default=False
        Also return the predictions that were scored.

    Returns
    -------
    report : dict
        ``n_images``, ``n_faces_found`` and the keys of ``evaluation_report``.
    predictions : dict of arrays
        Only with ``return_predictions``: ``age_true``, ``age_pred`` (the fallback
        age where no face was found), ``age_interval`` (None without intervals),
        ``coverage``, ``gender_true``, ``gender_pred``, ``gender_probability`` and
        ``found``; what :func:`skagegender.metrics.write_evaluation_report` plots.
    """
    details = model.predict_features(features)
    found = details["found"]
    gender = data.get("gender")
    scored = gender is not None and model.gender_head_ is not None
    age_pred = np.where(found, details["age"], model.fallback_age_)
    interval = details["age_interval"] if has_intervals(model) else None
    report = evaluation_report(
        data.age, age_pred,
        gender_true=gender, gender_pred=details["gender"] if gender is not None else None,
        gender_proba=details["gender_probability"] if scored else None,
        interval=interval,
        groups=None if data.get("race") is None else {"race": data.race})
    report = {"n_images": len(features), "n_faces_found": int(found.sum()), **report}
    if not return_predictions:
        return report
    return report, {"age_true": np.asarray(data.age, dtype=float), "age_pred": age_pred,
                    "age_interval": interval, "coverage": 0.8, "gender_true": gender,
                    "gender_pred": details["gender"],
                    "gender_probability": details["gender_probability"] if scored else None,
                    "found": found}
