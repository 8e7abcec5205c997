"""How the shipped model is made: features, training set, heads.

One recipe, used by ``scripts/train_pretrained.py`` (which writes the shipped
file) and by ``benchmarks/accuracy.py`` (which measures it with held-out folds),
so the numbers reported are the numbers of the model that ships.
"""

import warnings

import numpy as np

from .._utils import known_labels

#: Embedder options of the shipped model: pooled SFace activations, the dlib
#: age/gender networks' probabilities and the fine-tuned SFace layer's age
#: probabilities and P(female) (2,361 features).
EMBEDDER_PARAMS = {"layers": "age-gender-finetuned"}
#: Weight of each FG-NET image among the rows that train the age gate (the UTKFace
#: calibration images and their degraded copies weigh 1): FG-NET is the one
#: domain of old, scanned photos, and 115 images against ~2,700 would otherwise
#: leave the gate a UTKFace gate. Chosen by the worst of three held-out domains
#: (see MODEL_CARD.md, "Age fusion").
GATE_FGNET_WEIGHT = 20
#: Width in years of the age gate's Gaussian label (same choice).
GATE_LABEL_SIGMA = 0.5
#: Degraded copies of this many UTKFace photos join the training set.
N_DEGRADED = 6000
#: Weight (number of repeats) of each FG-NET image in the training set.
FGNET_WEIGHT = 10
#: Uncertainty calibration. UTKFace images held out for calibration: the
#: fine-tuned layer used for their features is trained on the maps of all other
#: UTKFace images, so their features look like a new face's.
N_CALIBRATION = 2100
#: Weight (repeats) of each FG-NET image among the calibration rows.
FGNET_CALIBRATION_WEIGHT = 3
#: Years added in quadrature to the fused age distribution's standard deviation to
#: make the spread of the conformal scores.
AGE_SPREAD_FLOOR = 2.0
#: Predicted-age groups of the interval's conformal quantiles (Mondrian).
#: (chosen by the worst of three held-out domains, see MODEL_CARD.md).
AGE_INTERVAL_EDGES = (8.0, 13.0, 18.0, 25.0, 35.0, 45.0, 60.0)


def make_embedder(**overrides):
    """The shipped model's embedder (``overrides``: n_jobs, cache, batch_size ...)."""
    from ..embedding import ArcFaceEmbedder

    return ArcFaceEmbedder(**{**EMBEDDER_PARAMS, **overrides})


def expert_blocks():
    """(fine-tuned layer, dlib) age experts as ``(start, class_ages)`` in the features."""
    from ..embedding import DLIB_AGE_CLASSES, FINETUNED_AGE_CLASSES, feature_blocks

    blocks = feature_blocks(EMBEDDER_PARAMS["layers"])
    return [(blocks["sface_finetuned_age"].start, FINETUNED_AGE_CLASSES),
            (blocks["dlib_age"].start, DLIB_AGE_CLASSES)]


def make_heads(random_state=0):
    """Unfitted (age, gender) heads of the shipped model.

    Age: a :class:`~skagegender.heads.GatedExpertsRegressor` over the fine-tuned
    SFace layer's and the dlib age network's age distributions; it must be fitted on
    rows whose fine-tuned columns are held out (:func:`calibrate_heads` does).
    Gender: an MLP on all features, fitted on the training rows.
    """
    from ..heads import GatedExpertsRegressor, GenderClassifier

    return (GatedExpertsRegressor(experts=expert_blocks(), label_sigma=GATE_LABEL_SIGMA),
            GenderClassifier(head="mlp", random_state=random_state))


def fit_gender_head(gender_head, X, gender):
    """A clone of the gender head, fitted on the rows of known gender.

    Parameters
    ----------
    gender_head : unfitted classifier (from :func:`make_heads`)
    X : ndarray of shape (n, n_features)
        The training rows (held out from :func:`calibrate_heads`'s rows).
    gender : array-like of shape (n,)
        "female", "male", or unknown (None, NaN or "": such rows are left out).

    Returns
    -------
    gender_head : fitted clone
    """
    from sklearn.base import clone

    gender = np.asarray(gender, dtype=object)
    known = known_labels(gender)
    return clone(gender_head).fit(X[known], gender[known].astype(str))


