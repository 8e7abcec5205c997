"""Fit a shipped recipe's heads on your own labeled faces."""

from numbers import Integral
from typing import NamedTuple

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


class TrainingSource(NamedTuple):
    """One labeled dataset to train on, for :func:`embed_training_data`.

    Parameters
    ----------
    name : str
        A name of :data:`~skagegender.datasets.DATASETS`.
    root : str or path-like
        The dataset's folder.
    weight : int, default=1
        How many times each of its images counts (0: not trained on). Heads whose
        ``fit`` takes no ``sample_weight`` see each row that many times; the age
        gate and the fine-tuned layer get it as ``sample_weight``.
    limit : int or None, default=None
        A seeded subset of this many images (:func:`~skagegender.datasets.subsample`).
    degraded : float, default=0.0
        Share (0 to 1) of its images that also join as a degraded copy
        (:func:`degrade_photo`, seeded: :func:`degraded_sources`).
    """

    name: str
    root: object
    weight: int = 1
    limit: int | None = None
    degraded: float = 0.0


def check_sources(sources):
    """``sources`` as :class:`TrainingSource` s, checked before any work.

    A ``(name, root[, weight])`` tuple is accepted for each source.

    Raises
    ------
    ValueError
        For no source, an unknown dataset name, a weight that is not a whole number
        >= 0 (or all weights 0), or a degraded share outside [0, 1].
    FileNotFoundError
        For a root that is not a folder.
    """
    from pathlib import Path

    from ..datasets import DATASETS

    sources = [s if isinstance(s, TrainingSource) else TrainingSource(*s) for s in sources]
    if not sources:
        raise ValueError("no dataset to train on")
    for s in sources:
        if s.name not in DATASETS:
            raise ValueError(f"unknown dataset {s.name!r}: choose from {', '.join(DATASETS)}")
        if not Path(s.root).is_dir():
            raise FileNotFoundError(f"{s.name} folder not found: {s.root}")
        if isinstance(s.weight, bool) or not isinstance(s.weight, Integral) or s.weight < 0:
            raise ValueError(f"the weight of {s.name} must be a whole number >= 0, "
                             f"got {s.weight!r}")
        if not 0 <= s.degraded <= 1:
            raise ValueError(f"the degraded share of {s.name} must be between 0 and 1, "
                             f"got {s.degraded!r}")
    if not any(s.weight for s in sources):
        raise ValueError("every dataset has weight 0: nothing to train on")
    return sources


def embed_training_data(sources, *, embedder=None, cache=None, random_state=0, progress=None):
    """Embed several labeled datasets and their degraded copies, for training.

    Parameters
    ----------
    sources : list of TrainingSource or (name, root[, weight]) tuples
        Checked first (:func:`check_sources`).
    embedder : ArcFaceEmbedder or None
        As for :func:`~skagegender.datasets.embed_dataset`.
    cache : str, path-like or None
        Embedding cache folder (the originals' features; copies are embedded anew).
    random_state : int, default=0
        Seeds the choice and degradation of each dataset's copies.
    progress : bool or None
        As for :func:`~skagegender.datasets.embed_dataset`.

    Returns
    -------
    parts : list of sklearn.utils.Bunch
        One per source, in order: ``name``, ``root``, ``weight``, ``data`` (the
        loader's Bunch, restricted to ``limit``), ``features`` (NaN rows: no
        face), ``degraded``, ``(source, features)`` as :func:`degraded_features`
        gives them, or None, and ``degraded_seeds``, the :func:`degrade_photo` seed
        of each copy. :func:`stack_training_data` stacks them.
    """
    from sklearn.utils import Bunch

    from ..datasets import embed_dataset
    from ._default_recipe import degraded_features, degraded_sources

    sources = check_sources(sources)
    parts = []
    for s in sources:
        features, data = embed_dataset(s.name, s.root, embedder=embedder, cache=cache,
                                       limit=s.limit, progress=progress)
        n_copies = round(s.degraded * len(data.paths))
        degraded = seeds = None
        if n_copies:
            from ..embedding import ArcFaceEmbedder

            # embed_dataset's default embedder
            copier = embedder if embedder is not None else ArcFaceEmbedder(layers="age-gender")
            degraded = degraded_features(copier, [str(p) for p in data.paths], n=n_copies,
                                         random_state=random_state)
            seeds = degraded_sources(len(data.paths), n=n_copies, random_state=random_state)[1]
        parts.append(Bunch(name=s.name, root=str(s.root), weight=s.weight, data=data,
                           features=features, degraded=degraded, degraded_seeds=seeds))
    return parts


