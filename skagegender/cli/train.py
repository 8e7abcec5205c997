"""``skagegender train``: fit age and gender heads and save a model file."""

import time

from .._utils import known_labels
from ._common import (
    _COMMAND_CODES,
    EXIT_OK,
    EXIT_USAGE,
    _error,
    _print_json,
    _share,
    _whole_number,
    add_command,
    add_shared,
)
from ._train_inputs import calibration_counts, check_inputs, training_maps

FEW_FACES = 1000


def add_arguments(sub):
    """Declare ``train`` and its options on the sub-command parsers ``sub``."""
    from ..heads import HEAD_FAMILIES
    from ..training import RECIPES

    heads = list(HEAD_FAMILIES)
    p = add_command(
        sub, "train", "fit age and gender heads and save a model file", _COMMAND_CODES,
        "Fit age and gender heads on one or more labeled datasets and save a model "
        "file. Several datasets: repeat --dataset NAME --root DIR, one pair each, "
        "optionally with one --weight each in the same order, e.g. '--dataset "
        "utkface --root UTKFace --dataset fgnet --root FGNET --weight 1 --weight 10' "
        "(FG-NET images count ten times). The pairs are checked before any work. "
        f"Warns on stderr when fewer than {FEW_FACES} faces are found: such a model "
        "is poor.")
    add_shared(p, "--dataset", action="append",
               help="the dataset's format; repeat for several datasets (required)")
    add_shared(p, "--root", action="append",
               help="the dataset's folder, one per --dataset in the same order (required)")
    p.add_argument("--weight", type=_whole_number, action="append", metavar="N",
                   help="how many times each image of the dataset counts (0: not trained "
                   "on), one per --dataset in the same order: the heads see its rows N "
                   "times, the age gate and the fine-tuned layer of --recipe default weigh "
                   "them N (default: 1 each)")
    p.add_argument("--degraded-copies", type=_share, default=0.0, metavar="FRACTION",
                   help="also train on degraded copies (smaller, blurred, recompressed, "
                   "recoloured: as old or poor photos look) of this share, 0 to 1, of each "
                   "dataset's images, seeded; a copy stays on its original's side of the "
                   "calibration split (default: 0, none)")
    p.add_argument("--out", required=True, help="model file to write (required)")
    p.add_argument("--recipe", choices=RECIPES, default=None,
                   help="train a shipped model's recipe on this dataset: 'default' (the "
                   "shipped features, an age gate over the fine-tuned SFace layer and the "
                   "dlib age network, calibrated on 20%% of each dataset's images, held out "
                   "by subject where it has subject ids (FG-NET, Adience, MORPH, IMDB-WIKI)) "
                   "or 'fast' (the fast model's features: the compact network's 230 outputs; "
                   "its age, a blend of the network's expected age and an MLP, and its gender "
                   "MLP are learned from 80%% of these images and calibrated on the other "
                   "20%%, held out as for 'default'; the network itself is not retrained); "
                   "--age-head, "
                   "--gender-head, --layers and --flip then do not apply. 'default' also "
                   "trains the fine-tuned SFace layer on 80%% of the images (needs torch: "
                   "pip install \"skagegender[train]\"; at least 128 faces), stored in the "
                   "model file")
    p.add_argument("--shipped-layer", action="store_true",
                   help="with --recipe default: keep the fine-tuned SFace layer shipped with "
                   "skagegender instead of training one (no torch needed) (default: off)")
    p.add_argument("--age-head", default="mlp", choices=heads,
                   help="the age head's family (default: %(default)s)")
    p.add_argument("--gender-head", default="mlp", choices=heads,
                   help="the gender head's family (default: %(default)s)")
    p.add_argument("--layers", default="age-gender",
                   help="feature blocks: 'age-gender', 'age-gender-dlib', 'age-gender-finetuned' "
                   "or 'none' for the identity embedding only (default: %(default)s)")
    p.add_argument("--params", metavar="FILE", action="append",
                   help="use the best head found by 'skagegender tune': FILE is what "
                   "'tune --json' printed (its target says which head); give it once per "
                   "head (default: --age-head/--gender-head with their default settings)")
    p.add_argument("--study", metavar="STORAGE",
                   help="use the best trials of 'skagegender tune' studies in this Optuna "
                   "storage (e.g. sqlite:///tune.db): the studies DATASET-age and "
                   "DATASET-gender, tune's default names, where present (default: none)")
    p.add_argument("--study-name", metavar="NAME", action="append",
                   help="with --study: read this study instead (repeat for the other head) "
                   "(default: tune's default names)")
    add_shared(p, "--flip", "--cache", "--n-jobs", "--json")
    add_shared(p, "--limit", help="use a seeded random subset of this many images of each "
               "dataset (default: all)")
    p.set_defaults(func=run)
    return p


