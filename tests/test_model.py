"""AgeGenderModel: fit on real faces, every face of a photo, safe files, backbone checks."""

import zipfile

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from skagegender.embedding import ArcFaceEmbedder
from skagegender.heads import AgeRegressor, GenderClassifier
from skagegender.model import AgeGenderModel, BackboneMismatchError, ModelFileError


def _labels(paths):
    names = [p.rsplit("/", 1)[-1].split("_") for p in paths]
    return (np.array([float(n[0]) for n in names]),
            np.array(["male" if n[1] == "0" else "female" for n in names], dtype=object))


@pytest.fixture(scope="module")
def fitted(utkface_paths):
    paths = utkface_paths[:120]
    age, gender = _labels(paths)
    model = AgeGenderModel(
        ArcFaceEmbedder(),
        age_head=AgeRegressor(head="ordinal"),
        gender_head=GenderClassifier(head="ordinal"),
    )
    return model.fit(paths, age, gender), paths, age, gender


@pytest.mark.slow
def test_fit_predict_and_every_face(fitted, group_photo):
    model, paths, age, _ = fitted
    pred = model.predict(paths[:20])
    assert pred.shape == (20,) and ((pred >= 0) & (pred <= 100)).all()
    # fitted on these faces: it must have learnt something about them
    assert np.abs(pred - age[:20]).mean() < np.abs(np.median(age) - age[:20]).mean()
    faces = model.predict_faces(group_photo)
    assert len(faces) == 6
    for face in faces:
        assert set(face) == {"box", "score", "landmarks", "age", "age_interval", "gender",
                             "gender_probability"}
        assert 0 <= face["age"] <= 100 and face["gender"] in ("female", "male")
        lo, hi = face["age_interval"]
        assert lo <= face["age"] <= hi
        assert 0.5 <= face["gender_probability"] <= 1
        assert len(face["landmarks"]) == 5


@pytest.mark.slow
def test_missing_faces_get_nan(fitted):
    model, paths, _, _ = fitted
    blank = np.full((200, 200, 3), 90, np.uint8)
    with pytest.warns(UserWarning, match="1 of 2"):
        pred = model.predict([blank, paths[0]])
    assert np.isnan(pred[0]) and np.isfinite(pred[1])
    details = model.predict_features(np.full((1, model.n_features_in_), np.nan, np.float32))
    assert not details["found"][0] and details["gender"][0] is None
    with pytest.raises(ValueError, match="2176 columns.*fitted on 128"):
        model.predict_features(np.zeros((1, 2176), np.float32))


@pytest.mark.slow
def test_save_load_round_trip_and_refusals(fitted, tmp_path, portrait):
    model, _, _, _ = fitted
    path = model.save(tmp_path / "m.skag")
    loaded = AgeGenderModel.load(path)
    assert loaded.predict_faces(portrait) == model.predict_faces(portrait)
    assert loaded.meta_["backbone"]["name"] == "sface"

    # a different backbone option means different features: refused, not garbage
    with pytest.raises(BackboneMismatchError, match="layers|options"):
        AgeGenderModel.load(path, embedder=ArcFaceEmbedder(layers="age-gender"))
    # options that do not change features are accepted
    faster = AgeGenderModel.load(path, embedder=ArcFaceEmbedder(batch_size=8))
    assert faster.embedder_.batch_size == 8

    # tampering with the payload is detected
    tampered = tmp_path / "tampered.skag"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith(".skops"):
                data = data[:-10] + bytes(10)
            dst.writestr(item, data)
    with pytest.raises(ModelFileError):
        AgeGenderModel.load(tampered)