def stack_training_data(parts, *, rows=None):
    """Stack datasets' rows and their degraded copies into one training set.

    Each part's originals come first (at ``rows``, in that order), then its copies
    whose original is among them (each copy carries its original's labels and
    subject), then the next part.

    Parameters
    ----------
    parts : list of Bunch
        As :func:`embed_training_data` returns them (``name``, ``weight``,
        ``data``, ``features``, ``degraded``).
    rows : dict or None
        Dataset name -> index array of the images allowed (a CV fold's training
        side); a name not in it, or None, allows all.
    Returns
    -------
    data : sklearn.utils.Bunch
        ``X`` (n, n_features); ``age``; ``gender`` (object, None where unknown);
        ``groups`` (object: ``"name:subject"``, copies sharing their original's;
        ``"name#index"`` for a dataset without subject ids that has copies, so a
        copy stays beside its original; None otherwise); ``dataset`` (str);
        ``source`` (index into the part's ``data``); ``degraded`` (bool);
        ``sample_weight`` (the part's weight); ``images`` (path, or ``(path, seed)``
        for a copy: :func:`frozen_maps` items; None for a copy of a part without
        ``degraded_seeds``) and ``counts``, one dict per part
        (``name``, ``root``, ``weight``, ``n_images``, ``n_faces``, ``n_degraded``).
    """
    from sklearn.utils import Bunch

    rows = rows or {}
    cols = {key: [] for key in ("X", "age", "gender", "groups", "dataset", "source",
                                "degraded", "sample_weight")}
    items, counts = [], []
    for part in parts:
        data = part.data
        n = len(data.paths)
        allowed = np.arange(n) if rows.get(part.name) is None else np.asarray(rows[part.name])
        age = np.asarray(data.age, dtype=float)
        gender = (np.full(n, None, dtype=object) if data.get("gender") is None
                  else np.asarray(data.gender, dtype=object))
        subject = data.get("subject")
        if subject is not None:
            groups = np.array([f"{part.name}:{s}" for s in subject], dtype=object)
        elif part.degraded is not None:
            groups = np.array([f"{part.name}#{i}" for i in range(n)], dtype=object)
        else:
            groups = np.full(n, None, dtype=object)
        index = [allowed]
        copies = np.zeros(len(allowed), bool)
        feats = [np.asarray(part.features)[allowed]]
        copy_items = []
        if part.degraded is not None:
            source, copy_x = part.degraded
            keep = np.isin(source, allowed)
            index.append(source[keep])
            copies = np.concatenate([copies, np.ones(int(keep.sum()), bool)])
            feats.append(copy_x[keep])
            seeds = part.get("degraded_seeds")
            copy_items = ([None] * int(keep.sum()) if seeds is None else
                          [(str(data.paths[i]), int(seed)) for i, seed in
                           zip(source[keep], np.asarray(seeds)[keep])])
        index = np.concatenate(index)
        cols["X"].append(np.concatenate(feats))
        cols["age"].append(age[index])
        cols["gender"].append(gender[index])
        cols["groups"].append(groups[index])
        cols["dataset"].append(np.full(len(index), part.name, dtype=object))
        cols["source"].append(index)
        cols["degraded"].append(copies)
        cols["sample_weight"].append(np.full(len(index), part.weight, dtype=float))
        items += [str(data.paths[i]) for i in allowed] + copy_items
        counts.append({"name": part.name, "root": part.get("root"), "weight": part.weight,
                       "n_images": len(allowed),
                       "n_faces": int(np.isfinite(feats[0][:, 0]).sum()) if len(allowed) else 0,
                       "n_degraded": int(copies.sum())})
    out = Bunch(**{key: np.concatenate(value) for key, value in cols.items()})
    if all(g is None for g in out.groups):
        out.groups = None
    out.images, out.counts = items, counts
    return out


def repeated_rows(sample_weight):
    """Row indices with each row repeated by its weight (a whole number >= 0).

    What heads whose ``fit`` takes no ``sample_weight`` are fitted on.
    """
    weight = np.asarray(sample_weight, dtype=float)
    if (weight < 0).any() or not np.all(np.isfinite(weight)) or (weight % 1).any():
        raise ValueError("sample_weight must hold whole numbers >= 0 (how many times each "
                         "row counts)")
    return np.repeat(np.arange(len(weight)), weight.astype(int))