def run(args):
    """Run ``skagegender train``; returns the exit code."""
    import numpy as np

    from ..embedding import ArcFaceEmbedder
    from ..heads import AgeRegressor, GenderClassifier
    from ..model import AgeGenderModel
    from ..training import (
        embed_training_data,
        make_recipe_embedder,
        repeated_rows,
        stack_training_data,
    )

    checked = check_inputs(args)
    if checked is None:
        return EXIT_USAGE
    tuned, sources = checked
    if args.recipe is not None:
        embedder = make_recipe_embedder(args.recipe, n_jobs=args.n_jobs)
    else:
        embedder = ArcFaceEmbedder(layers=None if args.layers == "none" else args.layers,
                                   flip_augment=args.flip, n_jobs=args.n_jobs)
    start = time.perf_counter()
    data = stack_training_data(embed_training_data(sources, embedder=embedder,
                                                   cache=args.cache))
    features = data.X
    embed_seconds = time.perf_counter() - start
    n_faces = int((~np.isnan(features).any(axis=1)).sum())
    if n_faces < FEW_FACES:
        _error("train", f"warning: only {n_faces} faces to learn from. A model trained on fewer "
                        f"than {FEW_FACES} faces will be poor: that leaves a few faces per year of "
                        "age for the heads to learn from. Train on more images (raise or drop "
                        "--limit).")
    gender = data.gender
    has_gender = known_labels(gender).any()
    layer = "shipped" if args.recipe != "default" or args.shipped_layer else "train"
    counts = data.counts
    if args.recipe is not None:
        from ..training import fit_recipe

        maps = None
        if layer == "train":
            maps = training_maps(args, data)
            if maps is None:
                return EXIT_USAGE
        model = fit_recipe(args.recipe, features, data.age, gender if has_gender else None,
                           groups=data.groups, datasets=data.dataset,
                           sample_weight=data.sample_weight, embedder=embedder, maps=maps,
                           layer=layer)
        if args.recipe == "default":  # the split fit_recipe made, per dataset
            calibration_counts(data, counts)
    else:
        every = repeated_rows(data.sample_weight)
        model = AgeGenderModel(
            embedder, age_head=tuned.get("age", AgeRegressor(head=args.age_head)),
            gender_head=tuned.get("gender", GenderClassifier(head=args.gender_head)))
        model.fit_features(features[every], data.age[every],
                           gender[every] if has_gender else None)
    extra = {"finetuned_layer": "trained" if layer == "train" else "shipped"}
    path = model.save(args.out, extra_meta={"trained_on": "+".join(args.dataset),
                                            "datasets": counts,
                                            "recipe": args.recipe or "custom",
                                            **(extra if args.recipe == "default" else {}),
                                            "n_train": int(np.isfinite(features[:, 0]).sum())})
    summary = {"out": str(path), "dataset": "+".join(args.dataset),
               "datasets": [{k: c[k] for k in ("name", "weight", "n_images", "n_faces",
                                               "n_degraded")} for c in counts],
               "n_images": sum(c["n_images"] for c in counts),
               "n_faces_found": n_faces,
               "embed_seconds": round(embed_seconds, 1),
               "fit_seconds": round(time.perf_counter() - start - embed_seconds, 1)}
    if args.json:
        _print_json(summary)
    else:
        print(f"trained on {summary['n_faces_found']} faces of {summary['n_images']} images "
              f"-> {path}")
    return EXIT_OK
