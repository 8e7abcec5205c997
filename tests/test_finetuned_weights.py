"""A fine-tuned layer of your own: its checked numbers, our graph, model files, training."""

import copy
import json
import pickle
import sys
import zipfile

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.utils._param_validation import InvalidParameterError

from skagegender.cli import main
from skagegender.embedding import (
    FINETUNED_AGE_CLASSES,
    FINETUNED_WEIGHT_ARRAYS,
    ArcFaceEmbedder,
    FineTunedWeights,
    feature_blocks,
    sface_maps,
)
from skagegender.embedding._finetuned import SFACE_FINETUNED
from skagegender.model import AgeGenderModel, BackboneMismatchError, ModelFileError
from skagegender.model._persistence import load_model_file, save_model_file

LAYERS = "age-gender-finetuned"


def _arrays(seed=0):
    """Random weights of the right shapes and dtypes (outputs not saturated)."""
    rng = np.random.default_rng(seed)
    scale = {"hidden_weight": 0.01, "prelu_slope": 0.25, "output_weight": 0.1}
    return {key: (rng.normal(size=shape) * scale.get(key, 0.3)).astype(dtype)
            for key, (shape, dtype) in FINETUNED_WEIGHT_ARRAYS.items()}


@pytest.fixture(scope="module")
def weights():
    return FineTunedWeights(_arrays())


@pytest.fixture(scope="module")
def crops():
    """Aligned-crop-sized images: the embedder takes them as faces, without detection."""
    return np.random.default_rng(1).integers(0, 256, size=(6, 112, 112, 3), dtype=np.uint8)


def _reference(arrays, maps):
    """The layer in numpy, float64: flatten, linear, PReLU, linear, softmax | sigmoid."""
    x = maps.reshape(len(maps), -1).astype(np.float64)
    hidden = x @ arrays["hidden_weight"].astype(np.float64) + arrays["hidden_bias"]
    hidden = np.where(hidden > 0, hidden, hidden * arrays["prelu_slope"])
    logits = hidden @ arrays["output_weight"] + arrays["output_bias"]
    age = np.exp(logits[:, :101] - logits[:, :101].max(axis=1, keepdims=True))
    return np.concatenate([age / age.sum(axis=1, keepdims=True),
                           1 / (1 + np.exp(-logits[:, 101:]))], axis=1)


# -- the container and the graph ------------------------------------------------------


def test_template_graph_computes_the_layer(weights):
    maps = np.random.default_rng(2).gamma(1.0, 0.5, size=(7, 1024, 7, 7)).astype(np.float32)
    expected = _reference(_arrays(), maps)
    assert 0.05 < expected[:, :101].max() < 0.9  # neither flat nor one-hot: a real check
    got = weights.outputs(maps)
    assert got.shape == (7, 102) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-6)
    np.testing.assert_allclose(weights.outputs(maps, [4, 1], batch_size=1), got[[4, 1]])
    model = weights.onnx_model()
    assert [i.name for i in model.graph.input] == ["maps"]
    assert [o.name for o in model.graph.output] == ["probs"]
    kinds = {node.op_type for node in model.graph.node}
    assert kinds <= {"Cast", "Flatten", "MatMul", "Add", "PRelu", "Slice", "Softmax",
                     "Sigmoid", "Concat"}
    # the one big weight is stored as float16
    stored = {init.name: init.data_type for init in model.graph.initializer}
    assert stored["hidden_weight"] == 10  # onnx.TensorProto.FLOAT16


def test_weights_are_checked():
    good = _arrays()
    with pytest.raises(ValueError, match=r"extra \['bias2'\]"):
        FineTunedWeights({**good, "bias2": good["hidden_bias"]})
    with pytest.raises(ValueError, match=r"missing \['prelu_slope'\]"):
        FineTunedWeights({k: v for k, v in good.items() if k != "prelu_slope"})
    with pytest.raises(ValueError, match="'hidden_weight' must be float16 of shape"):
        FineTunedWeights({**good, "hidden_weight": good["hidden_weight"].astype(np.float32)})
    with pytest.raises(ValueError, match=r"'output_bias' must be float32 of shape \(102,\)"):
        FineTunedWeights({**good, "output_bias": np.zeros(103, np.float32)})
    with pytest.raises(ValueError, match="'output_bias' must be float32"):
        FineTunedWeights({**good, "output_bias": good["output_bias"].astype(">f4")})
    nan = good["hidden_bias"].copy()
    nan[3] = np.nan
    with pytest.raises(ValueError, match="'hidden_bias' holds NaN"):
        FineTunedWeights({**good, "hidden_bias": nan})
    with pytest.raises(ValueError, match="'prelu_slope' must be a numpy array, got list"):
        FineTunedWeights({**good, "prelu_slope": good["prelu_slope"].tolist()})
    with pytest.raises(ValueError, match="mapping of arrays"):
        FineTunedWeights([good])