@pytest.mark.slow
def test_heads_learn_age_and_gender_from_real_embeddings(utkface_paths):
    """Held out: heads on real SFace features beat a constant on unseen faces."""
    from sklearn.metrics import accuracy_score

    from skagegender.metrics import mean_absolute_error

    X = ArcFaceEmbedder(layers="age-gender").transform(utkface_paths)
    age, gender = _labels(utkface_paths)
    train, test = slice(0, 150), slice(150, 200)
    for family in ("mlp", "ordinal"):
        pred = AgeRegressor(head=family, random_state=0).fit(X[train], age[train]).predict(X[test])
        assert mean_absolute_error(age[test], pred) < 0.85 * np.abs(
            age[test] - np.median(age[train])).mean()
    sex = GenderClassifier(head="ordinal", random_state=0).fit(X[train], gender[train])
    majority = max(set(gender[train]), key=list(gender[train]).count)
    assert accuracy_score(gender[test], sex.predict(X[test])) > max(
        0.7, np.mean(gender[test] == majority))


@pytest.mark.slow
def test_embed_dataset_progress_and_cache(shared_data, tmp_path, capsys):
    from skagegender.datasets import embed_dataset

    root = shared_data / "FGNET"
    X, data = embed_dataset("fgnet", root, embedder=ArcFaceEmbedder(), cache=tmp_path,
                            limit=12, progress=True)
    err = capsys.readouterr().err
    assert "embed fgnet" in err and "12/12" in err
    assert X.shape == (12, 128) and len(data.paths) == 12
    again, same = embed_dataset("fgnet", root, embedder=ArcFaceEmbedder(), cache=tmp_path,
                                limit=12, progress=False)
    assert capsys.readouterr().err == ""
    assert list(same.paths) == list(data.paths)
    np.testing.assert_array_equal(again, X)


class _IntervalHead(AgeRegressor):
    """An age head whose intervals fail the way ``error`` says."""

    def __init__(self, head="ordinal", *, error=ValueError):
        super().__init__(head)
        self.error = error

    def predict_interval(self, X, coverage=0.8):
        raise self.error("interval failed")


def _features(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, np.clip(40 + 10 * X[:, 0], 1, 90), np.where(X[:, 1] > 0, "male", "female")


def test_model_validates_its_parameters_and_drops_unknown_genders():
    from sklearn.utils._param_validation import InvalidParameterError

    X, age, gender = _features()
    with pytest.raises(InvalidParameterError, match="age_head"):
        AgeGenderModel(ArcFaceEmbedder(), age_head="mlp").fit_features(X, age)
    with pytest.raises(InvalidParameterError, match="gender_head"):
        AgeGenderModel(ArcFaceEmbedder(), gender_head=Ridge()).fit_features(X, age, gender)
    gender = gender.astype(object)
    gender[:3] = [None, "", np.nan]  # three ways of "unknown"
    model = AgeGenderModel(ArcFaceEmbedder(), age_head=AgeRegressor("ordinal"),
                           gender_head=GenderClassifier("ordinal"))
    model.fit_features(X, age, gender)
    assert model.gender_head_.classes_.tolist() == ["female", "male"]


def test_an_interval_error_is_raised_not_hidden():
    X, age, _ = _features()
    broken = AgeGenderModel(ArcFaceEmbedder(), age_head=_IntervalHead(error=ValueError))
    broken.fit_features(X, age)
    with pytest.raises(ValueError, match="interval failed"):
        broken.predict_features(X[:2])
    # any error of a head that has intervals is a real one, whatever its type
    odd = AgeGenderModel(ArcFaceEmbedder(), age_head=_IntervalHead(error=NotImplementedError))
    with pytest.raises(NotImplementedError, match="interval failed"):
        odd.fit_features(X, age).predict_features(X[:2])
    # a head without intervals gives NaN intervals (None per face), not an error
    none = AgeGenderModel(ArcFaceEmbedder(), age_head=Ridge())
    assert not hasattr(none.fit_features(X, age).age_head_, "predict_interval")
    details = none.predict_features(X[:2])
    assert np.isnan(details["age_interval"]).all() and np.isfinite(details["age"]).all()
    with_interval = AgeGenderModel(ArcFaceEmbedder(), age_head=AgeRegressor("ordinal"))
    details = with_interval.fit_features(X, age).predict_features(X[:2])
    assert (details["age_interval"][:, 0] <= details["age_interval"][:, 1]).all()