def calibration_split(n, groups=None, *, share=CALIBRATION_SHARE, random_state=0,
                      datasets=None):
    """(training rows, held-out rows) of ``n`` images; a subject stays on one side.

    Parameters
    ----------
    n : int
    groups : array-like of shape (n,) or None
        Subject ids (None, or None for every row of a dataset: a seeded split of
        the images).
    share : float
        Share of the images (or subjects) held out.
    random_state : int
    datasets : array-like of shape (n,) or None
        Which dataset each row comes from: each dataset is split on its own, so
        each gives about ``share`` of its images (or subjects). None: one dataset.

    Returns
    -------
    train, held_out : ndarray of int
    """
    from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit

    groups = None if groups is None else np.asarray(groups, dtype=object)
    if datasets is None:
        datasets = np.zeros(n, dtype=object)
    datasets = np.asarray(datasets, dtype=object)
    train, held_out = [], []
    for name in dict.fromkeys(datasets.tolist()):  # in order of appearance
        rows = np.flatnonzero(datasets == name)
        these = None if groups is None else groups[rows]
        X = np.zeros((len(rows), 1))
        if these is None or all(g is None for g in these):
            splitter = ShuffleSplit(n_splits=1, test_size=share, random_state=random_state)
            tr, te = next(splitter.split(X))
        else:
            splitter = GroupShuffleSplit(n_splits=1, test_size=share, random_state=random_state)
            tr, te = next(splitter.split(X, groups=these.astype(str)))
        train.append(rows[tr])
        held_out.append(rows[te])
    return np.concatenate(train), np.concatenate(held_out)


def _female(gender, n):
    """1.0 female, 0.0 male, NaN unknown: the fine-tuned layer's gender target."""
    female = np.full(n, np.nan)
    if gender is not None:
        known = known_labels(gender)
        female[known] = (gender[known].astype(str) == "female").astype(float)
    return female


def layer_training_rows(features, age, groups=None, *, datasets=None, sample_weight=None,
                        random_state=0):
    """Rows :func:`fit_recipe` trains the default recipe's fine-tuned layer on.

    The training side of :func:`calibration_split` (the same rows the gender head
    learns from), restricted to images with a face, a known age and a weight above 0.

    Returns
    -------
    rows : ndarray of int
    """
    features = np.asarray(features)
    age = np.asarray(age, dtype=float)
    train, _ = calibration_split(len(age), groups, datasets=datasets, random_state=random_state)
    usable = ~np.isnan(features).any(axis=1) & np.isfinite(age)
    if sample_weight is not None:
        usable &= np.asarray(sample_weight, dtype=float) > 0
    return train[usable[train]]