def calibrate_heads(age_head, gender_head, X, age, gender, fgnet=None, *, gate_sigma=None,
                    gate_fgnet_weight=None, sample_weight=None):
    """Fit the age gate and the calibrators on held-out rows.

    The age gate (unfitted, from :func:`make_heads`) is fitted on these rows, FG-NET
    rows weighted ``gate_fgnet_weight`` (default :data:`GATE_FGNET_WEIGHT`); it is then wrapped in a
    :class:`~skagegender.heads.ConformalAgeRegressor` (normalised, per predicted age
    group) calibrated on the same rows, FG-NET rows counted
    :data:`FGNET_CALIBRATION_WEIGHT` times. The fitted gender head is wrapped in an
    :class:`~skagegender.heads.AgeAwareCalibratedClassifier`. Both wrappers hold
    their head in a :class:`~sklearn.frozen.FrozenEstimator` (``cv=None``), so the
    rows given here must be held out from the gender head and from the fine-tuned
    layer.

    Parameters
    ----------
    age_head : unfitted age gate
    gender_head : fitted estimator or None
    X : ndarray of shape (n, n_features)
        Held-out feature rows (NaN rows are dropped).
    age : ndarray of shape (n,)
    gender : ndarray of shape (n,), object ("female"/"male"/None)
    fgnet : ndarray of shape (n,), bool, or None
        Which rows are FG-NET images (each given once).
    gate_sigma : float or None
        Width in years of the age gate's Gaussian label (its ``label_sigma``); None
        keeps the gate's own, :data:`GATE_LABEL_SIGMA` in the one of :func:`make_heads`.
    gate_fgnet_weight : float or None
        Weight of each FG-NET row in the gate's fit; None: :data:`GATE_FGNET_WEIGHT`.
    sample_weight : ndarray of shape (n,) or None
        How many times each row counts (whole numbers >= 0), on top of the FG-NET
        weights: a factor of the gate's ``sample_weight``; the calibrators see each
        row that many times. None: once each.

    Returns
    -------
    age_head, gender_head : the calibrated, fitted wrappers
    """
    from sklearn.base import clone
    from sklearn.frozen import FrozenEstimator

    from ..embedding import FINETUNED_AGE_CLASSES, feature_blocks
    from ..heads import AgeAwareCalibratedClassifier, ConformalAgeRegressor
    from ._train import repeated_rows

    fgnet = np.zeros(len(X), bool) if fgnet is None else np.asarray(fgnet, bool)
    weight = (np.ones(len(X)) if sample_weight is None
              else np.asarray(sample_weight, float))
    repeated_rows(weight)  # checks the weights
    found = ~np.isnan(X).any(axis=1)
    X, age, gender, fgnet, weight = (X[found], np.asarray(age, float)[found],
                                     np.asarray(gender, object)[found], fgnet[found],
                                     weight[found])
    gate = clone(age_head)
    if gate_sigma is not None:
        gate.set_params(label_sigma=gate_sigma)
    fgnet_weight = GATE_FGNET_WEIGHT if gate_fgnet_weight is None else gate_fgnet_weight
    gate.fit(X, age, sample_weight=np.where(fgnet, fgnet_weight, 1.0) * weight)
    counts = weight.astype(int)
    others, fg_rows = np.flatnonzero(~fgnet), np.flatnonzero(fgnet)
    rows = np.concatenate([np.repeat(others, counts[others]),
                           np.repeat(fg_rows, FGNET_CALIBRATION_WEIGHT * counts[fg_rows])])
    age_head = ConformalAgeRegressor(FrozenEstimator(gate), spread_floor=AGE_SPREAD_FLOOR,
                                     age_edges=AGE_INTERVAL_EDGES, cv=None).fit(X[rows],
                                                                                 age[rows])
    if gender_head is not None:
        known = np.repeat(np.flatnonzero(known_labels(gender)), counts[known_labels(gender)])
        age_start = feature_blocks(EMBEDDER_PARAMS["layers"])["sface_finetuned_age"].start
        gender_head = AgeAwareCalibratedClassifier(
            FrozenEstimator(gender_head), age_start=age_start,
            age_classes=FINETUNED_AGE_CLASSES, cv=None,
        ).fit(X[known], gender[known].astype(str))
    return age_head, gender_head


def _embed_quietly(embedder, images):
    from ..embedding import MissingFacesWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingFacesWarning)
        return embedder.transform(images)


def degraded_sources(n_paths, *, n=N_DEGRADED, random_state=0):
    """Which images get a degraded copy, and the seed of each copy.

    Returns
    -------
    source : ndarray of shape (min(n, n_paths),)
        Sorted indices of the originals.
    seeds : ndarray of the same shape
        :func:`~skagegender.datasets.degrade_photo` seed of each copy.
    """
    rng = np.random.default_rng(random_state)
    source = np.sort(rng.choice(n_paths, size=min(n, n_paths), replace=False))
    return source, rng.integers(0, 2**31, size=len(source))


