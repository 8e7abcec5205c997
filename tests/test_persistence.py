"""Model files: round trip with real estimators, and refusal of tampered or unsafe files."""

import hashlib
import json
import os
import warnings
import zipfile

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skagegender
from skagegender.model._payload import _is_own_class
from skagegender.model._persistence import (
    FORMAT_VERSION,
    BackboneMismatchError,
    ModelFileError,
    load_model_file,
    save_model_file,
)

BACKBONE = {
    "name": "sface_intermediate",
    "sha256": hashlib.sha256(b"weights").hexdigest(),
    "options": {"layers": ["conv_8_relu", "conv_14_relu", "fc1"], "mirror": True},
}


class CustomRegressor(RegressorMixin, BaseEstimator):
    """A class skops does not know: loading it must be refused unless trusted."""

    def fit(self, X, y):
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    age = 30 + 10 * X[:, 0] + rng.normal(size=120)
    gender = np.where(X[:, 1] > 0, "male", "female")
    age_head = make_pipeline(
        StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,), max_iter=30, random_state=0)
    )
    gender_head = CalibratedClassifierCV(LogisticRegression(), cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few Adam steps suffice here
        age_head.fit(X, age)
    return X, age_head, gender_head.fit(X, gender)


@pytest.fixture
def model_path(tmp_path, fitted):
    _, age_head, gender_head = fitted
    path = tmp_path / "model.skag"
    save_model_file(path, {"age": age_head, "gender": gender_head},
                    {"backbone": BACKBONE, "trained_on": ["utkface"]})
    return path


def _rewrite(path, **members):
    """Rewrite the zip at ``path`` with some members replaced (bytes)."""
    with zipfile.ZipFile(path) as archive:
        content = {name: archive.read(name) for name in archive.namelist()}
    content.update(members)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in content.items():
            archive.writestr(name, data)


def _meta(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("meta.json"))


def test_round_trip(model_path, fitted):
    X, age_head, gender_head = fitted
    estimators, meta = load_model_file(model_path, expected_backbone=BACKBONE)
    assert sorted(estimators) == ["age", "gender"]
    np.testing.assert_array_equal(estimators["age"].predict(X), age_head.predict(X))
    np.testing.assert_array_equal(estimators["gender"].predict_proba(X),
                                  gender_head.predict_proba(X))
    assert meta["backbone"] == BACKBONE and meta["trained_on"] == ["utkface"]
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["skagegender_version"] == skagegender.__version__
    assert meta["estimator_names"] == ["age", "gender"]
    with zipfile.ZipFile(model_path) as archive:
        assert sorted(archive.namelist()) == ["estimators.skops", "meta.json"]
        payload = archive.read("estimators.skops")
    assert meta["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    # atomic write leaves no temporary file, and the mode follows the umask
    assert os.listdir(model_path.parent) == ["model.skag"]
    umask = os.umask(0)
    os.umask(umask)
    assert model_path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_round_trip_lightgbm(tmp_path):
    lightgbm = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(80, 4)), rng.normal(size=80)
    heads = {
        "age": lightgbm.LGBMRegressor(n_estimators=5, verbose=-1).fit(X, y),
        "gender": lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y > 0),
    }
    save_model_file(tmp_path / "m.skag", heads, {"backbone": BACKBONE})
    loaded, _ = load_model_file(tmp_path / "m.skag")
    np.testing.assert_allclose(loaded["age"].predict(X), heads["age"].predict(X))
    np.testing.assert_array_equal(loaded["gender"].predict(X), heads["gender"].predict(X))


def test_changed_payload_is_refused(model_path, fitted):
    X, _, _ = fitted
    import skops.io

    other = Ridge().fit(X, X[:, 0])
    _rewrite(model_path, **{"estimators.skops": skops.io.dumps({"age": other, "gender": other})})
    with pytest.raises(ModelFileError, match="estimators.skops does not match the checksum"):
        load_model_file(model_path)


def test_flipped_byte_is_refused(model_path):
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="damaged|checksum"):
        load_model_file(model_path)


def test_edited_meta_is_refused(model_path):
    meta = _meta(model_path)
    meta["backbone"]["sha256"] = hashlib.sha256(b"other weights").hexdigest()
    _rewrite(model_path, **{"meta.json": json.dumps(meta).encode()})
    with pytest.raises(ModelFileError, match="meta.json does not match its checksum"):
        load_model_file(model_path)


def test_untrusted_type_is_refused_even_with_valid_checksums(tmp_path, fitted):
    X, age_head, _ = fitted
    path = tmp_path / "m.skag"
    save_model_file(path, {"age": CustomRegressor().fit(X, X[:, 0]), "scaler": age_head},
                    {"backbone": BACKBONE})
    name = f"{CustomRegressor.__module__}.CustomRegressor"
    with pytest.raises(ModelFileError, match=r"not trusted: \[.*CustomRegressor'\]"):
        load_model_file(path)
    estimators, _ = load_model_file(path, trusted=[name])
    assert estimators["age"].predict(X[:3]).tolist() == [np.mean(X[:, 0])] * 3


