"""Shared test fixtures: real photos and the labeled data beside the repository."""

import importlib.util
import os
from pathlib import Path

import pytest

# The suite runs the networks with onnxruntime (its tests count onnxruntime sessions
# and their settings), also where the openvino extra is installed; tests/test_runtime.py
# runs OpenVINO and compares. Set SKAGEGENDER_RUNTIME=openvino to run it all on OpenVINO.
os.environ.setdefault("SKAGEGENDER_RUNTIME", "onnxruntime")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _insightface_images():
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data" / "images"


@pytest.fixture(scope="session")
def shared_data():
    """``../shared/data`` (UTKFace, FGNET, Adience); tests skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"labeled data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def utkface_paths(shared_data):
    """200 UTKFace images, a seeded random sample (file names sort by age)."""
    import numpy as np

    paths = sorted(str(p) for p in (shared_data / "UTKFace").glob("*.jpg"))
    keep = np.random.default_rng(0).choice(len(paths), size=200, replace=False)
    return [paths[i] for i in keep]


#: FG-NET subjects of :func:`fgnet_ten` (the shared folder may hold more).
FGNET_TEN_SUBJECTS = tuple(f"{i:03d}" for i in range(1, 11))


def link_fgnet_subjects(fgnet_root, dest, subjects=FGNET_TEN_SUBJECTS):
    """Link the images and landmark files of ``subjects`` into ``dest/{images,points}``."""
    for sub in ("images", "points"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for path in sorted((fgnet_root / sub).iterdir()):
            if path.name[:3] in subjects:
                (dest / sub / path.name).symlink_to(path)
    return dest


@pytest.fixture(scope="session")
def fgnet_ten(shared_data, tmp_path_factory):
    """An FG-NET folder of links to subjects 001-010 (127 images), whatever else is shared.

    Tests that pin counts or train on FG-NET read this fixed set, so they neither
    change nor slow down when more subjects are shared.
    """
    return link_fgnet_subjects(shared_data / "FGNET", tmp_path_factory.mktemp("fgnet-ten"))


@pytest.fixture(scope="session")
def fgnet_pair(shared_data):
    """FG-NET 001A02 (a two-year-old boy) and 002A29 (a 29-year-old woman), scanned prints."""
    images = shared_data / "FGNET" / "images"
    return [str(images / "001A02.JPG"), str(images / "002A29.JPG")]


@pytest.fixture(scope="session")
def group_photo():
    """insightface's t1.jpg: a real group photo with 6 people."""
    images = _insightface_images()
    if images is None or not (images / "t1.jpg").is_file():
        pytest.skip("the insightface wheel (with its sample images) is not installed")
    return str(images / "t1.jpg")


@pytest.fixture(scope="session")
def portrait():
    """insightface's Tom_Hanks_54745.png: one face."""
    images = _insightface_images()
    if images is None or not (images / "Tom_Hanks_54745.png").is_file():
        pytest.skip("the insightface wheel (with its sample images) is not installed")
    return str(images / "Tom_Hanks_54745.png")


@pytest.fixture(scope="session")
def model_without_intervals(utkface_paths, tmp_path_factory):
    """Path of a model file whose age head gives no intervals (the fast model's features,
    its network's expected age, a logistic gender head), fitted on 40 UTKFace faces."""
    import numpy as np

    from skagegender.heads import AgeRegressor, GenderClassifier
    from skagegender.model import AgeGenderModel
    from skagegender.training._fast_recipe import expected_age, make_embedder

    paths = utkface_paths[:40]
    embedder = make_embedder()
    X = embedder.fit_transform(paths)
    fields = [Path(p).name.split("_") for p in paths]  # [age]_[gender 0 male, 1 female]_...
    age = np.array([float(f[0]) for f in fields])
    gender = np.array(["male" if f[1] == "0" else "female" for f in fields], object)
    model = AgeGenderModel.from_fitted_heads(
        embedder, AgeRegressor(head=expected_age()).fit(X, age),
        GenderClassifier(head="ordinal", random_state=0).fit(X, gender),
        fallback_age=float(np.median(age)))
    return str(model.save(tmp_path_factory.mktemp("no-intervals") / "no-intervals.skag"))
