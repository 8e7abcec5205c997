"""Speed levers (issue 15): identity=False (no SFace pass), the shipped "fast" model,
``--model`` taking a shipped name or a file, per-network graph optimisation."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from skagegender.cli import main
from skagegender.embedding import ArcFaceEmbedder, feature_blocks
from skagegender.model import AgeGenderModel, ModelFileError
from skagegender.pretrained import MODELS, load, model_file

CHIPS = ("dlib_age", "dlib_gender")


@pytest.fixture
def sessions_built(monkeypatch):
    """(model file name, graph optimisation level) of each onnxruntime session built."""
    import onnxruntime

    built = []

    class RecordingSession(onnxruntime.InferenceSession):
        def __init__(self, path, *args, **kwargs):
            options = kwargs.get("sess_options", args[0] if args else None)
            built.append((Path(path).name, options and options.graph_optimization_level))
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", RecordingSession)
    return built


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_identity_false_runs_only_the_chip_networks(portrait, sessions_built):
    # providers named (as the default would) so that this backbone is built here, not reused
    fast = ArcFaceEmbedder(layers=CHIPS, identity=False, providers=["CPUExecutionProvider"])
    full = ArcFaceEmbedder(layers=CHIPS)
    x_fast = fast.fit_transform([portrait])
    names = [name for name, _ in sessions_built]
    assert names and not [name for name in names if "sface" in name]
    assert any("yunet" in name for name in names)  # detection still runs
    x_full = full.fit_transform([portrait])
    assert x_fast.shape == (1, 83) and fast.embedding_dim_ == 83
    assert fast.feature_blocks_ == {"dlib_age": slice(0, 81), "dlib_gender": slice(81, 83)}
    # the same chips and networks, without the 128 identity columns in front
    np.testing.assert_allclose(x_fast, x_full[:, full.feature_blocks_["dlib_age"].start:],
                               atol=1e-5)
    assert list(fast.get_feature_names_out()[:2]) == ["dlib_age_p0", "dlib_age_p1"]
    # the cache key and model files tell the two apart; the default's info is unchanged
    assert fast.backbone_info()["identity"] is False
    assert "identity" not in full.backbone_info()


def test_identity_false_with_mirror_and_pooled_layers(portrait):
    flip = ArcFaceEmbedder(layers=("conv_8_relu",) + CHIPS, identity=False, flip_augment=True)
    x = flip.fit_transform([portrait])
    assert x.shape == (1, 512 + 83) and np.isfinite(x).all()
    assert list(flip.feature_blocks_) == ["conv_8_relu", "dlib_age", "dlib_gender"]


def test_identity_false_needs_a_layer():
    with pytest.raises(ValueError, match="at least one feature layer"):
        ArcFaceEmbedder(identity=False).fit()
    with pytest.raises(ValueError, match="identity=False"):
        ArcFaceEmbedder(model="buffalo_l", identity=False).fit()


def test_identity_setting_round_trips_through_a_model_file(tmp_path, fgnet_pair):
    embedder = ArcFaceEmbedder(layers=CHIPS, identity=False)
    X = embedder.fit_transform(fgnet_pair)
    model = AgeGenderModel(embedder).fit_features(np.vstack([X, X]), [2, 29, 2, 29])
    path = model.save(tmp_path / "m.skag")
    loaded = AgeGenderModel.load(path)
    assert loaded.embedder_.identity is False and loaded.backbone_["identity"] is False
    np.testing.assert_allclose(loaded.predict(fgnet_pair), model.predict(fgnet_pair))
    # the heads take 83 features: an embedder with the identity block is refused
    from skagegender.model import BackboneMismatchError

    with pytest.raises(BackboneMismatchError):
        AgeGenderModel.load(path, embedder=ArcFaceEmbedder(layers=CHIPS))


def test_a_non_boolean_identity_in_a_model_file_is_refused(tmp_path, fgnet_pair):
    embedder = ArcFaceEmbedder(layers=CHIPS, identity=False)
    X = embedder.fit_transform(fgnet_pair)
    model = AgeGenderModel(embedder).fit_features(np.vstack([X, X]), [2, 29, 2, 29])
    model.embedder_.identity = "no"  # written by someone else's code
    path = model.save(tmp_path / "bad.skag")
    with pytest.raises(ModelFileError, match="invalid"):
        AgeGenderModel.load(path)


def test_the_dlib_age_network_runs_without_the_layout_transform(sessions_built):
    from onnxruntime import GraphOptimizationLevel as Level

    # det_max_side only makes this backbone new to the process, so its sessions are built here
    ArcFaceEmbedder(layers=CHIPS, identity=False, det_max_side=1000).fit()
    levels = dict(sessions_built)
    assert levels["age-v1.onnx"] == Level.ORT_ENABLE_EXTENDED  # no NCHWc layout transform
    assert levels["gender-v1.onnx"] == Level.ORT_ENABLE_ALL


def test_shipped_fast_model_predicts_faces(fgnet_pair, group_photo):
    model = load("fast")
    # the compact network (230) and the dlib age network (81), no SFace
    assert model.backbone_["identity"] is False and model.n_features_in_ == 230 + 81
    embedder = model.embedder_
    assert set(feature_blocks(embedder.layers, identity=embedder.identity)) == {
        "compact", "compact_embedding", "compact_age", "compact_female", "dlib_age"}
    ages = model.predict(fgnet_pair)
    assert ages[0] < 12 and 15 < ages[1] < 45  # a two-year-old and a 29-year-old
    faces = model.predict_faces(group_photo)
    assert len(faces) == 6
    assert {f["gender"] for f in faces} <= {"female", "male"}


def test_shipped_names():
    assert set(MODELS) == {"default", "fast"}
    assert model_file("default") == MODELS["default"]
    with pytest.raises(ValueError, match="Unknown shipped model 'slow'"):
        load("slow")


def test_cli_model_takes_a_shipped_name_or_a_file(portrait, tmp_path, capsys, monkeypatch):
    code, out, _ = _run(capsys, ["predict", "--json", "--model", "fast", portrait])
    assert code == 0
    (record,) = json.loads(out)
    assert len(record["faces"]) == 1 and 20 < record["faces"][0]["age"] < 80
    # a file path works too, and ./fast is a file even though "fast" is a shipped name
    copy = tmp_path / "fast"
    shutil.copy(MODELS["fast"], copy)
    monkeypatch.chdir(tmp_path)
    code, out2, _ = _run(capsys, ["predict", "--json", "--model", "./fast", portrait])
    assert code == 0 and json.loads(out2)[0]["faces"] == record["faces"]
    code, _, err = _run(capsys, ["predict", "--model", "./missing.skag", portrait])
    assert code == 2 and "missing.skag" in err


def test_cli_evaluate_names_the_shipped_model(shared_data, capsys):
    import hashlib

    code, out, _ = _run(capsys, ["evaluate", "--dataset", "fgnet", "--root",
                                 str(shared_data / "FGNET"), "--limit", "6", "--json",
                                 "--model", "fast"])
    assert code == 0
    result = json.loads(out)
    assert result["model"] == {"name": "fast",
                               "sha256": hashlib.sha256(MODELS["fast"].read_bytes()).hexdigest()}
    assert result["n_images"] == 6


def test_sessions_are_built_once_per_process(portrait, sessions_built):
    first = load("fast")
    first.predict_faces(portrait)
    before = len(sessions_built)  # none when another test already loaded "fast"
    second = load("fast")
    assert second.predict_faces(portrait) == first.predict_faces(portrait)
    assert len(sessions_built) == before  # the second load reuses the sessions
