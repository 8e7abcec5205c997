"""Research: blend the MLP age head with the dlib age network's expected age.

Uses the SFace and dlib columns of the shipped features (through the embedding
cache that ``scripts/train_pretrained.py`` fills) and the recipe's training set.
This chose the previous default's weight; the shipped model now blends the
fine-tuned layer instead of the MLP (``scripts/finetune_sface.py``).
Fits the MLP age head once per split, then scores the blend
``(1 - w) * mlp + w * dlib`` for a grid of weights w on:

- UTKFace, one validation fold (KFold(5, shuffle, seed 0), fold 0);
- FG-NET, subject-disjoint 5-fold (the other 8 subjects in training);
- FG-NET cross-dataset (no FG-NET in training).

    python benchmarks/levers/blend.py --cache .emb-cache               # MLP on all 2,259
    python benchmarks/levers/blend.py --cache .emb-cache --mlp-on sface  # MLP on 2,176
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, KFold

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from train_pretrained import embed_all  # noqa: E402

from skagegender.embedding._chipnets import DLIB_AGE, DLIB_AGE_CLASSES  # noqa: E402
from skagegender.heads import AgeRegressor  # noqa: E402
from skagegender.metrics import cumulative_score, one_class_off_score  # noqa: E402
from skagegender.pretrained._recipe import (  # noqa: E402
    DLIB_AGE_START,
    FINETUNED_AGE_START,
    training_set,
)

WEIGHTS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)


def _scores(y, p):
    return (f"MAE {np.abs(y - p).mean():.2f} 1CoA {one_class_off_score(y, p):.1%} "
            f"CS@5 {cumulative_score(y, p, threshold=5):.1%}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--cache", default=".emb-cache")
    parser.add_argument("--mlp-on", choices=["all", "sface"], default="all")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    utk, utk_x, fg, fg_x, (source, deg_x) = embed_all(args.data, args.cache, 2)
    width = FINETUNED_AGE_START if args.mlp_on == "all" else DLIB_AGE_START
    block = slice(DLIB_AGE_START, DLIB_AGE_START + DLIB_AGE.dim)

    def dlib_age(X):
        return X[:, block] @ DLIB_AGE_CLASSES

    def fit_predict(X, y, X_test):
        head = clone(AgeRegressor(random_state=0)).fit(X[:, :width], y)
        pred = head.predict(X_test[:, :width])
        return np.where(np.isnan(pred), np.nanmedian(y), pred)

    age, fga = np.asarray(utk.age, float), np.asarray(fg.age, float)
    train, test = next(KFold(5, shuffle=True, random_state=0).split(age))
    X, y, _ = training_set(utk, utk_x, (source, deg_x), fg, fg_x, utk_rows=train)
    utk_mlp = fit_predict(X, y, utk_x[test])
    fg_mlp = np.full(len(fga), np.nan)
    for fold_train, fold_test in GroupKFold(5).split(fga, groups=fg.subject):
        X, y, _ = training_set(utk, utk_x, (source, deg_x), fg, fg_x, fgnet_rows=fold_train)
        fg_mlp[fold_test] = fit_predict(X, y, fg_x[fold_test])
    X, y, _ = training_set(utk, utk_x, (source, deg_x))
    fg_cross = fit_predict(X, y, fg_x)

    utk_dlib, fg_dlib = dlib_age(utk_x[test]), dlib_age(fg_x)
    utk_dlib = np.where(np.isnan(utk_dlib), utk_mlp, utk_dlib)
    print(f"MLP on {width} features; w = weight of the dlib expected age")
    for w in WEIGHTS:
        print(f"w={w:.1f} | UTKFace fold 0: {_scores(age[test], (1 - w) * utk_mlp + w * utk_dlib)}"
              f" | FG-NET by subject: {_scores(fga, (1 - w) * fg_mlp + w * fg_dlib)}"
              f" | FG-NET cross-dataset: {_scores(fga, (1 - w) * fg_cross + w * fg_dlib)}",
              flush=True)


if __name__ == "__main__":
    main()