def test_weights_are_immutable_and_identified_by_their_numbers(weights):
    assert copy.deepcopy(weights) is weights and copy.copy(weights) is weights
    with pytest.raises(ValueError, match="read-only"):
        weights.arrays["hidden_bias"][0] = 1.0
    again = pickle.loads(pickle.dumps(weights))
    assert again == weights and again.sha256 == weights.sha256
    assert not again.arrays["output_bias"].flags.writeable
    changed = _arrays()
    changed["output_bias"][0] += 1e-3
    assert FineTunedWeights(changed).sha256 != weights.sha256
    assert FineTunedWeights(_arrays()).sha256 == weights.sha256  # a copy: the same digest


# -- the embedder ------------------------------------------------------------------------


def test_embedder_runs_the_given_weights_on_sface_maps(weights, crops):
    shipped = ArcFaceEmbedder(layers=LAYERS).fit()
    embedder = ArcFaceEmbedder(layers=LAYERS, finetuned_weights=weights).fit()
    assert clone(embedder).get_params()["finetuned_weights"] is weights
    assert embedder.backbone_["finetuned_sha256"] == {"sface_finetuned": weights.sha256}
    assert shipped.backbone_["finetuned_sha256"] == {"sface_finetuned":
                                                     SFACE_FINETUNED.asset.sha256}
    assert embedder.backbone_info().mismatch(shipped.backbone_info())[0] == "options"
    assert embedder.cache_key() != shipped.cache_key()
    assert embedder.feature_blocks_ == shipped.feature_blocks_
    X, X_shipped = embedder.transform(crops), shipped.transform(crops)
    block = embedder.feature_blocks_["sface_finetuned"]
    # only the layer's block changes, to the weights' outputs on SFace's maps
    np.testing.assert_array_equal(X[:, :block.start], X_shipped[:, :block.start])
    maps = sface_maps(crops)
    np.testing.assert_allclose(X[:, block], weights.outputs(maps), atol=1e-5)
    assert np.abs(X[:, block] - X_shipped[:, block]).max() > 0.01
    # weights are ignored where no layer runs them
    plain = ArcFaceEmbedder(layers="age-gender", finetuned_weights=weights)
    assert plain.backbone_info() == ArcFaceEmbedder(layers="age-gender").backbone_info()
    with pytest.raises(InvalidParameterError, match="finetuned_weights"):
        ArcFaceEmbedder(layers=LAYERS, finetuned_weights=dict(weights.arrays)).fit()


# -- model files -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(weights, crops, tmp_path_factory):
    embedder = ArcFaceEmbedder(layers=LAYERS, finetuned_weights=weights)
    X = embedder.fit_transform(crops)
    model = AgeGenderModel(embedder, age_head=Ridge()).fit_features(
        X, np.linspace(5, 70, len(crops)))
    path = tmp_path_factory.mktemp("model") / "mine.skag"
    model.save(path)
    return model, path


def test_model_file_round_trip_keeps_the_layer(saved, weights, crops):
    model, path = saved
    estimators, _ = load_model_file(path)
    assert sorted(estimators["finetuned"]) == sorted(FINETUNED_WEIGHT_ARRAYS)
    assert estimators["finetuned"]["hidden_weight"].dtype == np.float16
    assert estimators["embedder"].finetuned_weights is None  # numbers only, no object
    loaded = AgeGenderModel.load(path)
    assert loaded.embedder_.finetuned_weights == weights
    assert loaded.backbone_ == model.backbone_
    np.testing.assert_array_equal(loaded.predict(crops), model.predict(crops))
    # an embedder given without weights gets the file's layer
    given = AgeGenderModel.load(path, embedder=ArcFaceEmbedder(layers=LAYERS, max_pixels=10**6))
    assert given.embedder_.finetuned_weights == weights
    np.testing.assert_array_equal(given.predict(crops), model.predict(crops))
    # another layer behind the same heads is refused
    other = FineTunedWeights(_arrays(seed=5))
    with pytest.raises(BackboneMismatchError, match="finetuned_sha256"):
        AgeGenderModel.load(path, embedder=ArcFaceEmbedder(layers=LAYERS,
                                                           finetuned_weights=other))


