"""Rebuild the shipped model, skagegender/pretrained/default.skag.

Trains the recipe of :mod:`skagegender.pretrained._recipe` on every UTKFace image
of the shared data folder, degraded copies of 6,000 of them, and the FG-NET
images (weighted x10). Embeddings are cached (``--cache``), so a second run, or
``benchmarks/accuracy.py`` afterwards, does not embed again.

    python scripts/train_pretrained.py --data ../shared/data --cache .emb-cache

UTKFace and FG-NET are research-only datasets: so is the model trained here.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from skagegender import __version__
from skagegender.model import AgeGenderModel, embed_dataset
from skagegender.pretrained import MODEL_FILE
from skagegender.pretrained._recipe import (
    FGNET_WEIGHT,
    degraded_features,
    make_embedder,
    make_heads,
    training_set,
)


def embed_all(data_root, cache, n_jobs):
    """Features of UTKFace, its degraded copies and FG-NET, through the cache."""
    embedder = make_embedder(cache=str(cache), n_jobs=n_jobs)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data"), help="folder with UTKFace/ and FGNET/")
    parser.add_argument("--cache", default=".emb-cache", help="embedding cache folder")
    parser.add_argument("--out", default=str(MODEL_FILE))
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()

    utk, utk_x, fg, fg_x, degraded = embed_all(args.data, args.cache, args.n_jobs)
    X, age, gender = training_set(utk, utk_x, degraded, fg, fg_x)
    age_head, gender_head = make_heads(interval_cv=3)
    start = time.perf_counter()
    model = AgeGenderModel(make_embedder(), age_head=age_head, gender_head=gender_head)
    model.fit_features(X, age, gender)
    path = model.save(args.out, extra_meta={
        "trained_on": "UTKFace (shared/data, all 18,978 images) + 6,000 degraded copies + "
                      f"FG-NET subjects 001-010 x{FGNET_WEIGHT}",
        "licence_note": "trained on research-only datasets: non-commercial use only",
        "skagegender_version": __version__,
        "n_training_rows": int(len(X)),
    })
    print(f"fit {time.perf_counter() - start:.0f} s -> {path} "
          f"({Path(path).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
