"""Fit a shipped recipe's heads on your own labeled faces."""

import numpy as np

from .._utils import known_labels

#: Recipes :func:`fit_recipe` and ``skagegender train --recipe`` know.
RECIPES = ("default", "fast")
#: Share of the images held out (by subject where there are subject ids) to fit the
#: default recipe's age gate and its calibrators.
CALIBRATION_SHARE = 0.2


def make_recipe_embedder(recipe, **overrides):
    """The embedder of ``recipe`` (``overrides``: n_jobs, cache, batch_size ...)."""
    if recipe == "default":
        from ._default_recipe import make_embedder
    elif recipe == "fast":
        from ._fast_recipe import make_embedder
    else:
        raise ValueError(f"unknown recipe {recipe!r}: choose from {', '.join(RECIPES)}")
    return make_embedder(**overrides)


def calibration_split(n, groups=None, *, share=CALIBRATION_SHARE, random_state=0):
    """(training rows, held-out rows) of ``n`` images; a subject stays on one side.

    Parameters
    ----------
    n : int
    groups : array-like of shape (n,) or None
        Subject ids (None: every image is its own subject).
    share : float
        Share of the images (or subjects) held out.
    random_state : int

    Returns
    -------
    train, held_out : ndarray of int
    """
    from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit

    if groups is None:
        splitter = ShuffleSplit(n_splits=1, test_size=share, random_state=random_state)
        return next(splitter.split(np.zeros((n, 1))))
    splitter = GroupShuffleSplit(n_splits=1, test_size=share, random_state=random_state)
    return next(splitter.split(np.zeros((n, 1)), groups=np.asarray(groups)))


def fit_recipe(recipe, features, age, gender=None, *, groups=None, embedder=None,
               random_state=0):
    """An :class:`~skagegender.model.AgeGenderModel` of ``recipe`` fitted on your faces.

    ``"default"``: the shipped model's heads. The gender MLP learns from
    1 - :data:`CALIBRATION_SHARE` of the images; the age gate over the two age
    experts (the fine-tuned SFace layer shipped with the package and the dlib network)
    and the calibrators of the age interval and the gender probability learn from the
    rest (held out by subject where ``groups`` is given), on which the shipped
    fine-tuned layer's outputs are held-out outputs too, since it never saw your
    images. ``"fast"``: the fast model's heads on all images (no calibration).

    The fine-tuned layer itself is not retrained here: for that, see
    :func:`train_finetuned_layer` (the packaged embedder always runs the shipped
    layer).

    Parameters
    ----------
    recipe : {"default", "fast"}
    features : ndarray of shape (n, n_features)
        From :func:`make_recipe_embedder` ``(recipe)`` (NaN rows: no face).
    age : array-like of shape (n,)
    gender : array-like of shape (n,) or None
        "female" / "male"; None or "" where unknown.
    groups : array-like of shape (n,) or None
        Subject ids.
    embedder : ArcFaceEmbedder or None
        The embedder stored in the model (default: the recipe's).
    random_state : int

    Returns
    -------
    model : AgeGenderModel
    """
    from ..model import AgeGenderModel

    features = np.asarray(features, dtype=np.float64)
    age = np.asarray(age, dtype=float)
    gender = None if gender is None else np.asarray(gender, dtype=object)
    if gender is not None and not known_labels(gender).any():
        gender = None
    embedder = make_recipe_embedder(recipe) if embedder is None else embedder
    if recipe == "fast":
        from ._fast_recipe import make_heads

        age_head, gender_head = make_heads(random_state=random_state)
        return AgeGenderModel(embedder, age_head=age_head, gender_head=gender_head
                              ).fit_features(features, age, gender)
    if recipe != "default":
        raise ValueError(f"unknown recipe {recipe!r}: choose from {', '.join(RECIPES)}")
    from ..heads import ExpectedAgeRegressor
    from ._default_recipe import calibrate_heads, expert_blocks, make_heads

    train, held_out = calibration_split(len(age), groups, random_state=random_state)
    age_head, gender_head = make_heads(random_state=random_state)
    # the heads proper are fitted below; the placeholder age head keeps fit_features
    # from fitting the gate on the training rows, where the features are not held out
    placeholder = ExpectedAgeRegressor(start=expert_blocks()[0][0],
                                       class_ages=expert_blocks()[0][1])
    model = AgeGenderModel(embedder, age_head=placeholder, gender_head=gender_head)
    model.fit_features(features[train], age[train],
                       None if gender is None else gender[train])
    model.age_head_, model.gender_head_ = calibrate_heads(
        age_head, model.gender_head_, features[held_out], age[held_out],
        np.full(len(held_out), None, dtype=object) if gender is None else gender[held_out])
    model.fallback_age_ = float(np.nanmedian(age))
    return model
