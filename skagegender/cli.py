"""The ``skagegender`` command line.

Sub-commands: ``predict`` (age and gender of every face), ``embed`` (features to
an .npz file), ``evaluate`` (scores on a labeled dataset), ``train`` (fit and
save a model) and ``tune`` (Optuna search over heads). With ``--json`` the only
thing on stdout is JSON; progress goes to stderr.

Exit codes: 0 success; 1 when some inputs could not be read (the others are
still reported); 2 for usage errors.
"""

import argparse
import json
import sys
import time
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm",
                  ".ppm", ".jfif"}


def _version():
    from . import __version__

    return __version__


def _expand(paths):
    """Files as given, folders expanded to their image files (sorted, recursive)."""
    out = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(str(p) for p in sorted(path.rglob("*"))
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(str(path))
    return out


def _progress(iterable, total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=not enabled,
                leave=False)


def _load_model(path):
    if path is None:
        from .pretrained import load

        return load()
    from .model import AgeGenderModel

    return AgeGenderModel.load(path)


def _print_json(obj):
    json.dump(obj, sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


# -- predict -------------------------------------------------------------------

def cmd_predict(args):
    from .embedding import ImageLoadError

    files = _expand(args.paths)
    if not files:
        print("skagegender predict: no image files found in the given paths", file=sys.stderr)
        return 2
    model = _load_model(args.model)
    records, failed = [], 0
    show = sys.stderr.isatty() and len(files) > 1
    for path in _progress(files, len(files), "predict", show):
        try:
            records.append({"path": path, "faces": model.predict_faces(path), "error": None})
        except ImageLoadError as exc:
            failed += 1
            records.append({"path": path, "faces": [], "error": exc.reason})
    if args.json:
        _print_json(records)
    else:
        for rec in records:
            if rec["error"]:
                print(f"{rec['path']}: ERROR {rec['error']}")
                continue
            if not rec["faces"]:
                print(f"{rec['path']}: no face found")
                continue
            for i, face in enumerate(rec["faces"]):
                lo_hi = (f" ({face['age_interval'][0]:.0f}-{face['age_interval'][1]:.0f})"
                         if face["age_interval"] else "")
                gender = (f"{face['gender']} ({face['gender_probability']:.0%})"
                          if face["gender"] else "gender unknown")
                box = ",".join(f"{v:.0f}" for v in face["box"])
                print(f"{rec['path']} face {i + 1}: age {face['age']:.0f}{lo_hi}, {gender}, "
                      f"box [{box}], score {face['score']:.2f}")
    return 1 if failed else 0


# -- embed ---------------------------------------------------------------------

def cmd_embed(args):
    import numpy as np

    from .embedding import ArcFaceEmbedder

    files = _expand(args.paths)
    if not files:
        print("skagegender embed: no image files found in the given paths", file=sys.stderr)
        return 2
    embedder = ArcFaceEmbedder(args.backbone, layers=args.layers, flip_augment=args.flip,
                               n_jobs=args.n_jobs)
    if args.cache:
        embedder.set_params(cache=args.cache)
    result = embedder.embed(files)
    np.savez_compressed(args.out, embeddings=result.features, paths=np.array(files),
                        found=result.found,
                        errors=np.array([e or "" for e in result.errors]))
    summary = {"out": args.out, "n_images": len(files), "n_faces_found": int(result.found.sum()),
               "embedding_dim": int(result.features.shape[1])}
    if args.json:
        _print_json(summary)
    else:
        print(f"{summary['n_faces_found']} of {len(files)} images embedded "
              f"({summary['embedding_dim']} features) -> {args.out}")
    return 0 if all(not e or e.endswith("no face found") for e in result.errors) else 1


# -- evaluate ------------------------------------------------------------------

def evaluate_model(model, features, data):
    """Scores of a fitted AgeGenderModel on embedded dataset rows.

    Images without a found face are predicted ``model.fallback_age_`` (the median
    training age) and counted as gender errors: they stay in every metric.
    """
    import numpy as np

    from .metrics import age_error_report, cumulative_score, mean_absolute_error
    from .metrics import one_class_off_score

    details = model.predict_details(features)
    age_true = np.asarray(data.age, dtype=float)
    age_pred = np.where(details["found"], details["age"], model.fallback_age_)
    labeled = ~np.isnan(age_true)
    out = {
        "n_images": int(len(features)),
        "n_faces_found": int(details["found"].sum()),
        "mae": float(mean_absolute_error(age_true[labeled], age_pred[labeled])),
        "one_class_off": float(one_class_off_score(age_true[labeled], age_pred[labeled])),
        "cs5": float(cumulative_score(age_true[labeled], age_pred[labeled], threshold=5)),
        "gender_accuracy": None,
    }
    gender = np.asarray(data.gender, dtype=object) if data.get("gender") is not None else None
    groups = {}
    if gender is not None and any(g is not None for g in gender):
        known = np.array([g is not None for g in gender])
        hit = np.array([p is not None and str(p) == str(g)
                        for p, g in zip(details["gender"], gender)])
        out["gender_accuracy"] = float(hit[known].mean())
        groups["gender"] = np.array([str(g) for g in gender])[labeled]
    if data.get("race") is not None:
        groups["race"] = np.array([str(r) for r in data.race])[labeled]
    report = age_error_report(age_true[labeled], age_pred[labeled], groups=groups or None)
    per_group = {}
    for row in report:
        kind = {"age_group": "age"}.get(row["group_type"], row["group_type"])
        if kind == "all":
            continue
        per_group.setdefault(kind, {})[str(row["group"])] = {
            key: row[key] for key in ("n", "mae", "one_class_off", "cs5") if key in row}
    out["per_group"] = per_group
    return out


def cmd_evaluate(args):
    from .model import embed_dataset

    model = _load_model(args.model)
    start = time.perf_counter()
    features, data = embed_dataset(args.dataset, args.root, embedder=model.embedder_,
                                   cache=args.cache, limit=args.limit)
    result = evaluate_model(model, features, data)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["dataset"] = args.dataset
    if args.json:
        _print_json(result)
        return 0
    gacc = result["gender_accuracy"]
    print(f"{args.dataset}: {result['n_images']} images, {result['n_faces_found']} faces found, "
          f"{result['seconds']} s")
    print(f"MAE {result['mae']:.2f}  one-class-off {result['one_class_off']:.1%}  "
          f"CS@5 {result['cs5']:.1%}  gender "
          + ("n/a" if gacc is None else f"{gacc:.1%}"))
    print(f"{'group':<22}{'n':>7}{'MAE':>8}{'1CoA':>8}{'CS@5':>8}")
    for kind, rows in result["per_group"].items():
        for group, row in rows.items():
            print(f"{kind + ' ' + group:<22}{row['n']:>7}{row['mae']:>8.2f}"
                  f"{row['one_class_off']:>8.1%}{row['cs5']:>8.1%}")
    return 0


# -- train ---------------------------------------------------------------------

def cmd_train(args):
    import numpy as np

    from .embedding import ArcFaceEmbedder
    from .heads import AgeRegressor, GenderClassifier
    from .model import AgeGenderModel, embed_dataset

    embedder = ArcFaceEmbedder(layers=None if args.layers == "none" else args.layers,
                               flip_augment=args.flip, n_jobs=args.n_jobs)
    start = time.perf_counter()
    features, data = embed_dataset(args.dataset, args.root, embedder=embedder,
                                   cache=args.cache, limit=args.limit)
    embed_seconds = time.perf_counter() - start
    gender = data.get("gender")
    has_gender = gender is not None and any(g is not None for g in gender)
    model = AgeGenderModel(embedder, age_head=AgeRegressor(head=args.age_head),
                           gender_head=GenderClassifier(head=args.gender_head))
    model.fit_features(features, data.age, gender if has_gender else None)
    path = model.save(args.out, extra_meta={"trained_on": args.dataset,
                                            "n_train": int(np.isfinite(features[:, 0]).sum())})
    summary = {"out": str(path), "dataset": args.dataset, "n_images": len(data.paths),
               "n_faces_found": int((~np.isnan(features).any(axis=1)).sum()),
               "embed_seconds": round(embed_seconds, 1),
               "fit_seconds": round(time.perf_counter() - start - embed_seconds, 1)}
    if args.json:
        _print_json(summary)
    else:
        print(f"trained on {summary['n_faces_found']} faces of {summary['n_images']} images "
              f"-> {path}")
    return 0


# -- parser --------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="skagegender", description="Age and gender estimation from face photos.")
    parser.add_argument("--version", action="version", version=f"skagegender {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="age and gender of every face in images")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--model", help="model file (default: the shipped pretrained model)")
    p.add_argument("--json", action="store_true", help="JSON records on stdout")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("embed", help="face features of images to an .npz file")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output .npz (embeddings, paths, found, errors)")
    p.add_argument("--backbone", default="sface", help="'sface', an InsightFace pack or .onnx")
    p.add_argument("--layers", default=None,
                   help="'age-gender', 'age-gender-dlib' or 'age-gender-finetuned' (sface only)")
    p.add_argument("--flip", action="store_true", help="average with the mirrored face")
    p.add_argument("--cache", help="embedding cache folder")
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_embed)

    from .model import DATASETS

    p = sub.add_parser("evaluate", help="score a model on a labeled dataset")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", required=True, help="the dataset's folder")
    p.add_argument("--model", help="model file (default: the shipped pretrained model)")
    p.add_argument("--limit", type=int, help="evaluate a seeded random subset")
    p.add_argument("--cache", help="embedding cache folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="fit age and gender heads and save a model file")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--age-head", default="mlp", choices=["mlp", "lightgbm", "ordinal"])
    p.add_argument("--gender-head", default="mlp", choices=["mlp", "lightgbm", "ordinal"])
    p.add_argument("--layers", default="age-gender",
                   help="'age-gender', 'age-gender-dlib', 'age-gender-finetuned' or 'none'")
    p.add_argument("--flip", action="store_true",
                   help="average with the mirrored face (2x the cost)")
    p.add_argument("--cache", help="embedding cache folder (a second run re-uses it)")
    p.add_argument("--limit", type=int)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)

    try:
        from .model_selection._tune_cli import add_tune_arguments, run_tune
    except ImportError:  # pragma: no cover - optional part not present
        pass
    else:
        p = sub.add_parser("tune", help="Optuna search over heads (needs skagegender[optuna])")
        add_tune_arguments(p)
        p.set_defaults(func=run_tune)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"skagegender {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, FileNotFoundError) else 1


if __name__ == "__main__":
    sys.exit(main())
