"""AgeGenderModel.from_fitted_heads: one public way to build a model from fitted heads."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge

from skagegender.embedding import ArcFaceEmbedder
from skagegender.model import AgeGenderModel


def _features(n=60, width=128, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, width))
    return X, np.clip(40 + 10 * X[:, 0], 1, 90), np.where(X[:, 1] > 0, "male", "female")


def _fitted():
    X, age, gender = _features()
    model = AgeGenderModel(ArcFaceEmbedder(), age_head=Ridge(),
                           gender_head=LogisticRegression())
    return model.fit_features(X, age, gender), X


def test_a_model_from_fitted_heads_is_the_fitted_model():
    fitted, X = _fitted()
    built = AgeGenderModel.from_fitted_heads(ArcFaceEmbedder(), fitted.age_head_,
                                             fitted.gender_head_,
                                             fallback_age=fitted.fallback_age_)
    assert sorted(vars(built)) == sorted(vars(fitted))
    assert built.n_features_in_ == 128 and built.fallback_age_ == fitted.fallback_age_
    assert built.backbone_ == fitted.backbone_
    assert not hasattr(built, "meta_")
    got, expected = built.predict_features(X[:10]), fitted.predict_features(X[:10])
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    no_gender = AgeGenderModel.from_fitted_heads(ArcFaceEmbedder(), fitted.age_head_,
                                                 fallback_age=30, meta={"note": "x"})
    assert no_gender.gender_head_ is None and no_gender.meta_ == {"note": "x"}
    assert no_gender.predict_features(X[:2])["gender"].tolist() == [None, None]
    assert isinstance(no_gender.fallback_age_, float)


def test_unfitted_heads_wrong_widths_and_bad_fallbacks_are_refused():
    fitted, _ = _fitted()
    embedder = ArcFaceEmbedder()
    with pytest.raises(NotFittedError):
        AgeGenderModel.from_fitted_heads(embedder, Ridge(), fallback_age=30)
    with pytest.raises(NotFittedError):
        AgeGenderModel.from_fitted_heads(embedder, fitted.age_head_, LogisticRegression(),
                                         fallback_age=30)
    with pytest.raises(ValueError, match="age_head must be a fitted regressor"):
        AgeGenderModel.from_fitted_heads(embedder, None, fallback_age=30)
    with pytest.raises(ValueError, match="gender_head must be a fitted classifier"):
        AgeGenderModel.from_fitted_heads(embedder, fitted.age_head_, fitted.age_head_,
                                         fallback_age=30)
    X, age, gender = _features(width=4)
    narrow = Ridge().fit(X, age)
    with pytest.raises(ValueError, match="the embedder 128, age_head 4"):
        AgeGenderModel.from_fitted_heads(embedder, narrow, fallback_age=30)
    with pytest.raises(ValueError, match="age_head 128, gender_head 4"):
        AgeGenderModel.from_fitted_heads(embedder, fitted.age_head_,
                                         LogisticRegression().fit(X, gender), fallback_age=30)
    for bad in (np.nan, np.inf, "30", True, None):
        with pytest.raises(ValueError, match="fallback_age must be a finite number"):
            AgeGenderModel.from_fitted_heads(embedder, fitted.age_head_, fallback_age=bad)


@pytest.mark.slow
def test_fit_recipe_builds_the_model_a_fit_leaves():
    """The default recipe's model has exactly the fitted attributes of a fitted model."""
    from skagegender.embedding import feature_blocks
    from skagegender.heads import AgeAwareCalibratedClassifier, ConformalAgeRegressor
    from skagegender.training import fit_recipe, make_recipe_embedder

    embedder = make_recipe_embedder("default")
    blocks = feature_blocks(embedder.layers)
    width = embedder.backbone_info().embedding_dim
    rng = np.random.default_rng(0)
    n = 200
    X = rng.normal(size=(n, width))
    for name in ("dlib_age", "sface_finetuned_age"):  # the experts' age distributions
        X[:, blocks[name]] = rng.dirichlet(np.ones(blocks[name].stop - blocks[name].start), n)
    age = rng.uniform(1, 80, n)
    gender = np.where(X[:, 0] > 0, "male", "female").astype(object)
    gender[:5] = None
    model = fit_recipe("default", X, age, gender, embedder=embedder, layer="shipped")
    reference = AgeGenderModel(embedder, age_head=Ridge(),
                               gender_head=LogisticRegression()).fit_features(X, age, gender)
    assert sorted(vars(model)) == sorted(vars(reference))
    assert isinstance(model.age_head_, ConformalAgeRegressor)
    assert isinstance(model.gender_head_, AgeAwareCalibratedClassifier)
    assert model.fallback_age_ == float(np.median(age)) and model.n_features_in_ == width
    assert model.backbone_ == embedder.backbone_info()
    assert np.isfinite(model.predict_features(X[:3])["age"]).all()


def _arrays(obj, path="model", seen=None):
    """Every array (and the name of every attribute) reachable from ``obj``, by path."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return {}
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return {path: obj.copy()}
    if isinstance(obj, (list, tuple)):
        found = {f"{path}.len": len(obj)}
        for i, item in enumerate(obj):
            found.update(_arrays(item, f"{path}[{i}]", seen))
        return found
    if not hasattr(obj, "__dict__") or isinstance(obj, type):
        return {}
    found = {f"{path}.attributes": sorted(vars(obj))}
    for name, value in vars(obj).items():
        found.update(_arrays(value, f"{path}.{name}", seen))
    return found


@pytest.mark.slow
def test_save_leaves_the_model_as_it_was(tmp_path):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, age, gender = _features(n=80)
    mlp = {"hidden_layer_sizes": (8,), "max_iter": 5, "early_stopping": True,
           "random_state": 0}
    model = AgeGenderModel(ArcFaceEmbedder(),
                           age_head=make_pipeline(StandardScaler(), MLPRegressor(**mlp)),
                           gender_head=MLPClassifier(**mlp))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit_features(X, age, gender)
    before, details = _arrays(model), model.predict_features(X)
    assert before["model.gender_head_.coefs_[0]"].dtype == np.float64
    model.save(tmp_path / "model.skag")
    after = _arrays(model)
    assert sorted(after) == sorted(before)
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            assert after[key].dtype == value.dtype, key
            np.testing.assert_array_equal(after[key], value, err_msg=key)
        else:
            assert after[key] == value, key
    again = model.predict_features(X)
    for key in details:
        np.testing.assert_array_equal(again[key], details[key])
    # the file holds the compact heads: float32 weights, no optimizer state
    loaded = AgeGenderModel.load(tmp_path / "model.skag")
    assert loaded.gender_head_.coefs_[0].dtype == np.float32
    assert loaded.gender_head_._optimizer is None
