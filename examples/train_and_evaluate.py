"""Train an age and gender model on UTKFace, evaluate it on held-out faces, plot the errors.

    python examples/train_and_evaluate.py --root ../shared/data/UTKFace --cache .emb-cache

Embeds the dataset once (cached), holds out 20 % of the images, fits the default
heads on the rest, prints MAE / one-class-off / CS@5 / gender accuracy, and saves
``utkface_errors.png``: MAE per age group, and predicted against true age.

The figure needs matplotlib (``pip install "skagegender[plot]"``); that is checked
before any image is embedded, and ``--no-plot`` skips the figure. The whole folder
(18,978 images) takes about half an hour to embed on one core the first time;
``--limit 1000`` (a seeded random subset) takes two to three minutes, ``--n-jobs 2``
embeds on two cores.
"""

import argparse
import sys

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch

from skagegender.datasets import embed_dataset
from skagegender.embedding import ArcFaceEmbedder
from skagegender.heads import AgeRegressor, GenderClassifier
from skagegender.model import AgeGenderModel, evaluate_model


def _pyplot():
    """matplotlib's pyplot with a file-only backend, or exit with the install hint."""
    try:
        import matplotlib
    except ImportError:
        sys.exit('The figure needs matplotlib: pip install "skagegender[plot]" '
                 "(or pass --no-plot to print the scores only).")
    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/UTKFace",
                        help="the UTKFace folder (default: %(default)s)")
    parser.add_argument("--cache", default=".emb-cache",
                        help="embedding cache folder, re-used by later runs (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use a seeded random subset of this many images (default: all)")
    parser.add_argument("--n-jobs", type=int, default=None,
                        help="processes that embed images; -1 = one per core (default: 1)")
    parser.add_argument("--out", default="utkface_errors.png",
                        help="where to save the figure (default: %(default)s)")
    parser.add_argument("--no-plot", action="store_true",
                        help="print the scores only; no figure, no matplotlib needed")
    args = parser.parse_args(argv)
    # before the embedding work: a missing optional dependency must not cost an hour
    plt = None if args.no_plot else _pyplot()

    embedder = ArcFaceEmbedder(layers="age-gender", n_jobs=args.n_jobs)
    features, data = embed_dataset("utkface", args.root, embedder=embedder, cache=args.cache,
                                   limit=args.limit)
    train, test = train_test_split(np.arange(len(features)), test_size=0.2, random_state=0)
    model = AgeGenderModel(embedder, age_head=AgeRegressor(random_state=0),
                           gender_head=GenderClassifier(random_state=0))
    model.fit_features(features[train], data.age[train], data.gender[train])

    held_out = Bunch(age=np.asarray(data.age, float)[test],
                     gender=np.asarray(data.gender, dtype=object)[test],
                     race=np.asarray(data.race, dtype=object)[test])
    result = evaluate_model(model, features[test], held_out)
    print(f"held-out faces: {result['n_images']}  MAE {result['mae']:.2f}  "
          f"one-class-off {result['one_class_off']:.1%}  CS@5 {result['cs5']:.1%}  "
          f"gender {result['gender_accuracy']:.1%}")
    if plt is None:
        return

    per_age = result["per_group"]["age"]
    pred = model.predict_features(features[test])["age"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.bar(list(per_age), [row["mae"] for row in per_age.values()], color="#4c72b0")
    left.set(title="MAE per age group (held out)", xlabel="true age", ylabel="MAE (years)")
    right.scatter(data.age[test], pred, s=3, alpha=0.3)
    right.plot([0, 100], [0, 100], color="black", linewidth=1)
    right.set(title="predicted vs true age", xlabel="true age", ylabel="predicted age",
              xlim=(0, 100), ylim=(0, 100))
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"figure -> {args.out}")


if __name__ == "__main__":
    main()
