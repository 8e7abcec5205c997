"""ArcFaceEmbedder end to end on real photos, bad inputs, sklearn integration."""

import io
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

from skagegender.embedding import (
    ArcFaceEmbedder,
    ImageLoadError,
    MissingFacesWarning,
    NoFaceError,
    load_image,
)


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# The sklearn checks that need no generated 2-D data, run by name on the embedder:
# for an image transformer (two_d_array=False) parametrize_with_checks collects only
# check_estimator_cloneable, which is one of these.
API_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_repr",
    "check_estimator_cloneable",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_do_not_raise_errors_in_init_or_set_params",
]


@pytest.mark.parametrize("name", API_CHECKS)
def test_sklearn_api_checks_that_apply_to_images(name):
    import sklearn.utils.estimator_checks as checks

    estimator = ArcFaceEmbedder()
    getattr(checks, name)(name, estimator)


@pytest.mark.slow
def test_import_is_light():
    code = (
        "import sys, skagegender, skagegender.embedding, skagegender.heads, "
        "skagegender.metrics, skagegender.datasets, skagegender.model_selection;"
        "heavy = [m for m in ('onnxruntime', 'onnx', 'lightgbm', 'optuna', 'insightface', "
        "'cv2', 'torch') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_group_photo_gives_six_faces_with_sane_landmarks(group_photo):
    faces = ArcFaceEmbedder().detect_faces(group_photo)
    assert len(faces) == 6
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0.6 <= face.score <= 1 and face.size > 50
        lm = face.landmarks
        assert ((lm[:, 0] >= x1) & (lm[:, 0] <= x2) & (lm[:, 1] >= y1) & (lm[:, 1] <= y2)).all()
        # eyes above nose above mouth; image-left eye left of image-right eye
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
        assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
        assert face.embedding.shape == (128,)
        np.testing.assert_allclose(np.linalg.norm(face.embedding), 1, atol=1e-4)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


@pytest.mark.slow
def test_same_face_at_two_scales_is_closer_than_two_people(group_photo):
    embedder = ArcFaceEmbedder()
    big = load_image(group_photo)
    small = np.ascontiguousarray(big[::2, ::2])  # half size
    faces_big = embedder.detect_faces(big)
    faces_small = embedder.detect_faces(small)
    assert len(faces_small) == 6
    same, different = [], []
    for fb in faces_big:
        centre = (fb.box[:2] + fb.box[2:]) / 2
        match = min(faces_small, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) - centre))
        same.append(_cos(fb.embedding, match.embedding))
    for i, a in enumerate(faces_big):
        for b in faces_big[i + 1 :]:
            different.append(_cos(a.embedding, b.embedding))
    assert min(same) > max(different), (same, different)


@pytest.mark.slow
def test_utkface_embeds_and_is_deterministic(utkface_paths):
    assert len(utkface_paths) == 200
    X = ArcFaceEmbedder().fit_transform(utkface_paths)
    found = ~np.isnan(X).any(axis=1)
    assert found.mean() >= 0.99
    X_again = ArcFaceEmbedder(batch_size=7).transform(utkface_paths[:40])
    np.testing.assert_array_equal(X_again, X[:40])


@pytest.mark.slow
def test_face_policies(group_photo):
    faces = ArcFaceEmbedder().detect_faces(group_photo)
    image = load_image(group_photo)
    largest = max(faces, key=lambda f: f.size)
    best = max(faces, key=lambda f: f.score)
    h, w = image.shape[:2]
    central = min(faces, key=lambda f: np.hypot(*((f.box[:2] + f.box[2:]) / 2 - (w / 2, h / 2))))
    for policy, expected in [("largest", largest), ("highest_score", best), ("center", central)]:
        row = ArcFaceEmbedder(face_selection=policy).transform([group_photo])[0]
        np.testing.assert_allclose(row, expected.embedding, atol=1e-5)
    # a face-size floor above every face leaves no face
    with pytest.warns(MissingFacesWarning, match="1 of 1"):
        row = ArcFaceEmbedder(min_face_size=10_000).transform([group_photo])
    assert np.isnan(row).all()
    with pytest.raises(NoFaceError):
        ArcFaceEmbedder(min_face_size=10_000, on_missing="raise").transform([group_photo])


@pytest.mark.slow
def test_bad_items_do_not_lose_the_batch(tmp_path, portrait):
    good = load_image(portrait)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    noface = np.full((300, 300, 3), 127, np.uint8)
    gray = Image.fromarray(good[..., ::-1]).convert("L")
    rgba = Image.fromarray(good[..., ::-1]).convert("RGBA")
    sixteen = np.asarray(gray).astype(np.uint16) * 257
    buf = io.BytesIO()
    Image.fromarray(good[..., ::-1]).save(buf, format="JPEG", quality=95)
    items = [portrait, str(corrupt), gray, str(text), rgba, str(empty), noface,
             sixteen, str(tmp_path / "missing.jpg"), buf.getvalue()]
    bad = {1, 3, 5, 6, 8}
    embedder = ArcFaceEmbedder(batch_size=4)
    with pytest.warns(MissingFacesWarning, match="5 of 10") as record:
        X = embedder.transform(items)
    message = str(record[0].message)
    assert "corrupt.jpg" in message and "no face found" in message
    assert X.shape == (10, 128)
    missing = np.isnan(X).all(axis=1)
    assert set(np.flatnonzero(missing)) == bad
    alone = embedder.transform([portrait])[0]
    np.testing.assert_array_equal(X[0], alone)
    for i in (2, 4, 7, 9):  # grayscale, RGBA, 16-bit and re-encoded copies: same person
        assert _cos(X[i], alone) > 0.8
    result = embedder.embed(items)
    assert list(np.flatnonzero(~result.found)) == sorted(bad)
    assert "missing.jpg" in result.errors[8]
    with pytest.raises(ImageLoadError, match="corrupt.jpg"):
        ArcFaceEmbedder(on_missing="raise").transform([portrait, str(corrupt)])


