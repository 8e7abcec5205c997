"""The compact network: its layer in the embedder, the shipped fast model, and (with torch)
how it is built from SFace, trained, resumed and exported."""

import numpy as np
import pytest

from skagegender.embedding import (
    COMPACT_AGE_CLASSES,
    COMPACT_EMBEDDING_WIDTH,
    ArcFaceEmbedder,
    feature_blocks,
)


@pytest.fixture(scope="module")
def faces(fgnet_ten):
    return sorted(str(p) for p in (fgnet_ten / "images").iterdir())[:6]


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.slow
def test_the_compact_layer_runs_the_packaged_network_on_the_shrunk_aligned_crop(faces):
    from skagegender.embedding import COMPACT, shrink_crop

    embedder = ArcFaceEmbedder(layers=("compact",), identity=False,
                               providers=["CPUExecutionProvider"])
    X = embedder.fit_transform(faces)
    assert X.shape == (len(faces), 230) and embedder.embedding_dim_ == 230
    blocks = embedder.feature_blocks_
    assert blocks == feature_blocks(("compact",), identity=False)
    assert blocks["compact_embedding"] == slice(0, COMPACT_EMBEDDING_WIDTH)
    assert blocks["compact_age"] == slice(128, 229) and blocks["compact_female"] == slice(229, 230)
    np.testing.assert_allclose(X[:, blocks["compact_age"]].sum(1), 1, atol=1e-4)
    assert ((X[:, -1] >= 0) & (X[:, -1] <= 1)).all()
    # the same numbers as the network run by hand on the 112 x 112 crops, shrunk
    crops = embedder.align(faces).crops  # RGB
    blob = np.stack([shrink_crop(c, 64) for c in crops]).transpose(0, 3, 1, 2).astype(np.float32)
    by_hand = _session(COMPACT.asset.path()).run(None, {"data": blob})[0]
    np.testing.assert_allclose(X, by_hand, atol=1e-5)
    spec = embedder.backbone_info()
    assert spec["chip_nets_sha256"] == {"compact": COMPACT.asset.sha256}
    assert "compact network" in spec.licence


@pytest.mark.slow
def test_the_compact_layer_appends_to_other_blocks(faces):
    both = ArcFaceEmbedder(layers=("dlib_age", "compact"), identity=False,
                           providers=["CPUExecutionProvider"]).fit_transform(faces[:2])
    alone = ArcFaceEmbedder(layers=("compact",), identity=False,
                            providers=["CPUExecutionProvider"]).fit_transform(faces[:2])
    assert both.shape == (2, 81 + 230)
    np.testing.assert_allclose(both[:, 81:], alone, atol=1e-6)


@pytest.mark.slow
def test_the_shipped_fast_model_is_the_compact_network_with_calibrated_heads(faces):
    from skagegender import load
    from skagegender.training._fast_recipe import EMBEDDER_PARAMS

    model = load("fast")
    assert model.embedder_.layers == EMBEDDER_PARAMS["layers"]
    assert model.embedder_.layers[0] == "compact" and model.embedder_.identity is False
    assert type(model.age_head_).__name__ == "ConformalAgeRegressor"
    assert type(model.gender_head_).__name__ == "AgeAwareCalibratedClassifier"
    details = model.predict_details(faces)
    X = model.embedder_.transform(faces)
    expected = X[:, 128:229] @ COMPACT_AGE_CLASSES
    if model.embedder_.layers == ("compact",):  # the age is the network's expected age
        np.testing.assert_allclose(details["age"], np.clip(expected, 0, 100), atol=1e-6)
    else:  # an age gate over it and the dlib age network: between the two
        dlib = X[:, 230:311] @ np.r_[0.25, np.arange(1, 81)]
        low, high = np.minimum(expected, dlib), np.maximum(expected, dlib)
        assert ((details["age"] >= low - 1) & (details["age"] <= high + 1)).all()
    lo, hi = details["age_interval"].T
    assert (lo <= details["age"]).all() and (details["age"] <= hi).all() and (hi > lo).all()
    # a wider promise gives a wider interval
    wide = model.predict_details(faces, coverage=0.95)["age_interval"]
    assert ((wide[:, 1] - wide[:, 0]) >= (hi - lo) - 1e-9).all()
    p = np.asarray(details["gender_probability"], float)
    assert ((p >= 0.5) & (p <= 1)).all()
    assert set(details["gender"]) <= {"female", "male"}


