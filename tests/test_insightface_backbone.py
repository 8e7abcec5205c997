"""The InsightFace path, for real, on small generated ArcFace-shaped ONNX graphs."""

import numpy as np
import pytest

from skagegender.embedding import ArcFaceEmbedder

pytest.importorskip("insightface")
onnx = pytest.importorskip("onnx")


def _arcface_like(path, weights, fixed_batch=False):
    """N x 3 x 112 x 112 -> N x 512: mean colour of the crop times a random matrix."""
    from onnx import TensorProto, helper, numpy_helper

    batch = 1 if fixed_batch else "N"
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["data"], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "W"], ["fc1"]),
        ],
        "arcface_like",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [batch, 512])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def _expected(rgb_crop, weights):
    x = (rgb_crop.astype(np.float32) - 127.5) / 127.5  # insightface's normalisation
    row = x.reshape(-1, 3).mean(axis=0) @ weights
    return row / np.linalg.norm(row)


@pytest.fixture(scope="module")
def weights():
    return np.random.default_rng(0).normal(size=(3, 512)).astype(np.float32)


@pytest.mark.parametrize("fixed_batch", [False, True])
def test_onnx_file_is_routed_to_arcface_and_batched(tmp_path, weights, fixed_batch):
    path = tmp_path / "w600k_like.onnx"
    _arcface_like(str(path), weights, fixed_batch)
    embedder = ArcFaceEmbedder(model=str(path)).fit()
    assert embedder.embedding_dim_ == 512
    info = embedder.backbone_info()
    assert info.name == str(path) and len(info.weights_sha256) == 64
    assert "non-commercial" in info.licence and info.embedding_dim == 512
    assert embedder.feature_blocks_ == {"arcface": slice(0, 512)}
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)  # aligned RGB crops
    rows = embedder.transform(crops)
    for crop, row in zip(crops, rows):
        np.testing.assert_allclose(row, _expected(crop, weights), atol=1e-5)


def test_pack_name_and_folder_with_yunet_detection(tmp_path, weights, monkeypatch, portrait):
    pack = tmp_path / "models" / "buffalo_s"
    pack.mkdir(parents=True)
    _arcface_like(str(pack / "w600k_mbf.onnx"), weights)
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    by_name = ArcFaceEmbedder(model="buffalo_s").transform([portrait])
    by_folder = ArcFaceEmbedder(model=str(pack)).transform([portrait])
    assert by_name.shape == (1, 512) and np.isfinite(by_name).all()
    np.testing.assert_allclose(by_name, by_folder, atol=1e-6)
    # the face went through YuNet + alignment: same crop as the default backbone's
    face = ArcFaceEmbedder().detect_faces(portrait)[0]
    from skagegender.embedding import align_face, load_image

    crop = align_face(load_image(portrait), face.landmarks)[..., ::-1]
    np.testing.assert_allclose(by_name[0], _expected(crop, weights), atol=1e-4)


def test_unknown_model_and_empty_pack(tmp_path):
    with pytest.raises(ValueError, match="Unknown backbone"):
        ArcFaceEmbedder(model="no_such_pack").fit()
    empty = tmp_path / "empty_pack"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="No .onnx files"):
        ArcFaceEmbedder(model=str(empty)).fit()
    with pytest.raises(ValueError, match="only available for the 'sface'"):
        ArcFaceEmbedder(model=str(empty), layers="age-gender").fit()
