"""How the shipped model is made: features, training set, heads.

One recipe, used by ``scripts/train_pretrained.py`` (which writes the shipped
file) and by ``benchmarks/accuracy.py`` (which measures it with held-out folds),
so the numbers reported are the numbers of the model that ships.
"""

import warnings

import numpy as np

#: Embedder options of the shipped model: pooled SFace activations, the dlib
#: age/gender networks' probabilities and the fine-tuned SFace layer's age
#: probabilities and P(female) (2,361 features).
EMBEDDER_PARAMS = {"layers": "age-gender-finetuned"}
#: First column of the dlib age probabilities in those features (after fc1 and
#: the pooled conv_8/12/14 activations: 128 + 512 + 512 + 1024).
DLIB_AGE_START = 2176
#: First column of the fine-tuned layer's 101 age probabilities (after the 81 + 2
#: dlib columns).
FINETUNED_AGE_START = 2259
#: Weight of the dlib age network's expected age in the age blend (the fine-tuned
#: layer has the rest). UTKFace validation fold 0, layer trained on folds 1-4
#: (``benchmarks/levers/finetuned_blend.py``):
#: MAE 4.27 for w = 0, 4.24 for 0.1, 4.28 for 0.2, 4.38 for 0.3; on the degraded
#: copies of that fold's images 4.68, 4.66, 4.68, 4.76. Neither tells 0.1 from 0.2;
#: the dlib network was trained on other photos and is the part that travels
#: (FG-NET MAE 4.11 alone), so it keeps 0.2.
DLIB_AGE_WEIGHT = 0.2
#: Degraded copies of this many UTKFace photos join the training set.
N_DEGRADED = 6000
#: Weight (number of repeats) of each FG-NET image in the training set.
FGNET_WEIGHT = 10
#: Uncertainty calibration (issue 17). UTKFace images held out for calibration: the
#: fine-tuned layer used for their features is trained on the maps of all other
#: UTKFace images, so their features look like a new face's.
N_CALIBRATION = 2100
#: Weight (repeats) of each FG-NET image among the calibration rows.
FGNET_CALIBRATION_WEIGHT = 3
#: Years added in quadrature to the fused age distribution's standard deviation to
#: make the spread of the conformal scores.
AGE_SPREAD_FLOOR = 2.0
#: Predicted-age groups of the interval's conformal quantiles (Mondrian).
#: These three choices (spread = the 0.8/0.2 mixture of the two experts' age
#: distributions with a 2-year floor, these groups, FG-NET x3) were the best of 40
#: variants by the worst of three held-out domains (2,100 UTKFace images with a layer
#: trained on the other 16,878, degraded copies of 630 of them, FG-NET leave-one-
#: subject-out): 80 % intervals covered 80.7 % / 81.9 % / 81.9 %, every UTKFace age
#: group >= 74 %; constant width: 81.2 % / 80.5 % / 73.2 % (see MODEL_CARD.md).
AGE_INTERVAL_EDGES = (8.0, 13.0, 18.0, 25.0, 35.0, 45.0, 60.0)


def make_embedder(**overrides):
    """The shipped model's embedder (``overrides``: n_jobs, cache, batch_size ...)."""
    from ..embedding import ArcFaceEmbedder

    return ArcFaceEmbedder(**{**EMBEDDER_PARAMS, **overrides})


def make_heads(random_state=0, interval_cv=None):
    """Unfitted (age, gender) heads of the shipped model.

    Age: a weighted mean (:class:`~sklearn.ensemble.VotingRegressor`) of the
    expected ages under the fine-tuned SFace layer's and the dlib age network's
    probabilities; neither part learns from the training set. Gender: an MLP on all
    features. The shipped model then wraps both in the calibrators of
    :func:`calibrate_heads`, fitted on held-out rows.

    ``interval_cv=k`` makes the age head keep k-fold out-of-fold residuals for its
    own (constant-width) ``predict_interval``; the shipped model does not use it.
    """
    from sklearn.ensemble import VotingRegressor

    from ..embedding._chipnets import DLIB_AGE_CLASSES
    from ..embedding._finetuned import FINETUNED_AGE_CLASSES
    from ..heads import AgeRegressor, ExpectedAgeRegressor, GenderClassifier

    blend = VotingRegressor(
        [("sface_finetuned", ExpectedAgeRegressor(start=FINETUNED_AGE_START,
                                                  class_ages=FINETUNED_AGE_CLASSES)),
         ("dlib", ExpectedAgeRegressor(start=DLIB_AGE_START, class_ages=DLIB_AGE_CLASSES))],
        weights=[1 - DLIB_AGE_WEIGHT, DLIB_AGE_WEIGHT],
    )
    return (AgeRegressor(head=blend, interval_cv=interval_cv, random_state=random_state),
            GenderClassifier(head="mlp", random_state=random_state))