def test_aligned_crops_skip_detection(portrait):
    embedder = ArcFaceEmbedder()
    face = embedder.detect_faces(portrait)[0]
    from skagegender.embedding import align_face

    crop = align_face(load_image(portrait), face.landmarks)[..., ::-1]  # RGB array
    row = embedder.transform([crop])[0]  # 112 x 112: taken as aligned ("auto")
    np.testing.assert_allclose(row, face.embedding, atol=1e-5)
    # detect=True runs the detector on the crop instead: close, not identical
    detected = ArcFaceEmbedder(detect=True).transform([crop])[0]
    assert not np.array_equal(row, detected)
    # a batch given as one (n, H, W, C) array
    np.testing.assert_allclose(embedder.transform(np.stack([crop, crop]))[1], row, atol=1e-6)


@pytest.mark.slow
def test_age_gender_layers_and_flip(portrait):
    plain = ArcFaceEmbedder(layers="age-gender").fit([portrait])
    widths = {name: block.stop - block.start for name, block in plain.feature_blocks_.items()}
    assert widths == {"fc1": 128, "conv_8_relu": 512, "conv_12_relu": 512, "conv_14_relu": 1024}
    assert plain.embedding_dim_ == sum(widths.values())
    names = plain.get_feature_names_out()
    assert names[0] == "fc1_0" and names[-1] == "conv_14_relu_1023"
    row = plain.transform([portrait])[0]
    base = ArcFaceEmbedder().transform([portrait])[0]
    np.testing.assert_allclose(row[:128], base, atol=1e-5)
    # mirror averaging makes the features of a photo and of its mirror image equal
    flip = ArcFaceEmbedder(layers="age-gender", flip_augment=True)
    image = load_image(portrait)
    a, b = flip.transform([image, np.ascontiguousarray(image[:, ::-1])], )
    assert _cos(a[128:], b[128:]) > 0.99
    assert _cos(a[:128], b[:128]) > _cos(row[:128], ArcFaceEmbedder().transform(
        [np.ascontiguousarray(image[:, ::-1])])[0])
    with pytest.raises(ValueError, match="no activation named"):
        ArcFaceEmbedder(layers=("conv_99",)).fit()


@pytest.mark.slow
def test_pipeline_clone_pickle_and_grid_search(utkface_paths):
    paths = utkface_paths[:40]
    ages = np.array([float(p.rsplit("/", 1)[-1].split("_")[0]) for p in paths])
    pipe = make_pipeline(ArcFaceEmbedder(), Ridge())
    pipe.fit(paths, ages)
    pred = pipe.predict(paths[:5])
    assert pred.shape == (5,) and np.isfinite(pred).all()
    restored = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_allclose(restored.predict(paths[:5]), pred, rtol=1e-6)
    assert len(pickle.dumps(ArcFaceEmbedder().fit())) < 2000  # no sessions in the pickle
    cloned = clone(pipe)
    assert cloned.get_params()["arcfaceembedder__model"] == "sface"
    search = GridSearchCV(pipe, {"ridge__alpha": [0.1, 10.0]}, cv=2,
                          scoring="neg_mean_absolute_error")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingFacesWarning)
        search.fit(paths, ages)
    # every split was really fitted on the faces: the search beats guessing the median age
    guess = cross_val_score(make_pipeline(ArcFaceEmbedder(), DummyRegressor(strategy="median")),
                            paths, ages, cv=2, scoring="neg_mean_absolute_error").mean()
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_score_ > guess


def test_input_validation():
    with pytest.raises(ValueError, match="sequence of images"):
        ArcFaceEmbedder().transform("photo.jpg")
    with pytest.raises(ValueError, match="batch of images"):
        ArcFaceEmbedder().transform(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="face_selection"):
        ArcFaceEmbedder(face_selection="smallest").fit()
    # unfitted (a stateless transformer): the face policy refuses it where it is used
    with pytest.raises(ValueError, match="face_selection"):
        ArcFaceEmbedder(face_selection="smallest").transform([np.zeros((200, 200, 3))])


def test_unavailable_provider_falls_back_to_cpu(portrait):
    embedder = ArcFaceEmbedder(providers=["CUDAExecutionProvider"], n_threads=2)
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.warns(RuntimeWarning, match="falling back to CPUExecutionProvider"):
        row = embedder.transform([portrait])[0]
    np.testing.assert_allclose(row, ArcFaceEmbedder().transform([portrait])[0], atol=1e-5)
