"""The dlib age/gender chip networks behind ``layers="age-gender-dlib"``."""

import numpy as np
import pytest

from skagegender.embedding import ArcFaceEmbedder, feature_blocks, load_image
from skagegender.embedding._assets import packaged_session
from skagegender.embedding._chipnets import (
    DLIB_AGE,
    DLIB_AGE_CLASSES,
    chip_matrix,
    cut_chip,
)


def _dlib_blocks(X, layers="age-gender-dlib"):
    blocks = feature_blocks(layers)
    return X[:, blocks["dlib_age"]], X[:, blocks["dlib_gender"]]


@pytest.mark.slow
def test_age_gender_dlib_appends_both_networks(fgnet_pair):
    plain = ArcFaceEmbedder(layers="age-gender").fit_transform(fgnet_pair)
    embedder = ArcFaceEmbedder(layers="age-gender-dlib").fit()
    X = embedder.transform(fgnet_pair)
    blocks = embedder.feature_blocks_
    assert blocks == feature_blocks("age-gender-dlib")
    assert list(blocks)[-2:] == ["dlib_age", "dlib_gender"]
    assert blocks["dlib_age"].stop - blocks["dlib_age"].start == 81
    assert X.shape == (2, plain.shape[1] + 81 + 2) == (2, embedder.embedding_dim_)
    names = embedder.get_feature_names_out()
    assert list(names[blocks["dlib_age"]][:2]) == ["dlib_age_p0", "dlib_age_p1"]
    assert list(names[blocks["dlib_gender"]]) == ["dlib_gender_female", "dlib_gender_male"]
    # The SFace part is untouched by the extra blocks.
    np.testing.assert_array_equal(X[:, :blocks["dlib_age"].start], plain)
    age_p, gender_p = _dlib_blocks(X)
    np.testing.assert_allclose(age_p.sum(1), 1, atol=1e-4)
    np.testing.assert_allclose(gender_p.sum(1), 1, atol=1e-4)
    expected_age = age_p @ DLIB_AGE_CLASSES
    assert expected_age[0] < 8 and 18 < expected_age[1] < 40
    assert embedder.backbone_["chip_nets_sha256"]["dlib_age"] == DLIB_AGE.asset.sha256


def test_chip_nets_in_any_order_and_alone(fgnet_pair):
    swapped = ("dlib_gender", "dlib_age")
    both = ArcFaceEmbedder(layers=swapped).fit_transform(fgnet_pair)
    assert feature_blocks(swapped) == {"fc1": slice(0, 128), "dlib_gender": slice(128, 130),
                                       "dlib_age": slice(130, 211)}
    assert both.shape == (2, 211)
    reference = ArcFaceEmbedder(layers="age-gender-dlib").fit_transform(fgnet_pair)
    for got, expected in zip(_dlib_blocks(both, swapped), _dlib_blocks(reference)):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    alone = ("dlib_age", "dlib_gender")
    X = ArcFaceEmbedder(layers=alone, identity=False).fit_transform(fgnet_pair)
    assert feature_blocks(alone, identity=False) == {"dlib_age": slice(0, 81),
                                                     "dlib_gender": slice(81, 83)}
    np.testing.assert_allclose(X, np.hstack(_dlib_blocks(reference)), atol=1e-6)


@pytest.mark.slow
def test_aligned_crops_and_mirror_averaging(fgnet_pair):
    from skagegender.embedding import align_face

    embedder = ArcFaceEmbedder(layers="age-gender-dlib")
    faces = embedder.detect_faces(fgnet_pair[1])
    crop = align_face(load_image(fgnet_pair[1]), faces[0].landmarks)[..., ::-1]
    from_crop = embedder.fit_transform([np.ascontiguousarray(crop)])
    assert np.isfinite(from_crop).all()
    # The chip reaches below the 112-px crop (chin): the border is replicated,
    # so the age opinion moves a little but stays close.
    assert abs((_dlib_blocks(from_crop)[0] - _dlib_blocks(faces[0].embedding[None])[0])
               @ DLIB_AGE_CLASSES)[0] < 6
    single_shape = (2, ArcFaceEmbedder(layers="age-gender-dlib").fit().embedding_dim_)
    mirrored = ArcFaceEmbedder(layers="age-gender-dlib", flip_augment=True)
    X = mirrored.fit_transform(fgnet_pair)
    assert X.shape == single_shape
    np.testing.assert_allclose(_dlib_blocks(X)[0].sum(1), 1, atol=1e-4)
    # The chip networks saw the mirrored chips too.
    single = ArcFaceEmbedder(layers="age-gender-dlib").fit_transform(fgnet_pair)
    assert np.abs(_dlib_blocks(X)[0] - _dlib_blocks(single)[0]).max() > 1e-3


def test_chip_geometry_and_large_faces():
    rng = np.random.default_rng(0)
    # A smooth random image: shrinking must not change it beyond interpolation.
    small = rng.integers(0, 256, size=(25, 25, 3)).astype(np.uint8)
    import cv2

    base = cv2.resize(small, (200, 200), interpolation=cv2.INTER_CUBIC)
    landmarks = np.array([[70, 90], [130, 90], [100, 120], [75, 150], [125, 150]], float)
    chip = cut_chip(base, landmarks, 64)
    assert chip.shape == (64, 64, 3)
    # The same face 4 times larger takes the shrink-first path (scale < 0.5).
    big = cv2.resize(base, (800, 800), interpolation=cv2.INTER_CUBIC)
    assert np.hypot(*chip_matrix(landmarks * 4, 64)[0, :2]) < 0.5
    big_chip = cut_chip(big, landmarks * 4, 64)
    diff = np.abs(big_chip.astype(float) - chip.astype(float)).mean()
    assert diff < 6, diff
    # A wrong placement would show: shift the landmarks by 10 px.
    moved = cut_chip(big, (landmarks + 10) * 4, 64)
    assert np.abs(moved.astype(float) - chip.astype(float)).mean() > 2 * diff


def test_tampered_or_missing_network_file_is_refused():
    from dataclasses import replace

    wrong = replace(DLIB_AGE, asset=replace(DLIB_AGE.asset, sha256="0" * 64))
    with pytest.raises(ValueError, match="sha256"):
        packaged_session(wrong.asset)
    missing = replace(DLIB_AGE, asset=replace(DLIB_AGE.asset, relpath="models/absent.onnx"))
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        packaged_session(missing.asset)
    no_package = replace(DLIB_AGE, asset=replace(DLIB_AGE.asset, package="no_such_package_x"))
    with pytest.raises(ImportError, match="pip install no_such_package_x"):
        packaged_session(no_package.asset)


def test_chip_nets_need_sface():
    with pytest.raises(ValueError, match="sface"):
        ArcFaceEmbedder(model="buffalo_l", layers=("dlib_age",)).fit()
