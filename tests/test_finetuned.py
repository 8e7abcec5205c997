"""The fine-tuned SFace embedding layer behind ``layers="age-gender-finetuned"``."""

import dataclasses

import numpy as np
import pytest

from skagegender.embedding import (
    ArcFaceEmbedder,
    align_face,
    feature_blocks,
    load_image,
)
from skagegender.embedding._assets import (
    SFACE,
    converted_model,
    make_session,
    packaged_session,
)
from skagegender.embedding._finetuned import FINETUNED_AGE_CLASSES, SFACE_FINETUNED


def _age_and_female(X, layers="age-gender-finetuned"):
    blocks = feature_blocks(layers)
    return X[:, blocks["sface_finetuned_age"]], X[:, blocks["sface_finetuned_female"]][:, 0]


def test_finetuned_block_follows_the_dlib_blocks(fgnet_pair):
    dlib = ArcFaceEmbedder(layers="age-gender-dlib").fit_transform(fgnet_pair)
    embedder = ArcFaceEmbedder(layers="age-gender-finetuned").fit()
    X = embedder.transform(fgnet_pair)
    blocks = embedder.feature_blocks_
    assert list(blocks) == ["fc1", "conv_8_relu", "conv_12_relu", "conv_14_relu", "dlib_age",
                            "dlib_gender", "sface_finetuned", "sface_finetuned_age",
                            "sface_finetuned_female"]
    whole, age, female = (blocks[k] for k in ("sface_finetuned", "sface_finetuned_age",
                                              "sface_finetuned_female"))
    assert (whole.start, whole.stop) == (age.start, female.stop) and age.stop == female.start
    assert (age.stop - age.start, female.stop - female.start) == (101, 1)
    assert X.shape == (2, dlib.shape[1] + 102) == (2, embedder.embedding_dim_)
    names = list(embedder.get_feature_names_out())
    assert names[whole] == list(SFACE_FINETUNED.feature_names)
    assert names[female] == ["sface_finetuned_female"]
    # The blocks before it are untouched.
    np.testing.assert_array_equal(X[:, :whole.start], dlib)
    age_p, female = _age_and_female(X)
    np.testing.assert_allclose(age_p.sum(1), 1, atol=1e-4)
    expected_age = age_p @ FINETUNED_AGE_CLASSES
    assert expected_age[0] < 8 and 18 < expected_age[1] < 40
    assert female[0] < 0.5 < female[1]
    assert embedder.backbone_["finetuned_sha256"] == {"sface_finetuned":
                                                      SFACE_FINETUNED.asset.sha256}
    assert "non-commercial" in embedder.backbone_["licence"]


@pytest.mark.slow
def test_finetuned_alone_on_aligned_crops_and_mirrored(fgnet_pair):
    reference = ArcFaceEmbedder(layers="age-gender-finetuned").fit_transform(fgnet_pair)
    alone = ArcFaceEmbedder(layers=("sface_finetuned",)).fit_transform(fgnet_pair)
    assert alone.shape == (2, 128 + 102)
    for got, expected in zip(_age_and_female(alone, ("sface_finetuned",)),
                             _age_and_female(reference)):
        np.testing.assert_allclose(got, expected, atol=1e-6)

    embedder = ArcFaceEmbedder(layers=("sface_finetuned",))
    face = embedder.detect_faces(fgnet_pair[1])[0]
    crop = align_face(load_image(fgnet_pair[1]), face.landmarks)[..., ::-1]
    from_crop = embedder.fit_transform([np.ascontiguousarray(crop)])
    np.testing.assert_allclose(from_crop, alone[1:], atol=1e-4)

    mirrored = ArcFaceEmbedder(layers=("sface_finetuned",), flip_augment=True)
    X = mirrored.fit_transform(fgnet_pair)
    (age_p, _), (age_alone, _) = (_age_and_female(x, ("sface_finetuned",))
                                  for x in (X, alone))
    np.testing.assert_allclose(age_p.sum(1), 1, atol=1e-4)
    # Averaging with the mirror image moves the expected age, but not far.
    shift = (age_p - age_alone) @ FINETUNED_AGE_CLASSES
    assert np.all(np.abs(shift) < 5)
    assert np.abs(age_p - age_alone).max() > 1e-3