def test_own_classes_are_trusted_only_if_defined_there():
    assert _is_own_class("skagegender.heads._age.AgeRegressor")
    assert not _is_own_class("skagegender.heads._factory.make_age_head")  # a function
    assert not _is_own_class("skagegender.heads._factory.Pipeline")  # imported from sklearn
    assert not _is_own_class("skagegender.heads._nope.Head")
    assert not _is_own_class("skagegender.heads.Head")
    # backbones load networks from disk or the network: not trusted in model files
    assert not _is_own_class("skagegender.embedding._backbones.InsightFaceBackbone")
    assert not _is_own_class("skagegender.model._persistence.ModelFileError")


@pytest.mark.parametrize(
    "expected, key",
    [
        ({"name": "arcface_r50"}, "name"),
        ({"sha256": hashlib.sha256(b"retrained").hexdigest()}, "sha256"),
        ({"name": BACKBONE["name"], "options": {"layers": ["fc1"], "mirror": True}}, "options"),
    ],
)
def test_backbone_mismatch(model_path, expected, key):
    with pytest.raises(BackboneMismatchError, match=f"fitted on backbone {key}"):
        load_model_file(model_path, expected_backbone=expected)


def test_backbone_spec_is_written_and_checked(tmp_path, model_path):
    from skagegender.embedding import BackboneSpec

    spec = BackboneSpec.from_dict(BACKBONE)
    load_model_file(model_path, expected_backbone=spec)  # the same backbone
    other = BackboneSpec(spec.name, spec.weights_sha256, {**spec.options, "mirror": False})
    with pytest.raises(BackboneMismatchError, match="fitted on backbone options"):
        load_model_file(model_path, expected_backbone=other)
    # save_model_file takes a spec too, and writes its dict form (no licence)
    path = save_model_file(tmp_path / "spec.skag", {"age": Ridge().fit([[0.0], [1.0]], [1, 2])},
                           {"backbone": BackboneSpec(spec.name, spec.weights_sha256,
                                                     spec.options, licence="MIT")})
    assert load_model_file(path)[1]["backbone"] == BACKBONE
    with pytest.raises(ValueError, match="exactly the keys"):
        save_model_file(tmp_path / "bad.skag", {"age": Ridge()},
                        {"backbone": {"name": "sface", "sha256": "0" * 64}})


def test_expected_backbone_with_unknown_key(model_path):
    with pytest.raises(ValueError, match="unknown keys"):
        load_model_file(model_path, expected_backbone={"weights": "x"})


def test_newer_format_is_refused(model_path):
    meta = _meta(model_path)
    meta["format_version"] = FORMAT_VERSION + 1
    del meta["meta_sha256"]
    canonical = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    meta["meta_sha256"] = hashlib.sha256(canonical).hexdigest()
    _rewrite(model_path, **{"meta.json": json.dumps(meta).encode()})
    with pytest.raises(ModelFileError, match="Upgrade skagegender"):
        load_model_file(model_path)


def test_not_a_model_file(tmp_path, model_path):
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(ModelFileError, match="not a skagegender model file"):
        load_model_file(tmp_path / "plain.txt")
    _rewrite(model_path, **{"extra.py": b"print('hi')"})
    with pytest.raises(ModelFileError, match="expected exactly the members"):
        load_model_file(model_path)
    with pytest.raises(FileNotFoundError):
        load_model_file(tmp_path / "missing.skag")


@pytest.mark.parametrize(
    "meta, message",
    [
        ({}, "backbone"),
        ({"backbone": {**BACKBONE, "sha256": "abc"}}, "64 lowercase hex"),
        ({"backbone": {"name": "sface", "sha256": "0" * 64}}, "exactly the keys"),
        ({"backbone": BACKBONE, "score": float("nan")}, "JSON-serialisable"),
        ({"backbone": BACKBONE, "n": np.int64(3)}, "JSON-serialisable"),
    ],
)
def test_save_validates_meta(tmp_path, fitted, meta, message):
    with pytest.raises(ValueError, match=message):
        save_model_file(tmp_path / "m.skag", {"age": fitted[1]}, meta)
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_old_file(model_path, fitted, monkeypatch):
    before = model_path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_model_file(model_path, {"age": fitted[1]}, {"backbone": BACKBONE})
    assert model_path.read_bytes() == before
    assert os.listdir(model_path.parent) == ["model.skag"]


def test_save_refuses_what_load_would_refuse(tmp_path):
    """Tree ensembles are written by skops with a node kind that calls code (TreeNode)."""
    from sklearn.ensemble import RandomForestRegressor

    X = np.random.default_rng(0).random((40, 3))
    forest = RandomForestRegressor(n_estimators=2, random_state=0).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="cannot be written.*'TreeNode'"):
        save_model_file(tmp_path / "m.skag", {"age": forest}, {"backbone": BACKBONE})
    assert os.listdir(tmp_path) == []
