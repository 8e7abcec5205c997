"""Rebuild the shipped model, skagegender/pretrained/default.skag.

Trains the recipe of :mod:`skagegender.training._default_recipe` on every UTKFace image
of the shared data folder, degraded copies of 6,000 of them, and the FG-NET
images (weighted x10). Embeddings are cached (``--cache``), so a second run, or
``benchmarks/accuracy.py`` afterwards, does not embed again.

The age interval and the gender probability are then calibrated on held-out rows
(:func:`calibration_rows`: 2,100 UTKFace images whose fine-tuned features come from a
layer trained on the maps of the *other* UTKFace images, degraded copies of 30 % of
them, and the FG-NET images); this needs torch and a folder for the frozen SFace maps
(``--maps``). ``--recalibrate`` only re-does that step on the shipped file's heads.

    python scripts/train_pretrained.py --data ../shared/data --cache .emb-cache --maps .maps-cache
    python scripts/train_pretrained.py --recalibrate --cache .emb-cache --maps .maps-cache

UTKFace and FG-NET are research-only datasets: so is the model trained here.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from skagegender import __version__
from skagegender.datasets import embed_dataset
from skagegender.model import AgeGenderModel
from skagegender.pretrained import MODEL_FILE
from skagegender.training._default_recipe import (
    FGNET_CALIBRATION_WEIGHT,
    FGNET_WEIGHT,
    FINETUNED_AGE_START,
    N_CALIBRATION,
    _embed_quietly,
    calibrate_heads,
    embed_training_sets,
    make_embedder,
    make_heads,
    training_set,
)

#: Calibration images are embedded in blocks of this many (the cache names follow).
CALIBRATION_BLOCK = 700
#: The other images' maps are computed in blocks of this many.
REST_BLOCK = 1400


def embed_all(data_root, cache, n_jobs):
    """Features of UTKFace, its degraded copies and FG-NET, through the cache."""
    embedder = make_embedder(cache=str(cache), n_jobs=n_jobs)
    return embed_training_sets(embedder, data_root, cache=cache)


def _uncalibrated(head):
    """The fitted head inside a calibrator of :func:`calibrate_heads` (or ``head``)."""
    from skagegender.heads import AgeAwareCalibratedClassifier, ConformalAgeRegressor

    if isinstance(head, (AgeAwareCalibratedClassifier, ConformalAgeRegressor)):
        return head.estimator_.estimator
    return head


def transferred_gender_calibration(gender_head, X, gender):
    """Age-aware calibration for a gender head that saw the calibration images in training.

    Its own probabilities on those images are too confident to calibrate with (an MLP
    calibrated on its own training rows kept ECE 0.040, 0-12: 0.176, on held-out faces),
    so the calibration is learned from the held-out probabilities of 5 MLPs of the same
    recipe, each trained without one fold of the calibration rows (cross-fitting), and
    then put in front of ``gender_head`` (frozen). A stop-gap for ``--recalibrate``: a
    full rebuild keeps the calibration images out of the gender head instead.
    """
    from sklearn.base import clone
    from sklearn.frozen import FrozenEstimator

    from skagegender.embedding._finetuned import FINETUNED_AGE_CLASSES
    from skagegender.heads import AgeAwareCalibratedClassifier

    known = np.array([g is not None for g in gender]) & np.isfinite(X).all(axis=1)
    calibrated = AgeAwareCalibratedClassifier(
        clone(make_heads()[1]), age_start=FINETUNED_AGE_START,
        age_classes=FINETUNED_AGE_CLASSES, cv=5, random_state=0,
    ).fit(X[known], gender[known].astype(str))
    if list(calibrated.classes_) != list(gender_head.classes_):
        raise ValueError(f"gender classes differ: {calibrated.classes_} vs "
                         f"{gender_head.classes_}")
    calibrated.estimator_ = FrozenEstimator(gender_head)
    return calibrated


def calibration_rows(data_root, cache, maps_folder, n_jobs, n=N_CALIBRATION,
                     fgnet_weight=FGNET_CALIBRATION_WEIGHT):
    """Held-out feature rows for calibrating the heads' uncertainty.

    UTKFace is permuted with seed 0; the first ``n`` images are the calibration images,
    in blocks of :data:`CALIBRATION_BLOCK`, each with degraded copies of a seeded 30 %.
    The fine-tuned SFace layer is re-trained (``finetune_sface.train_layer``) on the
    maps of all the other images, and its outputs replace the fine-tuned columns of the
    calibration rows, so those rows look like new faces to it. FG-NET rows (never in
    the layer's training) keep the shipped layer's columns.

    Returns
    -------
    X : ndarray of shape (n_rows, n_features)
    age : ndarray of shape (n_rows,)
    gender : ndarray of shape (n_rows,), object (None for FG-NET)
    domain : ndarray of shape (n_rows,), str ("utkface", "degraded", "fgnet")
    source : ndarray of shape (n_rows,)
        Index of each row's image in the UTKFace (or, for FG-NET rows, the FG-NET)
        Bunch; the UTKFace ones must stay out of the heads' training.
    """
    import torch
    from finetune_sface import N_AGES, frozen_maps, layer_outputs, targets, train_layer

    from skagegender.training import degrade_photo
    from skagegender.embedding import load_image
    from skagegender.datasets import load_dataset

    torch.set_num_threads(n_jobs)
    embedder = make_embedder(cache=str(cache), n_jobs=n_jobs)
    utk = load_dataset("utkface", Path(data_root) / "UTKFace")
    age_all, female_all = targets(utk)
    order = np.random.default_rng(0).permutation(len(utk.paths))
    columns = slice(FINETUNED_AGE_START, FINETUNED_AGE_START + N_AGES + 1)
    rest_maps, rest_found, rest_rows = [], [], []
    for start in range(n, len(order), REST_BLOCK):
        rows = np.sort(order[start:start + REST_BLOCK])
        m, found = frozen_maps(f"rest_{start:05d}", [str(utk.paths[i]) for i in rows],
                               maps_folder, n_jobs=n_jobs)
        rest_maps.append(m), rest_found.append(found), rest_rows.append(rows)
    rest_rows = np.concatenate(rest_rows)
    layer = train_layer(np.concatenate(rest_maps), age_all[rest_rows], female_all[rest_rows],
                        np.flatnonzero(np.concatenate(rest_found)))
    del rest_maps
    parts = []
    for k, start in enumerate(range(0, n, CALIBRATION_BLOCK)):
        rows = np.sort(order[start:min(start + CALIBRATION_BLOCK, n)])
        paths = [str(utk.paths[i]) for i in rows]
        rng = np.random.default_rng(1000 + k)
        chosen = np.sort(rng.choice(len(rows), size=len(rows) * 3 // 10, replace=False))
        seeds = rng.integers(0, 2**31, size=len(chosen))
        x = _embed_quietly(embedder, paths)
        dx = _embed_quietly(embedder, [np.ascontiguousarray(degrade_photo(
            load_image(paths[i]), int(s))[..., ::-1]) for i, s in zip(chosen, seeds)])
        for name, feats, items in ((f"cal_utk_{k:02d}", x, paths),
                                   (f"cal_deg_{k:02d}", dx, [(paths[i], int(s))
                                                             for i, s in zip(chosen, seeds)])):
            m, found = frozen_maps(name, items, maps_folder, n_jobs=n_jobs)
            keep = np.flatnonzero(found & np.isfinite(feats[:, 0]))
            feats[keep, columns] = layer_outputs(layer, m, keep)
        parts.append((x, rows, "utkface"))
        parts.append((dx, rows[chosen], "degraded"))
    X = np.concatenate([p[0] for p in parts])
    source = np.concatenate([p[1] for p in parts])
    domain = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
    age = age_all[source]
    gender = np.asarray(utk.gender, dtype=object)[source]
    fg_x, fg = embed_dataset("fgnet", Path(data_root) / "FGNET", embedder=embedder, cache=cache)
    fg_rows = np.repeat(np.arange(len(fg_x)), fgnet_weight)
    return (np.concatenate([X, fg_x[fg_rows]]),
            np.concatenate([age, np.asarray(fg.age, float)[fg_rows]]),
            np.concatenate([gender, np.full(len(fg_rows), None, dtype=object)]),
            np.concatenate([domain, np.full(len(fg_rows), "fgnet")]),
            np.concatenate([source, fg_rows]))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data"), help="folder with UTKFace/ and FGNET/")
    parser.add_argument("--cache", default=".emb-cache", help="embedding cache folder")
    parser.add_argument("--out", default=str(MODEL_FILE))
    parser.add_argument("--maps", default=".maps-cache", help="frozen SFace maps folder")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--recalibrate", action="store_true",
                        help="keep the shipped heads, only re-fit their calibration")
    args = parser.parse_args()

    X_cal, age_cal, gender_cal, domain, source = calibration_rows(
        args.data, args.cache, args.maps, args.n_jobs)
    cal_rows = np.unique(source[domain == "utkface"])
    print(f"calibration rows: {dict(zip(*np.unique(domain, return_counts=True)))}", flush=True)
    start = time.perf_counter()
    if args.recalibrate:
        from skagegender.pretrained import load

        model = load()
        meta = {k: model.meta_[k] for k in ("trained_on", "licence_note", "n_training_rows")
                if k in model.meta_}
        age_head, gender_head = (_uncalibrated(h) for h in (model.age_head_, model.gender_head_))
        model.age_head_, _ = calibrate_heads(age_head, None, X_cal, age_cal, gender_cal)
        model.gender_head_ = transferred_gender_calibration(gender_head, X_cal, gender_cal)
        meta["gender_calibration"] = (
            "transferred: fitted on held-out probabilities of 5 MLPs of the same recipe "
            "trained without each calibration fold, applied to the shipped MLP")
    else:
        utk, utk_x, fg, fg_x, degraded = embed_all(args.data, args.cache, args.n_jobs)
        # the calibration images stay out of the heads' training
        train_rows = np.setdiff1d(np.arange(len(utk.paths)), cal_rows)
        X, age, gender = training_set(utk, utk_x, degraded, fg, fg_x, utk_rows=train_rows)
        age_head, gender_head = make_heads()
        model = AgeGenderModel(make_embedder(), age_head=age_head, gender_head=gender_head)
        model.fit_features(X, age, gender)
        model.age_head_, model.gender_head_ = calibrate_heads(
            model.age_head_, model.gender_head_, X_cal, age_cal, gender_cal)
        meta = {"trained_on": f"UTKFace (shared/data, {len(train_rows)} of 18,978 images) + "
                              "their degraded copies + FG-NET subjects 001-010 "
                              f"x{FGNET_WEIGHT}",
                "licence_note": "trained on research-only datasets: non-commercial use only",
                "n_training_rows": int(len(X))}
    path = model.save(args.out, extra_meta={
        **meta,
        "calibrated_on": f"{N_CALIBRATION} held-out UTKFace images (fine-tuned layer "
                         "re-trained without them) + degraded copies + FG-NET 001-010 "
                         f"x{FGNET_CALIBRATION_WEIGHT}",
        "skagegender_version": __version__,
    })
    print(f"fit {time.perf_counter() - start:.0f} s -> {path} "
          f"({Path(path).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