def _rewrite(path, out, change, change_meta=None):
    """``path`` with its estimators (and meta) changed, checksums recomputed."""
    estimators, meta = load_model_file(path)
    change(estimators)
    if change_meta is not None:
        change_meta(meta)
    written = ("format_version", "skagegender_version", "estimator_names", "payload_sha256",
               "meta_sha256")
    save_model_file(out, estimators, {k: v for k, v in meta.items() if k not in written})
    return out


def test_changed_layer_with_its_old_metadata_is_refused(saved, tmp_path):
    _, path = saved

    def nudge(estimators):
        estimators["finetuned"]["output_bias"] = estimators["finetuned"]["output_bias"] + 1

    bad = _rewrite(path, tmp_path / "nudged.skag", nudge)
    with zipfile.ZipFile(bad) as archive:
        meta = json.loads(archive.read("meta.json"))
    assert meta["backbone"] == load_model_file(path)[1]["backbone"]
    with pytest.raises(BackboneMismatchError, match="finetuned_sha256"):
        AgeGenderModel.load(bad)


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.update(hidden_bias=f["hidden_bias"].astype(np.float64)),
     "'hidden_bias' must be float32"),
    (lambda f: f.update(output_weight=np.zeros((128, 4096), np.float32)),
     r"'output_weight' must be float32 of shape \(128, 102\), got float32 of shape \(128, 4096"),
    (lambda f: f.update(prelu_slope=np.full(128, np.nan, np.float32)), "holds NaN"),
    (lambda f: f.update(extra=np.zeros(3, np.float32)), r"extra \['extra'\]"),
    (lambda f: f.pop("hidden_weight"), r"missing \['hidden_weight'\]"),
])
def test_damaged_layer_arrays_are_refused(saved, tmp_path, change, message):
    _, path = saved
    bad = _rewrite(path, tmp_path / "bad.skag", lambda e: change(e["finetuned"]))
    with pytest.raises(ModelFileError, match="fine-tuned layer is refused") as info:
        AgeGenderModel.load(bad)
    assert info.match(message)


def test_layer_arrays_need_a_layer_to_run_them(saved, tmp_path):
    _, path = saved

    def not_a_dict(estimators):
        estimators["finetuned"] = [estimators["finetuned"]["output_bias"]]

    with pytest.raises(ModelFileError, match="not a dict of arrays"):
        AgeGenderModel.load(_rewrite(path, tmp_path / "list.skag", not_a_dict))

    def no_layer(estimators):
        estimators["embedder"].layers = "age-gender"

    def its_meta(meta):
        meta["backbone"]["options"]["layers"] = ["conv_8_relu", "conv_12_relu", "conv_14_relu"]

    with pytest.raises(ModelFileError, match="do not run one"):
        AgeGenderModel.load(_rewrite(path, tmp_path / "nolayer.skag", no_layer, its_meta))


# -- training ---------------------------------------------------------------------------


def test_default_recipe_needs_maps_and_enough_faces():
    from skagegender.training import fit_recipe

    n = 20
    X = np.zeros((n, feature_blocks(LAYERS)["sface_finetuned"].stop))
    age = np.linspace(1, 60, n)
    with pytest.raises(ValueError, match="layer='shipped'"):
        fit_recipe("default", X, age)
    with pytest.raises(ValueError, match="only 16 training faces.*batch size, 128"):
        fit_recipe("default", X, age, maps=np.zeros((n, 1024, 7, 7), np.float16))
    with pytest.raises(ValueError, match="one per feature row"):
        fit_recipe("default", X, age, maps=np.zeros((n - 1, 1024, 7, 7), np.float16))
    with pytest.raises(ValueError, match="'train' or 'shipped'"):
        fit_recipe("default", X, age, layer="mine")


