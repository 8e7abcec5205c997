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


class _TaggedTabular(ArcFaceEmbedder):
    """The embedder, tagged as taking 2-D arrays: only the tag differs.

    For an image transformer (``two_d_array=False``) scikit-learn yields a single
    check (``check_estimator_cloneable``). With this tag it yields all of them; the
    ones that feed it random numbers where images belong, or expect ``fit`` to
    check data that it ignores, are named in :data:`EXPECTED_FAILED_CHECKS`.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


_NOT_IMAGES = "transform refuses a numeric 2-D X: it is not a batch of images"
_FIT_IGNORES_X = ("fit ignores X (it loads the backbone, which needs no data), so it "
                  "neither checks nor records X")
#: Checks that fail on the embedder, each with the reason; each must really fail.
EXPECTED_FAILED_CHECKS = {
    "check_fit_score_takes_y": _NOT_IMAGES,
    "check_estimators_dtypes": _NOT_IMAGES,
    "check_pipeline_consistency": _NOT_IMAGES,
    "check_estimators_pickle": _NOT_IMAGES,
    "check_f_contiguous_array_estimator": _NOT_IMAGES,
    "check_transformer_data_not_an_array": _NOT_IMAGES,
    "check_transformer_general": _NOT_IMAGES,
    "check_transformer_preserve_dtypes": _NOT_IMAGES,
    "check_transformers_unfitted_stateless": _NOT_IMAGES,
    "check_methods_sample_order_invariance": _NOT_IMAGES,
    "check_methods_subset_invariance": _NOT_IMAGES,
    "check_dict_unchanged": _NOT_IMAGES,
    "check_fit_idempotent": _NOT_IMAGES,
    "check_fit2d_predict1d": _NOT_IMAGES + " (with its own message, not 'Reshape your data')",
    "check_n_features_in_after_fitting": _FIT_IGNORES_X,
    "check_n_features_in": _FIT_IGNORES_X,
    "check_complex_data": _FIT_IGNORES_X,
    "check_estimators_empty_data_messages": _FIT_IGNORES_X,
    "check_estimators_nan_inf": _FIT_IGNORES_X,
    "check_estimator_sparse_tag": _FIT_IGNORES_X,
    "check_fit1d": _FIT_IGNORES_X,
}


def _check_name(check):
    return getattr(check, "func", check).__name__


def _sklearn_checks():
    from sklearn.utils.estimator_checks import estimator_checks_generator

    return list(estimator_checks_generator(_TaggedTabular(), legacy=True))


def test_the_sklearn_checks_are_collected():
    names = {_check_name(check) for _, check in _sklearn_checks()}
    assert len(names) > 40
    assert set(EXPECTED_FAILED_CHECKS) <= names  # no stale entries
    assert {"check_fit_check_is_fitted", "check_estimators_overwrite_params",
            "check_dont_overwrite_parameters", "check_fit2d_1sample"} <= names - set(
        EXPECTED_FAILED_CHECKS)
    # The untagged embedder is an image transformer: sklearn has one check for it.
    from sklearn.utils.estimator_checks import estimator_checks_generator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = [_check_name(c) for _, c in estimator_checks_generator(ArcFaceEmbedder())]
    assert real == ["check_estimator_cloneable"]


@pytest.mark.parametrize(("estimator", "check"), _sklearn_checks(),
                         ids=lambda x: _check_name(x) if callable(x) else "embedder")
def test_sklearn_checks(estimator, check):
    reason = EXPECTED_FAILED_CHECKS.get(_check_name(check))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingFacesWarning)
        if reason is None:
            check(estimator)
        else:
            with pytest.raises((AssertionError, ValueError, TypeError)):
                check(estimator)


@pytest.mark.slow
def test_import_is_light():
    code = (
        "import sys, skagegender, skagegender.embedding, skagegender.heads, "
        "skagegender.metrics, skagegender.datasets, skagegender.model_selection;"
        "heavy = [m for m in ('onnxruntime', 'onnx', 'lightgbm', 'optuna', 'insightface', "
        "'cv2', 'torch') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_detect_faces_batch_matches_one_image_at_a_time_and_keeps_going(
        group_photo, portrait, tmp_path):
    # six faces, an unreadable file, no face, one face: the faces of all of them go through
    # the networks together (batch_size 4 splits them across images), each image's outcome
    # stays its own
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    blank = np.full((120, 160, 3), 200, np.uint8)
    embedder = ArcFaceEmbedder(layers=("compact", "dlib_age"), identity=False, batch_size=4)
    got = embedder.detect_faces_batch([group_photo, str(broken), blank, portrait])
    assert len(got) == 4
    assert isinstance(got[1], ImageLoadError) and got[2] == []
    for image, faces in ((group_photo, got[0]), (portrait, got[3])):
        alone = embedder.detect_faces(image)
        assert len(faces) == len(alone) > 0
        for a, b in zip(faces, alone):
            np.testing.assert_array_equal(a.box, b.box)
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-4)
    with pytest.raises(ImageLoadError):
        embedder.detect_faces(str(broken))


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


# -- aligned faces, maps and the output layout ---------------------------------


@pytest.mark.slow
def test_align_gives_the_crops_transform_embeds(portrait, group_photo, tmp_path):
    from skagegender.embedding import Outcome, align_face

    missing = str(tmp_path / "missing.jpg")
    blank = np.full((200, 200, 3), 127, np.uint8)
    items = [portrait, group_photo, missing, blank]
    embedder = ArcFaceEmbedder()
    aligned = embedder.align(items)
    assert aligned.crops.shape == (4, 112, 112, 3) and aligned.crops.dtype == np.uint8
    assert aligned.found.tolist() == [True, True, False, False]
    assert [o.kind for o in aligned.outcomes] == ["ok", "ok", "load_error", "no_face"]
    assert aligned.outcomes[3] == Outcome.no_face("<array (200, 200, 3) uint8>")
    assert not aligned.crops[2:].any()
    # The same faces as transform chooses (one per image: the largest of the group) ...
    result = embedder.embed(items)
    assert result.outcomes[:2] == aligned.outcomes[:2]
    for mine, theirs in zip(aligned.faces[:2], result.faces[:2]):
        np.testing.assert_array_equal(mine.landmarks, theirs.landmarks)
    # ... cut as the networks see them (RGB by default): the crops embed to the same rows.
    np.testing.assert_allclose(embedder.transform(aligned.crops[:2]), result.features[:2],
                               atol=1e-5)
    crop = align_face(load_image(portrait), aligned.faces[0].landmarks)  # BGR
    np.testing.assert_array_equal(aligned.crops[0], crop[..., ::-1])
    bgr = ArcFaceEmbedder(color="bgr").align([load_image(portrait)])
    np.testing.assert_array_equal(bgr.crops[0], crop)
    # Parallel workers give the same crops.
    parallel = ArcFaceEmbedder(n_jobs=2, batch_size=1).align(items)
    np.testing.assert_array_equal(parallel.crops, aligned.crops)
    assert parallel.outcomes == aligned.outcomes


@pytest.mark.slow
def test_sface_maps_are_what_the_pooled_features_average(portrait):
    from skagegender.embedding import SFACE_MAP_LAYER, sface_maps

    embedder = ArcFaceEmbedder(layers=(SFACE_MAP_LAYER,)).fit()
    crops = embedder.align([portrait]).crops
    maps = sface_maps(crops)
    assert maps.shape == (1, 1024, 7, 7) and maps.dtype == np.float32
    pooled = embedder.transform([portrait])[:, embedder.feature_blocks_[SFACE_MAP_LAYER]]
    np.testing.assert_allclose(maps.mean(axis=(2, 3)), pooled, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(sface_maps(crops[..., ::-1], color="bgr"), maps, atol=1e-5)
    assert sface_maps(crops[:0]).shape == (0, 1024, 7, 7)
    assert sface_maps(crops, layer="conv_8_relu").shape[:2] == (1, 512)
    with pytest.raises(ValueError, match="112, 112, 3"):
        sface_maps(crops[:, :56])


def test_feature_blocks_name_every_column():
    from skagegender.embedding import feature_blocks

    embedder = ArcFaceEmbedder(layers="age-gender-finetuned").fit()
    blocks = embedder.feature_blocks_
    assert blocks == feature_blocks("age-gender-finetuned")
    names = embedder.get_feature_names_out()
    top = [b for k, b in blocks.items() if not k.startswith("sface_finetuned_")]
    # The top-level blocks tile the columns in order; each is named after its layer.
    assert [b.start for b in top] == [0] + [b.stop for b in top[:-1]]
    assert top[-1].stop == embedder.embedding_dim_ == len(names)
    assert names[blocks["conv_8_relu"]][0] == "conv_8_relu_0"
    assert names[blocks["dlib_age"]].tolist() == [f"dlib_age_p{k}" for k in range(81)]
    assert names[blocks["sface_finetuned_age"]][-1] == "sface_finetuned_age_p100"
    assert names[blocks["sface_finetuned_female"]].tolist() == ["sface_finetuned_female"]
    assert feature_blocks() == {"fc1": slice(0, 128)}


def test_backbone_spec_round_trip_and_mismatch():
    from skagegender.embedding import BackboneSpec

    spec = ArcFaceEmbedder(layers="age-gender-dlib").backbone_info()
    assert isinstance(spec, BackboneSpec) and spec.name == "sface"
    again = BackboneSpec.from_dict(spec.to_dict())
    assert again == spec and again.licence == ""  # the licence is not part of the identity
    assert spec["layers"][-1] == "dlib_gender" and "identity" not in spec
    width = len(ArcFaceEmbedder(layers="age-gender-dlib").get_feature_names_out())
    assert spec.embedding_dim == spec["embedding_dim"] == width
    assert spec.mismatch(spec) is None and spec.mismatch({"name": "sface"}) is None
    other = ArcFaceEmbedder(layers="age-gender").backbone_info()
    assert spec != other and spec.mismatch(other)[0] == "options"
    assert spec.mismatch({"sha256": "0" * 64}) == ("sha256", spec.weights_sha256, "0" * 64)
    with pytest.raises(ValueError, match="unknown keys"):
        spec.mismatch({"weights": "x"})
    bad = [{"name": "sface", "sha256": "0" * 64},
           {"name": "", "sha256": "0" * 64, "options": {}},
           {"name": "sface", "sha256": "ABC", "options": {}},
           {"name": "sface", "sha256": "0" * 64, "options": []},
           {"name": "sface", "sha256": "0" * 64, "options": {"x": float("nan")}},
           {"name": "sface", "sha256": "0" * 64, "options": {"name": "x"}}]
    for data in bad:
        with pytest.raises(ValueError, match="backbone"):
            BackboneSpec.from_dict(data)
    restored = pickle.loads(pickle.dumps(spec))  # joblib workers and pickled pipelines
    assert restored == spec and restored.licence == spec.licence
    # The options cannot be changed behind the spec's back.
    with pytest.raises(TypeError):
        spec.options["layers"] = []


def test_outcome_kinds():
    from skagegender.embedding import Outcome

    assert Outcome("ok").ok and Outcome("ok").error is None
    assert Outcome.no_face("a.jpg") == Outcome("no_face", "a.jpg: no face found")
    with pytest.raises(ValueError, match="kind"):
        Outcome("missing", "a.jpg")
    with pytest.raises(ValueError, match="needs a message"):
        Outcome("load_error")
