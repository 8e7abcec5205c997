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


def _female(gender, n):
    """1.0 female, 0.0 male, NaN unknown: the fine-tuned layer's gender target."""
    female = np.full(n, np.nan)
    if gender is not None:
        known = known_labels(gender)
        female[known] = (gender[known].astype(str) == "female").astype(float)
    return female


def layer_training_rows(features, age, groups=None, *, random_state=0):
    """Rows :func:`fit_recipe` trains the default recipe's fine-tuned layer on.

    The training side of :func:`calibration_split` (the same rows the gender head
    learns from), restricted to images with a face and a known age.

    Returns
    -------
    rows : ndarray of int
    """
    features = np.asarray(features)
    age = np.asarray(age, dtype=float)
    train, _ = calibration_split(len(age), groups, random_state=random_state)
    usable = ~np.isnan(features).any(axis=1) & np.isfinite(age)
    return train[usable[train]]


def fit_recipe(recipe, features, age, gender=None, *, groups=None, embedder=None, maps=None,
               layer="train", layer_params=None, random_state=0):
    """An :class:`~skagegender.model.AgeGenderModel` of ``recipe`` fitted on your faces.

    ``"default"``: the whole shipped recipe. The images are split once
    (:func:`calibration_split`): 1 - :data:`CALIBRATION_SHARE` of them (by subject
    where ``groups`` is given) train the fine-tuned SFace layer
    (:func:`train_finetuned_layer` on their ``maps``, its default settings) and
    then the gender MLP; the age gate over the two age experts (the new layer and
    the dlib network) and the calibrators of the age interval and the gender
    probability learn from the rest, on which the new layer's outputs are held
    out. The ``sface_finetuned`` feature columns of every face are replaced by the
    new layer's outputs (computed as the embedder will compute them), and the
    returned model's embedder runs the new layer (``finetuned_weights``), which
    its model file stores. With ``layer="shipped"`` the layer shipped with the
    package is kept (no torch needed, no maps): its outputs are held-out outputs
    on your images too, since it never saw them.

    ``"fast"``: the fast model's heads on all images (no calibration, no layer).

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
        The embedder that made ``features``, stored in the model (default: the
        recipe's).
    maps : ndarray of shape (n, 1024, 7, 7) or None
        SFace ``conv_14_relu`` maps of the same images, in the same order
        (:func:`frozen_maps`; may be memory-mapped). Needed by ``"default"``
        with ``layer="train"``.
    layer : {"train", "shipped"}, default="train"
        ``"default"`` only: train the fine-tuned layer on your faces (needs
        torch: ``pip install "skagegender[train]"``) or keep the shipped one.
    layer_params : dict or None
        Settings passed to :func:`train_finetuned_layer` (default: its defaults,
        with ``random_state``).
    random_state : int

    Returns
    -------
    model : AgeGenderModel

    Raises
    ------
    ValueError
        For an unknown recipe or layer, missing or misshapen ``maps``, or fewer
        training faces than the layer's batch size (128 by default): train on
        more images or keep the shipped layer.

    Examples
    --------
    What ``skagegender train --recipe default --dataset utkface --root DIR
    --cache CACHE --out my.skag`` does:

    >>> from skagegender.datasets import embed_dataset
    >>> from skagegender.training import fit_recipe, frozen_maps, make_recipe_embedder
    >>> embedder = make_recipe_embedder("default")
    >>> X, data = embed_dataset("utkface", "DIR", embedder=embedder,
    ...                         cache="CACHE")                      # doctest: +SKIP
    >>> maps, _ = frozen_maps("utkface", list(data.paths), "CACHE")  # doctest: +SKIP
    >>> model = fit_recipe("default", X, data.age, data.gender, groups=data.get("subject"),
    ...                    embedder=embedder, maps=maps)            # doctest: +SKIP
    >>> model.save("my.skag")                                       # doctest: +SKIP
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
    if layer not in ("train", "shipped"):
        raise ValueError(f"layer must be 'train' or 'shipped', got {layer!r}")
    from ..heads import ExpectedAgeRegressor
    from ._default_recipe import calibrate_heads, expert_blocks, make_heads

    train, held_out = calibration_split(len(age), groups, random_state=random_state)
    if layer == "train":
        features, embedder = _with_trained_layer(features, age, gender, groups, embedder, maps,
                                                 layer_params, random_state)
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


def _with_trained_layer(features, age, gender, groups, embedder, maps, layer_params,
                        random_state):
    """Train the fine-tuned layer on the training rows; (features, embedder) that use it."""
    from sklearn.base import clone

    from ..embedding import feature_blocks
    from ._finetune import MAP_SHAPE, train_finetuned_layer

    if maps is None:
        raise ValueError(
            "the default recipe trains the fine-tuned SFace layer on the faces' maps: pass "
            "maps=frozen_maps(...)[0] of the same images, or layer='shipped' to keep the "
            "shipped layer")
    if len(maps) != len(features) or tuple(maps.shape[1:]) != MAP_SHAPE:
        raise ValueError(f"maps must have shape ({len(features)}, 1024, 7, 7), one per "
                         f"feature row, got {tuple(maps.shape)}")
    params = {"random_state": random_state, **(layer_params or {})}
    rows = layer_training_rows(features, age, groups, random_state=random_state)
    batch_size = params.get("batch_size", 128)
    if len(rows) < batch_size:
        raise ValueError(
            f"only {len(rows)} training faces: training the fine-tuned layer needs at least "
            f"its batch size, {batch_size}. Train on more images, or keep the shipped layer "
            "(layer='shipped'; skagegender train --shipped-layer)")
    trained = train_finetuned_layer(maps, age, _female(gender, len(age)), rows, **params)
    weights = trained.weights()
    blocks = feature_blocks(embedder.layers, model=embedder.model, identity=embedder.identity)
    if "sface_finetuned" not in blocks:
        raise ValueError(f"the embedder's layers {embedder.layers!r} have no 'sface_finetuned' "
                         "block for the trained layer")
    block = blocks["sface_finetuned"]
    embedder = clone(embedder).set_params(finetuned_weights=weights)
    features = features.copy()
    found = np.flatnonzero(~np.isnan(features).any(axis=1))
    features[np.ix_(found, np.arange(block.start, block.stop))] = weights.outputs(maps, found)
    return features, embedder
