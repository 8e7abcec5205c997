"""Scores of a fitted model on a labeled dataset, as ``skagegender evaluate`` prints them."""

import numpy as np

from ..metrics import evaluation_report

__all__ = ["evaluate_model"]


def evaluate_model(model, features, data):
    """Scores of a fitted AgeGenderModel on embedded dataset rows (``skagegender evaluate``).

    :func:`skagegender.metrics.evaluation_report` of the model's predictions, with
    ``n_images`` and ``n_faces_found``. Images without a found face are predicted
    ``model.fallback_age_`` (the median training age) and no gender: they stay in
    every age score and count as gender errors. The gender probability's calibration
    is taken on the faces found. Groups: age (by true age), gender and race where the
    dataset has them.

    Parameters
    ----------
    model : AgeGenderModel
        Fitted.
    features : ndarray of shape (n_images, n_features)
        ``model.embedder_``'s rows of the dataset's images (NaN rows: no face).
    data : Bunch
        The dataset (``age``; ``gender`` and ``race`` where known), in the rows' order.

    Returns
    -------
    report : dict
        ``n_images``, ``n_faces_found`` and the keys of ``evaluation_report``.
    """
    details = model.predict_details(features)
    found = details["found"]
    gender = data.get("gender")
    scored = gender is not None and model.gender_head_ is not None
    report = evaluation_report(
        data.age, np.where(found, details["age"], model.fallback_age_),
        gender_true=gender, gender_pred=details["gender"] if gender is not None else None,
        gender_proba=details["gender_probability"] if scored else None,
        interval=details["age_interval"],
        groups=None if data.get("race") is None else {"race": data.race})
    return {"n_images": len(features), "n_faces_found": int(found.sum()), **report}