def fit_recipe(recipe, features, age, gender=None, *, groups=None, datasets=None,
               sample_weight=None, embedder=None, maps=None, layer="train", layer_params=None,
               random_state=0):
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

    ``"fast"``: heads on the compact network's features, learned from your faces
    (:func:`~skagegender.training._fast_recipe.fit_user_heads`): the age is a blend
    of the network's expected age and an MLP, the gender an MLP, fitted on 80 % of
    the images and calibrated (age intervals, gender probabilities) on the other
    20 %, held out as for ``"default"``. The network itself is not retrained.

    Several datasets: stack them with :func:`embed_training_data` and
    :func:`stack_training_data` and pass its ``groups``, ``dataset`` (as
    ``datasets``) and ``sample_weight``. Each dataset is then split on its own,
    by subject where it has subject ids (a degraded copy follows its original),
    and each image counts ``sample_weight`` times: the heads' rows (and the
    calibration rows) are repeated that many times, the fine-tuned layer and the
    age gate get it as their ``sample_weight``.

    Parameters
    ----------
    recipe : {"default", "fast"}
    features : ndarray of shape (n, n_features)
        From :func:`make_recipe_embedder` ``(recipe)`` (NaN rows: no face).
    age : array-like of shape (n,)
    gender : array-like of shape (n,) or None
        "female" / "male"; None or "" where unknown.
    groups : array-like of shape (n,) or None
        Subject ids (None where a dataset has none).
    datasets : array-like of shape (n,) or None
        The dataset of each row: the calibration rows are held out from each
        dataset separately (:func:`calibration_split`). None: one dataset.
    sample_weight : array-like of shape (n,) or None
        How many times each row counts: whole numbers >= 0 (None: once each).
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
        For an unknown recipe or layer, a ``sample_weight`` that is not whole
        numbers >= 0, missing or misshapen ``maps``, or fewer
        training faces than the layer's batch size (:data:`LAYER_BATCH_SIZE`): train on
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

    On UTKFace and FG-NET, FG-NET counted ten times, with degraded copies of 30 %
    of the UTKFace images (``skagegender train --recipe default --dataset utkface
    --root A --dataset fgnet --root B --weight 1 --weight 10 --degraded-copies 0.3``
    copies 30 % of each dataset):

    >>> from skagegender.training import (TrainingSource, embed_training_data,
    ...                                   stack_training_data)
    >>> parts = embed_training_data([TrainingSource("utkface", "A", degraded=0.3),
    ...                              TrainingSource("fgnet", "B", weight=10)],
    ...                             embedder=embedder, cache="CACHE")  # doctest: +SKIP
    >>> data = stack_training_data(parts)                             # doctest: +SKIP
    >>> maps, _ = frozen_maps("mix", data.images, "CACHE")              # doctest: +SKIP
    >>> model = fit_recipe("default", data.X, data.age, data.gender, groups=data.groups,
    ...                    datasets=data.dataset, sample_weight=data.sample_weight,
    ...                    embedder=embedder, maps=maps)              # doctest: +SKIP
    """
    from ..model import AgeGenderModel

    features = np.asarray(features, dtype=np.float64)
    age = np.asarray(age, dtype=float)
    gender = None if gender is None else np.asarray(gender, dtype=object)
    if gender is not None and not known_labels(gender).any():
        gender = None
    weight = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
    every = np.arange(len(age)) if weight is None else repeated_rows(weight)
    embedder = make_recipe_embedder(recipe) if embedder is None else embedder
    if recipe == "fast":
        from ._fast_recipe import fit_user_heads

        train, held_out = calibration_split(len(age), groups, datasets=datasets,
                                            random_state=random_state)
        if weight is not None:  # each row as many times as it counts
            train = train[repeated_rows(weight[train])]
            held_out = held_out[repeated_rows(weight[held_out])]
        age_head, gender_head = fit_user_heads(features, age, gender, train, held_out,
                                               random_state=random_state)
        return AgeGenderModel.from_fitted_heads(embedder, age_head=age_head,
                                                gender_head=gender_head,
                                                fallback_age=float(np.nanmedian(age[every])))
    if recipe != "default":
        raise ValueError(f"unknown recipe {recipe!r}: choose from {', '.join(RECIPES)}")
    if layer not in ("train", "shipped"):
        raise ValueError(f"layer must be 'train' or 'shipped', got {layer!r}")
    from ._default_recipe import calibrate_heads, fit_gender_head, make_heads

    train, held_out = calibration_split(len(age), groups, datasets=datasets,
                                        random_state=random_state)
    if layer == "train":
        features, embedder = _with_trained_layer(features, age, gender, groups, embedder, maps,
                                                 layer_params, random_state, datasets, weight)
    if weight is not None:  # each row as many times as it counts
        train = train[repeated_rows(weight[train])]
    age_head, gender_head = make_heads(random_state=random_state)
    # the gender head is fitted on the training rows; the age gate and both
    # calibrators on the held-out rows, where the features are held out
    fitted_gender = None if gender is None else fit_gender_head(
        gender_head, features[train], gender[train])
    age_head, gender_head = calibrate_heads(
        age_head, fitted_gender, features[held_out], age[held_out],
        np.full(len(held_out), None, dtype=object) if gender is None else gender[held_out],
        sample_weight=None if weight is None else weight[held_out])
    return AgeGenderModel.from_fitted_heads(embedder, age_head, gender_head,
                                            fallback_age=float(np.nanmedian(age[every])))


def _with_trained_layer(features, age, gender, groups, embedder, maps, layer_params,
                        random_state, datasets=None, weight=None):
    """Train the fine-tuned layer on the training rows; (features, embedder) that use it."""
    from sklearn.base import clone

    from ..embedding import feature_blocks
    from ._finetune import LAYER_BATCH_SIZE, MAP_SHAPE, train_finetuned_layer

    if maps is None:
        raise ValueError(
            "the default recipe trains the fine-tuned SFace layer on the faces' maps: pass "
            "maps=frozen_maps(...)[0] of the same images, or layer='shipped' to keep the "
            "shipped layer")
    if len(maps) != len(features) or tuple(maps.shape[1:]) != MAP_SHAPE:
        raise ValueError(f"maps must have shape ({len(features)}, 1024, 7, 7), one per "
                         f"feature row, got {tuple(maps.shape)}")
    params = {"random_state": random_state, **(layer_params or {})}
    rows = layer_training_rows(features, age, groups, datasets=datasets, sample_weight=weight,
                               random_state=random_state)
    batch_size = params.get("batch_size", LAYER_BATCH_SIZE)
    if len(rows) < batch_size:
        raise ValueError(
            f"only {len(rows)} training faces: training the fine-tuned layer needs at least "
            f"its batch size, {batch_size}. Train on more images, or keep the shipped layer "
            "(layer='shipped'; skagegender train --shipped-layer)")
    if weight is not None:
        params.setdefault("sample_weight", weight)
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