def test_raw_layer_output_is_the_map_the_pooled_output_averages():
    path = converted_model(SFACE, symbolic_dims={0: "batch"}, pooled_layers=("conv_14_relu",),
                           raw_layers=("conv_14_relu",))
    session = make_session(path)
    rng = np.random.default_rng(0)
    blob = rng.uniform(0, 255, size=(2, 3, 112, 112)).astype(np.float32)
    pooled, raw = session.run(["conv_14_relu__gap", "conv_14_relu"], {"data": blob})
    assert raw.shape == (2, 1024, 7, 7)
    np.testing.assert_allclose(raw.mean(axis=(2, 3)), pooled, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no activation named 'conv_99'"):
        converted_model(SFACE, symbolic_dims={0: "batch"}, raw_layers=("conv_99",))


def test_finetuned_file_is_checked():
    wrong = dataclasses.replace(
        SFACE_FINETUNED, asset=dataclasses.replace(SFACE_FINETUNED.asset, sha256="0" * 64))
    with pytest.raises(ValueError, match="sha256"):
        packaged_session(wrong.asset)
    missing = dataclasses.replace(
        SFACE_FINETUNED,
        asset=dataclasses.replace(SFACE_FINETUNED.asset, relpath="pretrained/nothing.onnx"))
    with pytest.raises(FileNotFoundError, match="nothing.onnx"):
        packaged_session(missing.asset)


@pytest.mark.slow
def test_sface_weights_rebuild_the_embedding_layer_from_the_maps(portrait):
    """fc1 = BN_fc1(W @ flatten(BN_bn1(conv_14_relu)) + b): what the fine-tuning starts from."""
    from skagegender.embedding import sface_maps, sface_weights

    w = sface_weights()
    crops = ArcFaceEmbedder().align([portrait]).crops
    maps = sface_maps(crops).astype(np.float64)

    def batchnorm(x, name, axis_shape):
        g, b, m, v = (w[f"{name}_{k}"].reshape(axis_shape)
                      for k in ("gamma", "beta", "moving_mean", "moving_var"))
        return (x - m) / np.sqrt(v + 2e-5) * g + b

    hidden = batchnorm(maps, "bn1", (1, -1, 1, 1)).reshape(1, -1)
    hidden = hidden @ w["pre_fc1_weight_dequantized"].T + w["pre_fc1_bias_dequantized"]
    fc1 = batchnorm(hidden, "fc1", (1, -1))
    row = ArcFaceEmbedder().transform(crops)[0]  # L2-normalised fc1 of the same crop
    np.testing.assert_allclose(fc1[0] / np.linalg.norm(fc1[0]), row, atol=1e-3)


def _train_tiny(sample_weight=None, age=None):
    """A layer trained 1 epoch on 32 small random maps (batches of 8); its outputs on all."""
    pytest.importorskip("torch")
    from skagegender.training import train_finetuned_layer

    rng = np.random.default_rng(0)
    maps = rng.gamma(1.0, 0.5, size=(32, 1024, 7, 7)).astype(np.float16)
    female = np.where(rng.random(32) < 0.5, 1.0, 0.0)
    female[:4] = np.nan  # unknown genders train the age outputs only
    age = rng.uniform(0, 90, size=32) if age is None else age
    layer = train_finetuned_layer(maps, age, female, np.arange(24), epochs=1, batch_size=8,
                                  n_threads=1, sample_weight=sample_weight)
    return layer.outputs(maps)


def test_sample_weight_of_ones_trains_exactly_as_without_weights():
    unweighted = _train_tiny()
    # the weights of rows outside the training rows are never read
    ones = np.r_[np.ones(24), np.full(8, 5.0)]
    np.testing.assert_array_equal(_train_tiny(ones), unweighted)
    weighted = _train_tiny(np.linspace(0.2, 3, 32))
    assert np.isfinite(weighted).all()
    assert np.abs(weighted - unweighted).max() > 1e-4


def test_rows_of_weight_zero_teach_nothing():
    weight = np.r_[np.ones(12), np.zeros(20)]
    age = np.random.default_rng(1).uniform(0, 90, size=32)
    other = age.copy()
    other[12:] = 100 - other[12:]  # other labels where the weight is 0
    np.testing.assert_array_equal(_train_tiny(weight, age), _train_tiny(weight, other))
    # one row of weight 1: most batches weigh 0 and are skipped, no NaN
    assert np.isfinite(_train_tiny(np.r_[1.0, np.zeros(31)])).all()


@pytest.mark.parametrize("weight, message", [
    (np.ones(31), "shape"),
    (np.r_[-1.0, np.ones(31)], "negative"),
    (np.r_[np.nan, np.ones(31)], "non-finite"),
    (np.r_[np.inf, np.ones(31)], "non-finite"),
    (np.r_[np.zeros(24), np.ones(8)], "sums to 0"),
])
def test_sample_weight_is_validated(weight, message):
    with pytest.raises(ValueError, match=message):
        _train_tiny(weight)