def test_train_without_torch_exits_2_with_the_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    code = main(["train", "--recipe", "default", "--dataset", "fgnet", "--root",
                 str(tmp_path), "--out", str(tmp_path / "m.skag")])
    assert code == 2
    err = capsys.readouterr().err
    assert 'pip install "skagegender[train]"' in err and "--shipped-layer" in err
    assert not (tmp_path / "m.skag").exists()
    code = main(["train", "--recipe", "fast", "--shipped-layer", "--dataset", "fgnet",
                 "--root", str(tmp_path), "--out", str(tmp_path / "m.skag")])
    assert code == 2
    assert "only applies to --recipe default" in capsys.readouterr().err


@pytest.mark.slow
def test_trained_layer_weights_give_its_outputs_in_the_embedder(fgnet_pair, shared_data):
    """FineTunedLayer.weights() run by the embedder = the torch layer on the faces' maps."""
    pytest.importorskip("torch")
    from skagegender.training import train_finetuned_layer

    images = sorted(str(p) for p in (shared_data / "FGNET" / "images").glob("*.JPG"))[:24]
    aligned = ArcFaceEmbedder().align(images)
    maps = sface_maps(aligned.crops[aligned.found]).astype(np.float16)
    age = np.linspace(2, 60, len(maps))
    female = np.full(len(maps), np.nan)
    layer = train_finetuned_layer(maps, age, female, epochs=2, batch_size=8)
    weights = layer.weights()
    embedder = ArcFaceEmbedder(layers=("sface_finetuned",), finetuned_weights=weights).fit()
    X = embedder.transform(fgnet_pair)
    got = X[:, embedder.feature_blocks_["sface_finetuned"]]
    pair = ArcFaceEmbedder().align(fgnet_pair)
    expected = layer.outputs(sface_maps(pair.crops))
    np.testing.assert_allclose(got[:, :101] @ FINETUNED_AGE_CLASSES,
                               expected[:, :101] @ FINETUNED_AGE_CLASSES, atol=0.05)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    shipped = ArcFaceEmbedder(layers=("sface_finetuned",)).fit_transform(fgnet_pair)
    assert np.abs(shipped[:, 128:] - got).max() > 0.01  # really another layer


@pytest.mark.slow
def test_train_default_recipe_trains_and_stores_the_layer(shared_data, tmp_path, capsys):
    pytest.importorskip("torch")
    out, cache = tmp_path / "mine.skag", tmp_path / "cache"
    code = main(["train", "--recipe", "default", "--dataset", "utkface", "--root",
                 str(shared_data / "UTKFace"), "--limit", "300", "--cache", str(cache),
                 "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    assert (cache / "train_utkface_maps.npy").is_file()  # the maps are kept in --cache
    model = AgeGenderModel.load(out)
    assert model.meta_["finetuned_layer"] == "trained"
    mine = model.embedder_.finetuned_weights
    assert isinstance(mine, FineTunedWeights)
    assert model.backbone_["finetuned_sha256"] == {"sface_finetuned": mine.sha256}
    assert mine.sha256 != SFACE_FINETUNED.asset.sha256
    image = str(shared_data / "FGNET" / "images" / "002A29.JPG")
    code = main(["predict", "--model", str(out), "--json", image])
    assert code == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert len(result["faces"]) == 1 and 10 < result["faces"][0]["age"] < 60
    features = model.embedder_.transform([image])
    block = model.embedder_.fit().feature_blocks_["sface_finetuned"]
    shipped = ArcFaceEmbedder(layers=LAYERS).transform([image])
    assert np.abs(features[:, block] - shipped[:, block]).max() > 0.01


@pytest.mark.slow
def test_train_default_recipe_on_too_few_faces_suggests_the_shipped_layer(
        shared_data, tmp_path, capsys):
    pytest.importorskip("torch")
    code = main(["train", "--recipe", "default", "--dataset", "fgnet", "--root",
                 str(shared_data / "FGNET"), "--limit", "40", "--out", str(tmp_path / "m.skag")])
    assert code == 2
    err = capsys.readouterr().err
    assert "at least 128" in err and "--shipped-layer" in err
    assert not (tmp_path / "m.skag").exists()
