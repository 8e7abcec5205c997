"""How the ``"fast"`` model is made: the compact network's features and heads.

The fast model runs no SFace pass: YuNet finds the face and skagegender's compact
network (SFace at half width on the aligned crop shrunk to 64 x 64, about 50 M
multiply-adds, trained by distillation from the default model:
:func:`~skagegender.training.train_compact`) gives 230 features: its 128-d
embedding, 101 age probabilities and P(female); the CC0 dlib age network adds its
81 age probabilities, a second age expert that knows old scans better
(``ArcFaceEmbedder(layers=("compact", "dlib_age"), identity=False,
flip_augment=True)``: each the mean over the face and its mirror image).

Shipped heads (``scripts/train_compact.py``): the age is an age gate over both
networks' age distributions with conformal intervals (normalised by the
distribution's spread, per predicted-age group), as the default model's; the
gender is a logistic regression on the features recalibrated per predicted age
group. Both are fitted on faces the network never trained on and FG-NET
subjects 001-010.

``skagegender train --recipe fast`` (:func:`fit_user_heads`) learns from the
user's faces: the age is a blend of the compact network's expected age and an
MLP on the features, the gender an MLP; both fitted on 80 % of the faces and
calibrated (intervals, gender probabilities) on the other 20 %.
"""

import numpy as np

from ._default_recipe import AGE_INTERVAL_EDGES, AGE_SPREAD_FLOOR

#: Embedder options of the fast model: the compact network's 230 outputs and the dlib
#: age network's 81 age probabilities (a second age expert), each averaged with those
#: of the mirror image (both chosen on validation faces, see MODEL_CARD.md).
EMBEDDER_PARAMS = {"layers": ("compact", "dlib_age"), "identity": False, "flip_augment": True}
#: Weight of the network's own expected age in the age blend that
#: ``train --recipe fast`` fits (an MLP on the 230 features has the rest).
USER_EXPECTED_AGE_WEIGHT = 0.5


def make_embedder(**overrides):
    """The fast model's embedder (``overrides``: n_jobs, cache, batch_size ...)."""
    from ..embedding import ArcFaceEmbedder

    return ArcFaceEmbedder(**{**EMBEDDER_PARAMS, **overrides})


def age_start():
    """First column of the compact network's 101 age probabilities in the features."""
    from ..embedding import COMPACT_EMBEDDING_WIDTH

    return COMPACT_EMBEDDING_WIDTH


def expected_age():
    """The network's expected age as a regressor (learns nothing from ``y``)."""
    from ..embedding import COMPACT_AGE_CLASSES
    from ..heads import ExpectedAgeRegressor

    return ExpectedAgeRegressor(start=age_start(), class_ages=COMPACT_AGE_CLASSES)


def _calibrated_gender(estimator, cv):
    from ..embedding import COMPACT_AGE_CLASSES
    from ..heads import AgeAwareCalibratedClassifier

    return AgeAwareCalibratedClassifier(estimator, age_start=age_start(),
                                        age_classes=COMPACT_AGE_CLASSES, cv=cv,
                                        random_state=0)


def expert_blocks(layers):
    """Age experts ``(start, class_ages)`` in the features of ``layers`` (compact first)."""
    from ..embedding import COMPACT_AGE_CLASSES, DLIB_AGE_CLASSES, feature_blocks

    blocks = feature_blocks(layers, identity=False)
    experts = [(blocks["compact_age"].start, COMPACT_AGE_CLASSES)]
    if "dlib_age" in blocks:
        experts.append((blocks["dlib_age"].start, DLIB_AGE_CLASSES))
    return experts


