"""Rebuild the shipped model, skagegender/pretrained/default.skag.

Trains the recipe of :mod:`skagegender.training._default_recipe` on every UTKFace image
of the shared data folder, degraded copies of 6,000 of them, and the FG-NET
images (weighted x10). Embeddings are cached (``--cache``), so a second run, or
``benchmarks/accuracy.py`` afterwards, does not embed again.

The age interval and the gender probability are then calibrated on held-out rows
(:func:`calibration_rows`: 2,100 UTKFace images whose fine-tuned features come from a
layer trained on the maps of the *other* UTKFace images, degraded copies of 30 % of
them, and the FG-NET images); this needs torch and a folder for the frozen SFace maps
(``--maps``). The age head, a gate over the two age experts, is fitted on those
held-out rows too.

    python scripts/train_pretrained.py --data ../shared/data --cache .emb-cache --maps .maps-cache
    python scripts/train_pretrained.py --finetune-layer ...   # the SFace layer too (torch)

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
from skagegender.training import repeated_rows, stack_training_data
from skagegender.training._default_recipe import (
    EMBEDDER_PARAMS,
    FGNET_CALIBRATION_WEIGHT,
    FGNET_WEIGHT,
    N_CALIBRATION,
    _embed_quietly,
    calibrate_heads,
    fit_gender_head,
    make_embedder,
    make_heads,
    training_sources,
)

#: Calibration images are embedded in blocks of this many (the cache names follow).
CALIBRATION_BLOCK = 700


def load_utkface(data_root, limit=None):
    """The UTKFace Bunch, or its seeded subset of ``limit`` images (``subsample``)."""
    from skagegender.datasets import load_dataset, subsample

    return subsample(load_dataset("utkface", Path(data_root) / "UTKFace"), limit)


def embed_parts(data_root, cache, n_jobs, limit=None):
    """Features of UTKFace, its degraded copies and FG-NET, through the cache.

    ``embed_training_data`` of the shipped mix (``training_sources``): ``limit``
    embeds a seeded subset of that many UTKFace images (and :func:`n_degraded`
    copies of them); FG-NET is always whole. Returns its parts.
    """
    from skagegender.training import embed_training_data

    embedder = make_embedder(cache=str(cache), n_jobs=n_jobs)
    parts = embed_training_data(training_sources(data_root, limit), embedder=embedder,
                                cache=cache)
    for part in parts:
        print(f"{part.name}: {len(part.data.paths)} images, "
              f"{np.isfinite(part.features[:, 0]).sum()} faces, "
              f"{0 if part.degraded is None else len(part.degraded[0])} degraded copies",
              flush=True)
    return parts


def embed_all(data_root, cache, n_jobs, limit=None):
    """:func:`embed_parts` as ``(utk, utk_features, fgnet, fgnet_features, degraded)``."""
    utk, fg = embed_parts(data_root, cache, n_jobs, limit)
    return utk.data, utk.features, fg.data, fg.features, utk.degraded


def calibration_rows(data_root, cache, maps_folder, n_jobs, n=N_CALIBRATION, fgnet_weight=1,
                     limit=None):
    """Held-out feature rows for calibrating the heads' uncertainty.

    UTKFace is permuted with seed 0; the first ``n`` images are the calibration images,
    in blocks of :data:`CALIBRATION_BLOCK`, each with degraded copies of a seeded 30 %.
    The fine-tuned SFace layer is re-trained (``train_finetuned_layer``) on the
    maps of all the other images, and its outputs replace the fine-tuned columns of the
    calibration rows, so those rows look like new faces to it. FG-NET rows (never in
    the layer's training) keep the shipped layer's columns.

    ``limit`` restricts UTKFace to its seeded subset of that many images (as
    :func:`embed_parts`); ``n`` must then be smaller than ``limit``.

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
    from skagegender.embedding import feature_blocks, load_image
    from skagegender.training import degrade_photo, frozen_maps, train_finetuned_layer

    embedder = make_embedder(cache=str(cache), n_jobs=n_jobs)
    utk = load_utkface(data_root, limit)
    age_all = np.asarray(utk.age, float)
    female_all = (np.asarray(utk.gender, dtype=object) == "female").astype(np.float32)
    order = np.random.default_rng(0).permutation(len(utk.paths))
    columns = feature_blocks(EMBEDDER_PARAMS["layers"])["sface_finetuned"]
    all_maps, all_found = frozen_maps("utkface", [str(p) for p in utk.paths], maps_folder,
                                      n_jobs=n_jobs)
    rest_rows = np.sort(order[n:])
    layer = train_finetuned_layer(all_maps, age_all, female_all,
                                  rest_rows[all_found[rest_rows]], n_threads=n_jobs)
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
        keep = np.flatnonzero(all_found[rows] & np.isfinite(x[:, 0]))
        x[keep, columns] = layer.outputs(all_maps, rows[keep])
        m, found = frozen_maps(f"cal_deg_{k:02d}", [(paths[i], int(s))
                                                    for i, s in zip(chosen, seeds)],
                               maps_folder, n_jobs=n_jobs)
        keep = np.flatnonzero(found & np.isfinite(dx[:, 0]))
        dx[keep, columns] = layer.outputs(m, keep)
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


def finetune_layer(data_root, maps_folder, n_jobs):
    """Train the fine-tuned SFace layer on every UTKFace face; overwrite the packaged file.

    The embedder checks the packaged file's sha256: update ``SFACE_FINETUNED`` in
    ``skagegender/embedding/_finetuned.py`` with the printed one.
    """
    import hashlib

    from skagegender.datasets import load_dataset
    from skagegender.embedding._finetuned import SFACE_FINETUNED
    from skagegender.training import frozen_maps, train_finetuned_layer

    utk = load_dataset("utkface", Path(data_root) / "UTKFace")
    maps, found = frozen_maps("utkface", [str(p) for p in utk.paths], maps_folder,
                              n_jobs=n_jobs)
    female = np.where(np.asarray(utk.gender, dtype=object) == "female", 1.0, 0.0)
    layer = train_finetuned_layer(maps, np.asarray(utk.age, float), female,
                                  np.flatnonzero(found), n_threads=n_jobs)
    import skagegender

    path = Path(skagegender.__file__).parent / SFACE_FINETUNED.asset.relpath
    layer.export_onnx(path, doc="SFace embedding layer fine-tuned for age (101 classes) and "
                                "gender on UTKFace; research use only")
    print(f"-> {path}, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data"), help="folder with UTKFace/ and FGNET/")
    parser.add_argument("--cache", default=".emb-cache", help="embedding cache folder")
    parser.add_argument("--out", default=str(MODEL_FILE))
    parser.add_argument("--maps", default=".maps-cache", help="frozen SFace maps folder")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--finetune-layer", action="store_true",
                        help="first re-train the fine-tuned SFace layer on the maps of every "
                        "UTKFace image and export it over the packaged one (needs torch)")
    parser.add_argument("--limit", type=int, default=None,
                        help="a seeded subset of this many UTKFace images (smoke runs; "
                        "the degraded copies shrink in proportion)")
    parser.add_argument("--n-calibration", type=int, default=N_CALIBRATION,
                        help="held-out UTKFace calibration images (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.finetune_layer:
        finetune_layer(args.data, args.maps, args.n_jobs)

    X_cal, age_cal, gender_cal, domain, source = calibration_rows(
        args.data, args.cache, args.maps, args.n_jobs, n=args.n_calibration, limit=args.limit)
    cal_rows = np.unique(source[domain == "utkface"])
    print(f"calibration rows: {dict(zip(*np.unique(domain, return_counts=True)))}", flush=True)
    start = time.perf_counter()
    parts = embed_parts(args.data, args.cache, args.n_jobs, args.limit)
    n_utk = len(parts[0].data.paths)
    # the calibration images (and their copies) stay out of the gender head's training
    train_rows = np.setdiff1d(np.arange(n_utk), cal_rows)
    data = stack_training_data(parts, rows={"utkface": train_rows})
    every = repeated_rows(data.sample_weight)  # FG-NET images FGNET_WEIGHT times each
    X, age, gender = data.X[every], data.age[every], data.gender[every]
    age_head, gender_head = make_heads()
    # the gender head is fitted on the training rows; the age gate and both
    # calibrators on the held-out calibration rows
    gender_head = fit_gender_head(gender_head, X, gender)
    age_head, gender_head = calibrate_heads(
        age_head, gender_head, X_cal, age_cal, gender_cal, fgnet=domain == "fgnet")
    model = AgeGenderModel.from_fitted_heads(make_embedder(), age_head, gender_head,
                                             fallback_age=float(np.nanmedian(age)))
    meta = {"trained_on": f"UTKFace (shared/data, {len(train_rows)} of {n_utk:,} "
                          "images) + "
                          "their degraded copies + FG-NET subjects 001-010 "
                          f"x{FGNET_WEIGHT}; age gate on the held-out calibration rows",
            "licence_note": "trained on research-only datasets: non-commercial use only",
            "n_training_rows": len(X),
            "datasets": [{k: v for k, v in c.items() if k != "root"} for c in data.counts]}
    path = model.save(args.out, extra_meta={
        **meta,
        "calibrated_on": f"{args.n_calibration} held-out UTKFace images (fine-tuned layer "
                         "re-trained without them) + degraded copies + FG-NET 001-010 "
                         f"x{FGNET_CALIBRATION_WEIGHT}",
        "skagegender_version": __version__,
    })
    print(f"fit {time.perf_counter() - start:.0f} s -> {path} "
          f"({Path(path).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