# -- training (needs torch) ----------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.slow
def test_at_full_width_and_size_the_compact_trunk_is_sface(torch):
    """Started from SFace with every channel kept, the trunk computes SFace's conv_14."""
    from skagegender.training._compact import _make_network
    from skagegender.training._deep import sface_torch

    net = _make_network(width=1.0, size=112).eval()
    sface = sface_torch(None, "conv_14_relu")
    x = torch.rand(2, 3, 112, 112) * 255
    with torch.no_grad():
        ours = net.trunk((x - 127.5) * 0.0078125)
        theirs = sface(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_at_half_width_each_layer_keeps_sface_s_strongest_channels(torch):
    from skagegender.training._compact import _make_network, multiply_adds
    from skagegender.training._deep import sface_graph

    _, weights = sface_graph()
    net = _make_network(width=0.5, size=64)
    assert multiply_adds(net, 64) <= 50e6  # the budget: ~50 M multiply-adds
    first = net.trunk[0][0].weight.detach().numpy()  # conv_1: 16 of SFace's 32 filters
    full = np.asarray(weights["conv_1_conv2d_weight_reshaped"])
    gamma = np.asarray(weights["conv_1_batchnorm_gamma"])
    var = np.asarray(weights["conv_1_batchnorm_moving_var"])
    score = np.abs(gamma) / np.sqrt(var + 1e-3) * np.abs(full).reshape(32, -1).sum(1)
    kept = np.sort(np.argsort(-score)[:16])
    np.testing.assert_array_equal(first, full[kept])
    # the next depthwise layer keeps the same channels
    np.testing.assert_array_equal(net.trunk[1][0].weight.detach().numpy(),
                                  np.asarray(weights["conv_2_dw_conv2d_weight_reshaped"])[kept])


def _tiny_set(n=96, seed=0):
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
    age = rng.uniform(1, 80, n).astype(np.float32)
    female = (rng.uniform(size=n) > 0.5).astype(np.float32)
    return crops, age, female


@pytest.mark.slow
def test_training_resumes_to_the_same_network_and_refuses_other_settings(torch, tmp_path):
    from skagegender.training import train_compact

    crops, age, female = _tiny_set()
    settings = {"epochs": 2, "batch_size": 32, "augment": False, "n_threads": 1, "bf16": False}
    whole = train_compact(crops, age, female, np.arange(64), validation_rows=np.arange(64, 96),
                          checkpoint_folder=tmp_path / "a", **settings)
    part = train_compact(crops, age, female, np.arange(64), validation_rows=np.arange(64, 96),
                         checkpoint_folder=tmp_path / "b", stop_after_steps=3, **settings)
    assert not part.finished and part.step == 3
    resumed = train_compact(crops, age, female, np.arange(64),
                            validation_rows=np.arange(64, 96),
                            checkpoint_folder=tmp_path / "b", **settings)
    assert whole.finished and resumed.finished and resumed.step == whole.step == 4
    np.testing.assert_allclose(resumed.predict(crops[:8]), whole.predict(crops[:8]), atol=1e-5)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert all(np.isfinite(h["val_mae"]) for h in resumed.history)
    with pytest.raises(ValueError, match="other data or settings"):
        train_compact(crops, age, female, np.arange(64), checkpoint_folder=tmp_path / "b",
                      **{**settings, "alpha": 0.3})


@pytest.mark.slow
def test_the_teacher_moves_the_network(torch):
    """Targets mix label and teacher: a teacher that says 70 pulls the ages up."""
    from skagegender.training import train_compact

    crops, age, female = _tiny_set()
    age[:] = 10.0
    settings = {"epochs": 3, "batch_size": 32, "augment": False, "n_threads": 1, "bf16": False,
                    "lr": 5e-3}
    labels = train_compact(crops, age, female, np.arange(96), alpha=0.0, **settings)
    teacher = np.full(96, 70.0, np.float32)
    taught = train_compact(crops, age, female, np.arange(96), teacher_age=teacher,
                           teacher_sigma=np.full(96, 3.0, np.float32), alpha=0.8, **settings)
    ages = np.arange(101)
    mean_labels = (labels.predict(crops)[:, 128:229] @ ages).mean()
    mean_taught = (taught.predict(crops)[:, 128:229] @ ages).mean()
    assert mean_taught > mean_labels + 10


@pytest.mark.slow
def test_the_exported_network_matches_torch_with_float16_weights(torch, tmp_path):
    import onnx

    from skagegender.training._compact import CompactModel, _make_network, shrink_crops

    crops, _, _ = _tiny_set(8)
    model = CompactModel(_make_network(), 64)
    path = model.export_onnx(tmp_path / "net.onnx")
    stored = onnx.load(str(path))
    big = [t for t in stored.graph.initializer if np.prod(t.dims) > 16]
    assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big)
    blob = shrink_crops(crops).transpose(0, 3, 1, 2).astype(np.float32)
    out = _session(path).run(None, {"data": blob})[0]
    np.testing.assert_allclose(out, model.predict(crops), atol=5e-3)
    np.testing.assert_allclose(out[:, 128:229].sum(1), 1, atol=1e-5)