def calibrate_heads(age_head, gender_head, X, age, gender):
    """Wrap fitted heads in calibrators fitted on held-out rows.

    The age head becomes a :class:`~skagegender.heads.ConformalAgeRegressor`
    (normalised, per predicted age group), the gender head an
    :class:`~skagegender.heads.AgeAwareCalibratedClassifier`; each wraps the fitted
    head in a :class:`~sklearn.frozen.FrozenEstimator` (``cv=None``), so the rows
    given here are the calibration rows and must be held out from the heads and from
    the fine-tuned layer (see ``scripts/train_pretrained.py --calibrate``).

    Parameters
    ----------
    age_head, gender_head : fitted estimators (``gender_head`` may be None)
    X : ndarray of shape (n, n_features)
        Held-out feature rows (NaN rows are dropped).
    age : ndarray of shape (n,)
    gender : ndarray of shape (n,), object ("female"/"male"/None)

    Returns
    -------
    age_head, gender_head : the calibrated, fitted wrappers
    """
    from sklearn.frozen import FrozenEstimator

    from ..embedding._finetuned import FINETUNED_AGE_CLASSES
    from ..heads import AgeAwareCalibratedClassifier, ConformalAgeRegressor

    found = ~np.isnan(X).any(axis=1)
    X, age, gender = X[found], np.asarray(age, float)[found], np.asarray(gender, object)[found]
    age_head = ConformalAgeRegressor(FrozenEstimator(age_head), spread_floor=AGE_SPREAD_FLOOR,
                                     age_edges=AGE_INTERVAL_EDGES, cv=None).fit(X, age)
    if gender_head is not None:
        known = np.array([g is not None for g in gender])
        gender_head = AgeAwareCalibratedClassifier(
            FrozenEstimator(gender_head), age_start=FINETUNED_AGE_START,
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
    from ._augment import degrade_photo
    from ..embedding import load_image

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


def embed_training_sets(embedder, data_root, *, cache):
    """Features of UTKFace, its degraded copies and FG-NET under ``data_root``, cached.

    Prints one progress line per set. Returns ``(utk, utk_features, fgnet,
    fgnet_features, degraded)``, ``degraded`` as :func:`degraded_features` gives it.
    """
    import time
    from pathlib import Path

    from ..datasets import embed_dataset

    start = time.perf_counter()
    utk_x, utk = embed_dataset("utkface", Path(data_root) / "UTKFace", embedder=embedder,
                               cache=cache)
    print(f"UTKFace: {len(utk.paths)} images, {np.isfinite(utk_x[:, 0]).sum()} faces, "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    fg_x, fg = embed_dataset("fgnet", Path(data_root) / "FGNET", embedder=embedder, cache=cache)
    print(f"FG-NET: {len(fg.paths)} images, {np.isfinite(fg_x[:, 0]).sum()} faces", flush=True)
    degraded = degraded_features(embedder, utk.paths)
    print(f"degraded copies: {len(degraded[0])}, {time.perf_counter() - start:.0f} s", flush=True)
    return utk, utk_x, fg, fg_x, degraded


def training_set(utk, utk_features, degraded=None, fgnet=None, fgnet_features=None, *,
                 utk_rows=None, fgnet_rows=None):
    """Stack UTKFace rows, their degraded copies and weighted FG-NET rows.

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
    utk_rows = np.arange(len(utk.paths)) if utk_rows is None else np.asarray(utk_rows)
    parts_x = [utk_features[utk_rows]]
    parts_age = [np.asarray(utk.age)[utk_rows]]
    parts_gender = [np.asarray(utk.gender, dtype=object)[utk_rows]]
    if degraded is not None:
        source, feats = degraded
        keep = np.isin(source, utk_rows)
        parts_x.append(feats[keep])
        parts_age.append(np.asarray(utk.age)[source[keep]])
        parts_gender.append(np.asarray(utk.gender, dtype=object)[source[keep]])
    if fgnet is not None:
        rows = np.arange(len(fgnet.paths)) if fgnet_rows is None else np.asarray(fgnet_rows)
        rows = np.repeat(rows, FGNET_WEIGHT)
        parts_x.append(fgnet_features[rows])
        parts_age.append(np.asarray(fgnet.age)[rows])
        parts_gender.append(np.full(len(rows), None, dtype=object))
    return (np.concatenate(parts_x), np.concatenate(parts_age),
            np.concatenate(parts_gender))
