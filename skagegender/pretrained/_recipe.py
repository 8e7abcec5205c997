"""How the shipped model is made: features, training set, heads.

One recipe, used by ``scripts/train_pretrained.py`` (which writes the shipped
file) and by ``benchmarks/accuracy.py`` (which measures it with held-out folds),
so the numbers reported are the numbers of the model that ships.
"""

import warnings

import numpy as np

#: Embedder options of the shipped model: pooled SFace activations + the dlib
#: age/gender networks' probabilities (2,259 features).
EMBEDDER_PARAMS = {"layers": "age-gender-dlib"}
#: First column of the dlib age probabilities in those features (after fc1 and
#: the pooled conv_8/12/14 activations: 128 + 512 + 512 + 1024).
DLIB_AGE_START = 2176
#: Weight of the dlib age network's expected age in the age blend (the MLP has
#: the rest). Chosen on one UTKFace validation fold and FG-NET subject folds
#: (``benchmarks/levers/blend.py --mlp-on sface``): 0.5 gave UTKFace MAE 4.98 vs
#: 5.46 for the MLP alone, FG-NET 4.31 vs 5.83.
DLIB_AGE_WEIGHT = 0.5
#: Degraded copies of this many UTKFace photos join the training set.
N_DEGRADED = 6000
#: Weight (number of repeats) of each FG-NET image in the training set.
FGNET_WEIGHT = 10


def make_embedder(**overrides):
    """The shipped model's embedder (``overrides``: n_jobs, cache, batch_size ...)."""
    from ..embedding import ArcFaceEmbedder

    return ArcFaceEmbedder(**{**EMBEDDER_PARAMS, **overrides})


def make_heads(random_state=0, interval_cv=None):
    """Unfitted (age, gender) heads of the shipped model.

    Age: the mean of an MLP on the SFace features and the dlib age network's
    expected age (a :class:`~sklearn.ensemble.VotingRegressor`). Gender: an MLP
    on all features.

    ``interval_cv=k`` makes the age head keep k-fold out-of-fold residuals for
    ``predict_interval`` (k extra fits; the shipped model uses 3).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import VotingRegressor
    from sklearn.pipeline import Pipeline

    from ..embedding._chipnets import DLIB_AGE_CLASSES
    from ..heads import AgeRegressor, ExpectedAgeRegressor, GenderClassifier, make_age_head

    # The MLP sees the SFace columns only: given the dlib probabilities too, it
    # leans on them where UTKFace rewards it and loses on FG-NET (blend.py: 6.28
    # vs 5.83 alone, 4.38 vs 4.31 in the blend).
    sface_mlp = Pipeline([
        ("sface_columns",
         ColumnTransformer([("sface", "passthrough", slice(0, DLIB_AGE_START))])),
        ("mlp", make_age_head("mlp", random_state=random_state)),
    ])
    blend = VotingRegressor(
        [("mlp", sface_mlp),
         ("dlib", ExpectedAgeRegressor(start=DLIB_AGE_START, class_ages=DLIB_AGE_CLASSES))],
        weights=[1 - DLIB_AGE_WEIGHT, DLIB_AGE_WEIGHT],
    )
    return (AgeRegressor(head=blend, interval_cv=interval_cv, random_state=random_state),
            GenderClassifier(head="mlp", random_state=random_state))


def _embed_quietly(embedder, images):
    from ..embedding import MissingFacesWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingFacesWarning)
        return embedder.transform(images)


def degraded_features(embedder, paths, *, n=N_DEGRADED, random_state=0):
    """Features of degraded copies of ``n`` seeded-random images of ``paths``.

    Returns
    -------
    source : ndarray of shape (n,)
        Index into ``paths`` of each copy's original.
    features : ndarray of shape (n, n_features)
    """
    from ..datasets import degrade_photo
    from ..embedding import load_image

    rng = np.random.default_rng(random_state)
    source = np.sort(rng.choice(len(paths), size=min(n, len(paths)), replace=False))
    seeds = rng.integers(0, 2**31, size=len(source))
    features = []
    for start in range(0, len(source), 512):
        block = source[start:start + 512]
        # load_image gives BGR; the embedder takes RGB arrays by default
        images = [np.ascontiguousarray(degrade_photo(load_image(paths[i]),
                                                     int(seeds[start + j]))[..., ::-1])
                  for j, i in enumerate(block)]
        features.append(_embed_quietly(embedder, images))
    return source, np.concatenate(features)


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