def degraded_features(embedder, paths, *, n=N_DEGRADED, random_state=0):
    """Features of degraded copies of ``n`` seeded-random images of ``paths``.

    Returns
    -------
    source : ndarray of shape (n,)
        Index into ``paths`` of each copy's original.
    features : ndarray of shape (n, n_features)
    """
    from ..embedding import load_image
    from ._augment import degrade_photo

    source, seeds = degraded_sources(len(paths), n=n, random_state=random_state)
    features = []
    for start in range(0, len(source), 512):
        block = source[start:start + 512]
        # load_image gives BGR; the embedder takes RGB arrays by default
        images = [np.ascontiguousarray(degrade_photo(load_image(paths[i]),
                                                     int(seeds[start + j]))[..., ::-1])
                  for j, i in enumerate(block)]
        features.append(_embed_quietly(embedder, images))
    return source, np.concatenate(features)


#: Number of UTKFace images in the shared data folder (the degraded copies scale with it).
UTKFACE_SIZE = 18978


def n_degraded(limit=None):
    """Degraded copies for ``limit`` UTKFace images: N_DEGRADED for all, else in proportion."""
    if limit is None or limit >= UTKFACE_SIZE:
        return N_DEGRADED
    return max(1, round(N_DEGRADED * limit / UTKFACE_SIZE))


def training_sources(data_root, limit=None):
    """The shipped training mix under ``data_root``: a list of ``TrainingSource``.

    UTKFace (``limit``: a seeded subset of that many images) with degraded copies of
    the share ``N_DEGRADED / UTKFACE_SIZE`` of its images (:func:`n_degraded`), and
    FG-NET whole, each image counted :data:`FGNET_WEIGHT` times.
    """
    from pathlib import Path

    from ._train import TrainingSource

    return [TrainingSource("utkface", Path(data_root) / "UTKFace", limit=limit,
                           degraded=N_DEGRADED / UTKFACE_SIZE),
            TrainingSource("fgnet", Path(data_root) / "FGNET", weight=FGNET_WEIGHT)]


def embed_training_sets(embedder, data_root, *, cache, limit=None):
    """Features of UTKFace, its degraded copies and FG-NET under ``data_root``, cached.

    :func:`~skagegender.training.embed_training_data` of :func:`training_sources`:
    ``limit`` embeds a seeded subset of that many UTKFace images
    (:func:`~skagegender.datasets.subsample`) and :func:`n_degraded` copies; FG-NET
    is always whole. Prints one progress line per set. Returns ``(utk, utk_features,
    fgnet, fgnet_features, degraded)``, ``degraded`` as :func:`degraded_features`
    gives it.
    """
    import time

    from ._train import embed_training_data

    start = time.perf_counter()
    utk, fg = embed_training_data(training_sources(data_root, limit), embedder=embedder,
                                  cache=cache)
    for part, label in ((utk, "UTKFace"), (fg, "FG-NET")):
        print(f"{label}: {len(part.data.paths)} images, "
              f"{np.isfinite(part.features[:, 0]).sum()} faces", flush=True)
    n_copies = 0 if utk.degraded is None else len(utk.degraded[0])
    print(f"degraded copies: {n_copies}, {time.perf_counter() - start:.0f} s", flush=True)
    return utk.data, utk.features, fg.data, fg.features, utk.degraded


def training_set(utk, utk_features, degraded=None, fgnet=None, fgnet_features=None, *,
                 utk_rows=None, fgnet_rows=None):
    """Stack UTKFace rows, their degraded copies and weighted FG-NET rows.

    :func:`~skagegender.training.stack_training_data` with the shipped weights
    (FG-NET :data:`FGNET_WEIGHT`), each row repeated as many times as it counts.

    Parameters
    ----------
    utk : Bunch from :func:`~skagegender.datasets.load_utkface`
    utk_features : ndarray of shape (n_utk, n_features)
    degraded : (source, features) from :func:`degraded_features`, or None
    fgnet, fgnet_features : FG-NET Bunch and features, or None
    utk_rows, fgnet_rows : index arrays or None
        Rows allowed in training (a CV fold's training side); None means all.
        Degraded copies are used only where their original is allowed.

    Returns
    -------
    X : ndarray of shape (n, n_features)
    age : ndarray of shape (n,)
    gender : ndarray of shape (n,), object ("female"/"male"/None)
    """
    from sklearn.utils import Bunch

    from ._train import repeated_rows, stack_training_data

    parts = [Bunch(name="utkface", weight=1, data=utk, features=utk_features,
                   degraded=degraded)]
    if fgnet is not None:
        # FG-NET trains age only
        parts.append(Bunch(name="fgnet", weight=FGNET_WEIGHT, data=Bunch(**{**fgnet,
                                                                             "gender": None}),
                           features=fgnet_features, degraded=None))
    data = stack_training_data(parts, rows={"utkface": utk_rows, "fgnet": fgnet_rows})
    every = repeated_rows(data.sample_weight)
    return data.X[every], data.age[every], data.gender[every]