def fit_shipped_heads(X, age, gender, layers=EMBEDDER_PARAMS["layers"], *, fgnet=None,
                      gender_C=1.0):
    """The shipped fast model's heads, fitted on rows the network never trained on.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
        Features of ``ArcFaceEmbedder(layers=layers, identity=False)`` of held-out
        faces (NaN rows are dropped).
    age : ndarray of shape (n,)
    gender : ndarray of shape (n,), object ("female"/"male"/None), or None
        None: no gender head is fitted.
    layers : tuple of str
        ``("compact",)``, or ``("compact", "dlib_age")`` for a second age expert.
    fgnet : ndarray of shape (n,), bool, or None
        Which rows are FG-NET images (old scans): weighted as in the default recipe,
        :data:`GATE_FGNET_WEIGHT` in the age gate's fit and
        :data:`FGNET_CALIBRATION_WEIGHT` times among the interval's calibration rows.
    gender_C : float, default=1.0
        Inverse regularisation strength of the gender head's logistic regression.

    Returns
    -------
    age_head, gender_head : fitted
        A :class:`~skagegender.heads.ConformalAgeRegressor` around the network's
        expected age (with ``"dlib_age"``: around a
        :class:`~skagegender.heads.GatedExpertsRegressor` of both networks' age
        distributions, fitted on the same rows), and an
        :class:`~skagegender.heads.AgeAwareCalibratedClassifier` around a logistic
        regression (cross-fitted, 5 folds; fewer, or none, when a gender has fewer
        faces).
    """
    from sklearn.frozen import FrozenEstimator

    from .._utils import known_labels
    from ..heads import (
        ConformalAgeRegressor,
        GatedExpertsRegressor,
        GenderClassifier,
        make_gender_head,
    )
    from ._default_recipe import (
        FGNET_CALIBRATION_WEIGHT,
        GATE_FGNET_WEIGHT,
        GATE_LABEL_SIGMA,
    )

    found = ~np.isnan(X).any(axis=1)
    fgnet = np.zeros(len(X), bool) if fgnet is None else np.asarray(fgnet, bool)
    X, age, fgnet = X[found], np.asarray(age, float)[found], fgnet[found]
    gender = None if gender is None else np.asarray(gender, object)[found]
    experts = expert_blocks(tuple(layers))
    if len(experts) == 1:
        estimator = expected_age()
    else:
        estimator = FrozenEstimator(GatedExpertsRegressor(
            experts=experts, label_sigma=GATE_LABEL_SIGMA).fit(
                X, age, sample_weight=np.where(fgnet, GATE_FGNET_WEIGHT, 1.0)))
    rows = np.repeat(np.arange(len(X)), np.where(fgnet, FGNET_CALIBRATION_WEIGHT, 1))
    age_head = ConformalAgeRegressor(estimator, spread_floor=AGE_SPREAD_FLOOR,
                                     age_edges=AGE_INTERVAL_EDGES, cv=None).fit(X[rows],
                                                                                 age[rows])
    if gender is None:
        return age_head, None
    known = known_labels(gender)
    labels = gender[known].astype(str)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:  # nothing to learn a gender from
        return age_head, None
    head = GenderClassifier(head=make_gender_head("ordinal", random_state=0, C=gender_C),
                            random_state=0)
    smallest = counts.min()
    if smallest < 2:  # too few faces of a gender to cross-fit a calibration
        return age_head, head.fit(X[known], labels)
    return age_head, _calibrated_gender(head, min(5, smallest)).fit(X[known], labels)


def make_user_heads(random_state=0, expected_weight=USER_EXPECTED_AGE_WEIGHT):
    """Unfitted (age, gender) heads that ``train --recipe fast`` fits on the user's faces.

    Age: a :class:`~sklearn.ensemble.VotingRegressor` of the network's expected age
    (weight ``expected_weight``) and an MLP on the 230 features; with
    ``expected_weight=1`` the expected age alone, with 0 the MLP alone. Gender: an
    MLP on the features.
    """
    from sklearn.ensemble import VotingRegressor

    from ..heads import AgeRegressor, GenderClassifier

    if not 0 <= expected_weight <= 1:
        raise ValueError(f"expected_weight must be in [0, 1], got {expected_weight}")
    mlp = AgeRegressor(head="mlp", random_state=random_state)
    if expected_weight == 1:
        age = expected_age()
    elif expected_weight == 0:
        age = mlp
    else:
        age = VotingRegressor([("compact", expected_age()), ("mlp", mlp)],
                              weights=[expected_weight, 1 - expected_weight])
    return age, GenderClassifier(head="mlp", random_state=random_state)


def fit_user_heads(X, age, gender, train, held_out, *, random_state=0):
    """Heads of ``train --recipe fast``: fitted on ``train`` rows, calibrated on ``held_out``.

    Returns
    -------
    age_head, gender_head : fitted
        A :class:`~skagegender.heads.ConformalAgeRegressor` (constant spread, per
        predicted-age group) around the fitted age blend, and an
        :class:`~skagegender.heads.AgeAwareCalibratedClassifier` around the fitted
        gender MLP (None when no row has a known gender).
    """
    from sklearn.frozen import FrozenEstimator

    from .._utils import known_labels
    from ..heads import ConformalAgeRegressor

    X = np.asarray(X, float)
    age = np.asarray(age, float)
    gender = None if gender is None else np.asarray(gender, object)
    found = ~np.isnan(X).any(axis=1)
    train, held_out = np.asarray(train)[found[train]], np.asarray(held_out)[found[held_out]]
    age_model, gender_model = make_user_heads(random_state=random_state)
    age_model.fit(X[train], age[train])
    age_head = ConformalAgeRegressor(FrozenEstimator(age_model), spread="constant",
                                     age_edges=AGE_INTERVAL_EDGES, cv=None
                                     ).fit(X[held_out], age[held_out])
    if gender is None or not known_labels(gender[train]).any():
        return age_head, None
    fit_rows = train[known_labels(gender[train])]
    gender_model.fit(X[fit_rows], gender[fit_rows].astype(str))
    calibration = held_out[known_labels(gender[held_out])]
    if len(set(gender[calibration].astype(str))) < 2:
        return age_head, gender_model
    gender_head = _calibrated_gender(FrozenEstimator(gender_model), None)
    return age_head, gender_head.fit(X[calibration], gender[calibration].astype(str))
