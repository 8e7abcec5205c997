"""Seconds per image of the shipped model, end to end, on one core.

    python benchmarks/model_latency.py                 # 60 seeded UTKFace images

Pins itself to one core (``os.sched_setaffinity``) with one onnxruntime thread and
times, after a warm-up, for the shipped ``default`` and ``fast`` models:
``predict_faces`` one image at a time (every face, age interval, gender),
``predict`` on the whole list (batched); and the embedder
alone with the ``"age-gender"``, ``"age-gender-dlib"`` and ``"age-gender-finetuned"``
feature sets (the differences are the dlib chip networks and the fine-tuned layer). Each number is the best of ``--repeats``.
Writes ``model_latency.{json,md}`` into ``--out`` (default ``benchmarks/results``);
``--data`` is a folder of UTKFace images (default ``../shared/data/UTKFace``).
"""

import argparse
import json
import os
import random
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def best_of(repeats, fn, n):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / n)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "UTKFace"))
    parser.add_argument("--n-images", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    from skagegender.embedding import ArcFaceEmbedder
    from skagegender.pretrained import load

    paths = sorted(str(p) for p in Path(args.data).glob("*.jpg"))
    random.Random(0).shuffle(paths)
    paths = paths[:args.n_images]
    result = {"n_images": len(paths), "load_average": os.getloadavg()[0]}
    for name in ("default", "fast"):
        model = load(name)
        model.predict_faces(paths[0])
        prefix = "" if name == "default" else "fast_"
        result[f"{prefix}predict_faces_ms"] = 1000 * best_of(
            args.repeats, lambda m=model: [m.predict_faces(p) for p in paths], len(paths))
        result[f"{prefix}predict_batched_ms"] = 1000 * best_of(
            args.repeats, lambda m=model: m.predict(paths), len(paths))
    for layers in ("age-gender", "age-gender-dlib", "age-gender-finetuned"):
        embedder = ArcFaceEmbedder(layers=layers)
        embedder.transform(paths[:2])
        result[f"embed_{layers}_ms"] = 1000 * best_of(
            args.repeats, lambda e=embedder: e.transform(paths), len(paths))
    lines = ["# Shipped model latency, one core", "",
             (f"{len(paths)} UTKFace images (200 x 200), best of {args.repeats}; load average "
             f"{result['load_average']:.2f} at the start."), "", "| what | ms per image |",
             "|---|---|"]
    lines += [f"| {key[:-3]} | {value:.1f} |" for key, value in result.items()
              if key.endswith("_ms")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "model_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
