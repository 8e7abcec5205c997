"""skagegender.training: recipes fitted on your own faces, the fine-tuned layer, frozen maps."""

import json
from pathlib import Path

import numpy as np
import pytest

from skagegender.cli import main
from skagegender.training._train import calibration_split


def test_calibration_split_keeps_each_subject_on_one_side():
    groups = np.repeat(np.arange(30), 4)
    train, held = calibration_split(len(groups), groups, share=0.2, random_state=0)
    assert set(groups[train]).isdisjoint(groups[held])
    assert len(set(groups[held])) == 6
    train, held = calibration_split(100, share=0.2, random_state=0)
    assert len(held) == 20 and len(np.intersect1d(train, held)) == 0


def test_recipe_and_custom_heads_do_not_mix(capsys, tmp_path):
    code = main(["train", "--recipe", "default", "--age-head", "ordinal", "--dataset", "fgnet",
                 "--root", str(tmp_path), "--out", str(tmp_path / "m.skag")])
    assert code == 2
    assert "--age-head" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["default", "fast"])
def test_train_recipe_on_fgnet_gives_a_working_model(recipe, fgnet_ten, tmp_path, capsys):
    from skagegender.heads import ConformalAgeRegressor, GatedExpertsRegressor
    from skagegender.model import AgeGenderModel

    out = tmp_path / f"{recipe}.skag"
    # the default recipe keeps the shipped layer here (no torch); training the layer:
    # tests/test_finetuned_weights.py
    shipped = ["--shipped-layer"] if recipe == "default" else []
    code = main(["train", "--recipe", recipe, *shipped, "--dataset", "fgnet", "--root",
                 str(fgnet_ten), "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_faces_found"] > 100
    model = AgeGenderModel.load(out)
    assert model.meta_["recipe"] == recipe
    assert model.meta_.get("finetuned_layer") == ("shipped" if recipe == "default" else None)
    faces = model.predict_faces(str(fgnet_ten / "images" / "001A02.JPG"))
    assert len(faces) == 1 and 0 <= faces[0]["age"] < 15  # a two-year-old
    assert faces[0]["gender"] is None  # FG-NET has no gender labels
    if recipe == "default":
        assert isinstance(model.age_head_, ConformalAgeRegressor)
        assert isinstance(model.age_head_.estimator_.estimator, GatedExpertsRegressor)
        low, high = faces[0]["age_interval"]
        assert low <= faces[0]["age"] <= high


@pytest.mark.slow
def test_default_recipe_on_utkface_calibrates_gender_on_held_out_faces(shared_data):
    from skagegender.datasets import embed_dataset
    from skagegender.heads import AgeAwareCalibratedClassifier
    from skagegender.metrics import mean_absolute_error
    from skagegender.training import fit_recipe, make_recipe_embedder

    embedder = make_recipe_embedder("default")
    X, data = embed_dataset("utkface", shared_data / "UTKFace", embedder=embedder, limit=400,
                            progress=False)
    model = fit_recipe("default", X[:300], data.age[:300], data.gender[:300],
                       embedder=embedder, layer="shipped")
    assert isinstance(model.gender_head_, AgeAwareCalibratedClassifier)
    pred = model.predict_features(X[300:])
    found = np.isfinite(X[300:, 0])
    age = np.asarray(data.age[300:], float)[found]
    # the shipped experts are good on UTKFace: a gate fitted on 60 faces keeps that
    assert mean_absolute_error(age, np.asarray(pred["age"], float)[found]) < 6.5
    right = np.asarray(pred["gender"], dtype=object)[found] == np.asarray(
        data.gender[300:], dtype=object)[found]
    # an MLP of 240 faces is a weak gender head; calibrated on the 60 held-out faces,
    # its printed probability still says how often it is right
    confidence = np.asarray(pred["gender_probability"], float)[found]
    assert abs(confidence.mean() - right.mean()) < 0.15


@pytest.mark.slow
def test_finetuned_layer_exports_what_it_trained(tmp_path):
    """The ONNX file of a trained layer gives the torch module's outputs."""
    pytest.importorskip("torch")
    from skagegender.embedding import FINETUNED_AGE_CLASSES
    from skagegender.embedding._assets import make_session
    from skagegender.training import train_finetuned_layer

    rng = np.random.default_rng(0)
    maps = rng.gamma(1.0, 0.5, size=(64, 1024, 7, 7)).astype(np.float16)
    age = rng.uniform(0, 90, size=64)
    female = np.where(rng.random(64) < 0.5, 1.0, 0.0)
    female[:5] = np.nan  # unknown genders train the age outputs only
    layer = train_finetuned_layer(maps, age, female, np.arange(48), epochs=1, batch_size=16)
    expected = layer.outputs(maps, np.arange(48, 64))
    path = layer.export_onnx(tmp_path / "layer.onnx")
    got = make_session(path).run(None, {"maps": maps[48:].astype(np.float32)})[0]
    assert got.shape == (16, 102)
    np.testing.assert_allclose(got[:, :101] @ FINETUNED_AGE_CLASSES,
                               expected[:, :101] @ FINETUNED_AGE_CLASSES, atol=0.3)
    np.testing.assert_allclose(got[:, -1], expected[:, -1], atol=0.02)
    with pytest.raises(ValueError, match="batch_size"):
        train_finetuned_layer(maps, age, female, np.arange(8), batch_size=16)


@pytest.mark.slow
def test_frozen_maps_are_cached_and_match_the_embedder(shared_data, tmp_path):
    from skagegender.embedding import ArcFaceEmbedder, sface_maps
    from skagegender.training import frozen_maps

    paths = sorted((shared_data / "FGNET" / "images").glob("*.JPG"))[:3]
    items = [str(p) for p in paths] + [(str(paths[0]), 7)]
    maps, found = frozen_maps("t", items, tmp_path, verbose=False)
    assert maps.shape == (4, 1024, 7, 7) and maps.dtype == np.float16 and found.all()
    aligned = ArcFaceEmbedder().align([str(p) for p in paths])
    direct = sface_maps(aligned.crops)
    np.testing.assert_allclose(maps[:3].astype(np.float32), direct, rtol=0.01, atol=0.01)
    assert not np.allclose(maps[3], maps[0], atol=0.05)  # the degraded copy differs
    again, _ = frozen_maps("t", items, tmp_path, verbose=False)
    np.testing.assert_array_equal(again, maps)
    (tmp_path / "t_maps.npy").write_bytes(b"not an array")  # damaged: recomputed
    fixed, _ = frozen_maps("t", items, tmp_path, verbose=False)
    np.testing.assert_array_equal(fixed, maps)


@pytest.mark.slow
def test_an_unreadable_degraded_copy_is_not_found_and_the_others_are_aligned(fgnet_pair, tmp_path):
    from skagegender.training._maps import aligned_chunk

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a JPEG")
    crops, found = aligned_chunk([(str(broken), 1), fgnet_pair[0], (fgnet_pair[1], 2)])
    assert found.tolist() == [False, True, True]
    assert crops.shape == (3, 112, 112, 3) and not crops[0].any() and crops[1:].any()


def test_cached_rows_are_computed_again_when_a_file_changes_or_the_cache_is_damaged(tmp_path):
    import os

    from skagegender.training import cached_rows

    files = [tmp_path / f"{i}.txt" for i in range(3)]
    for i, path in enumerate(files):
        path.write_text(str(i))
    calls = []

    def compute(chunk):  # a row of each file's number (and seed)
        calls.append(len(chunk))
        rows = np.array([[float(Path(item[0] if isinstance(item, tuple) else item).read_text())
                          + (item[1] if isinstance(item, tuple) else 0)] * 2 for item in chunk])
        return rows, np.ones(len(chunk), bool)

    items = [str(p) for p in files] + [(str(files[0]), 10)]
    cache = tmp_path / "cache"

    def rows():
        got, found = cached_rows("r", items, cache, compute, row_shape=(2,), dtype=np.float32,
                                 chunk=2, verbose=False)
        assert found.all() and got.dtype == np.float32
        return got[:, 0].tolist()

    assert rows() == [0, 1, 2, 10] and calls == [2, 2]
    assert rows() == [0, 1, 2, 10] and calls == [2, 2]  # read back, not computed
    files[1].write_text("7")  # same name, new content (and size)
    assert rows() == [0, 7, 2, 10] and calls == [2, 2, 2, 2]
    stat = files[2].stat()
    files[2].write_text("5")  # same size: the modification time tells
    os.utime(files[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert rows() == [0, 7, 5, 10] and len(calls) == 6
    (cache / "r.npy").write_bytes(b"not an array")  # damaged: computed again
    assert rows() == [0, 7, 5, 10] and len(calls) == 8
    np.save(cache / "r.npy", np.zeros((4, 3), np.float32))  # foreign shape: computed again
    assert rows() == [0, 7, 5, 10] and len(calls) == 10
    assert rows() == [0, 7, 5, 10] and len(calls) == 10


def _gate_rows(n_utk=120, n_fgnet=40, seed=0):
    """Held-out rows of the shipped feature layout where the two experts disagree by
    15 years: on FG-NET rows the dlib expert is right, on half the UTKFace rows the
    fine-tuned one (the gate cannot tell them apart: FG-NET's weight decides)."""
    from skagegender.embedding import feature_blocks
    from skagegender.training._default_recipe import EMBEDDER_PARAMS, expert_blocks

    rng = np.random.default_rng(seed)
    n = n_utk + n_fgnet
    age = rng.uniform(5, 70, n)
    fgnet = np.r_[np.zeros(n_utk, bool), np.ones(n_fgnet, bool)]
    width = max(block.stop for block in feature_blocks(EMBEDDER_PARAMS["layers"]).values())
    X = rng.uniform(0, 1, (n, width))
    (tuned_start, tuned_ages), (dlib_start, dlib_ages) = expert_blocks()
    tuned_off = np.where(fgnet, 15.0, 0.0)
    dlib_off = np.where(~fgnet & (np.arange(n) % 2 == 0), -15.0, 0.0)
    for start, ages, centre in ((tuned_start, tuned_ages, age + tuned_off),
                                (dlib_start, dlib_ages, age + dlib_off)):
        centre = centre + rng.normal(0, 2, n)
        spread = 4.0
        p = np.exp(-0.5 * ((np.asarray(ages)[None] - centre[:, None]) / spread) ** 2) + 1e-6
        X[:, start:start + len(ages)] = p / p.sum(1, keepdims=True)
    gender = np.where(fgnet, None, np.where(rng.random(n) < 0.5, "female", "male"))
    return X, age, gender.astype(object), fgnet


def test_calibrate_heads_gate_settings_change_the_fitted_gate():
    from skagegender.training._default_recipe import (
        GATE_LABEL_SIGMA,
        calibrate_heads,
        make_heads,
    )

    X, age, gender, fgnet = _gate_rows()
    gate = make_heads()[0]

    def fitted(**options):
        head, _ = calibrate_heads(gate, None, X, age, gender, fgnet, **options)
        return head.estimator_.estimator

    default = fitted()
    assert default.label_sigma == GATE_LABEL_SIGMA
    light, heavy = fitted(gate_fgnet_weight=1), fitted(gate_fgnet_weight=50)
    assert not np.allclose(light.coef_, default.coef_)

    def fgnet_mae(model):
        return np.abs(model.predict(X[fgnet]) - age[fgnet]).mean()

    # the more FG-NET weighs, the more the gate trusts the dlib expert where they disagree
    assert fgnet_mae(heavy) < fgnet_mae(light) - 0.5
    wide = fitted(gate_sigma=3.0)
    assert wide.label_sigma == 3.0 and not np.allclose(wide.coef_, default.coef_)
    assert gate.label_sigma == GATE_LABEL_SIGMA  # the unfitted head is left alone
