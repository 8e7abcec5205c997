"""Research: weight of the dlib expected age next to the fine-tuned SFace layer.

Trains the fine-tuned layer (``scripts/finetune_sface.py``) on UTKFace folds 1-4
of KFold(5, shuffle, seed 0) and scores ``(1 - w) * finetuned + w * dlib`` for a
grid of w on the held-out fold 0 and on the degraded copies of fold 0's images
(a photo-domain shift that stays inside the validation data). This chose the
shipped weight (``DLIB_AGE_WEIGHT`` in ``skagegender/pretrained/_recipe.py``).
Needs torch.

    python benchmarks/levers/finetuned_blend.py --cache .emb-cache --maps .maps-cache
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from finetune_sface import (  # noqa: E402
    N_AGES,
    frozen_maps,
    layer_outputs,
    targets,
    train_layer,
)
from train_pretrained import embed_all  # noqa: E402

from skagegender.embedding._chipnets import DLIB_AGE, DLIB_AGE_CLASSES  # noqa: E402
from skagegender.pretrained._recipe import DLIB_AGE_START, degraded_sources  # noqa: E402

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--cache", default=".emb-cache")
    parser.add_argument("--maps", default=".maps-cache")
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.n_jobs)
    utk, utk_x, _, _, (source, deg_x) = embed_all(args.data, args.cache, args.n_jobs)
    age, female = targets(utk)
    maps, found = frozen_maps("utkface", list(utk.paths), args.maps, n_jobs=args.n_jobs)
    items = [(str(utk.paths[i]), int(seed))
             for i, seed in zip(*degraded_sources(len(utk.paths)))]
    deg_maps, deg_found = frozen_maps("utkface_degraded", items, args.maps, n_jobs=args.n_jobs)

    train, test = next(KFold(5, shuffle=True, random_state=0).split(age))
    layer = train_layer(maps, age, female, train[found[train]])
    dlib = slice(DLIB_AGE_START, DLIB_AGE_START + DLIB_AGE.dim)

    def opinions(m, x, rows):
        finetuned = layer_outputs(layer, m, rows)[:, :N_AGES] @ np.arange(N_AGES)
        return finetuned, x[rows, dlib] @ DLIB_AGE_CLASSES

    clean = test[found[test] & np.isfinite(utk_x[test, 0])]
    degraded = np.flatnonzero(~np.isin(source, train) & deg_found & np.isfinite(deg_x[:, 0]))
    sets = {"fold 0": (opinions(maps, utk_x, clean), age[clean]),
            "degraded copies of fold 0": (opinions(deg_maps, deg_x, degraded),
                                          age[source[degraded]])}
    for w in WEIGHTS:
        scores = [f"{name} ({len(y)}): MAE {np.abs((1 - w) * ft + w * dl - y).mean():.2f}"
                  for name, ((ft, dl), y) in sets.items()]
        print(f"w={w:.1f} | " + " | ".join(scores), flush=True)


if __name__ == "__main__":
    main()
