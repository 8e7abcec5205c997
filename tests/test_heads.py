"""AgeRegressor, GenderClassifier and the head factories on small generated data."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skagegender.heads import (
    AgeRegressor,
    GenderClassifier,
    make_age_head,
    make_gender_head,
)
from skagegender.metrics import expected_calibration_error


def _faces(n=400, n_features=12, seed=0):
    """Features that carry age (non-linearly) and gender, plus noise."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(1, 90, size=n)
    male = rng.integers(0, 2, size=n)
    signal = np.column_stack([np.log1p(age), age / 30, np.sqrt(age), male * 1.5])
    mix = rng.normal(size=(4, n_features))
    X = signal @ mix + 0.3 * rng.normal(size=(n, n_features))
    return X, age, np.where(male == 1, "male", "female")


FAST_MLP = {"hidden_layer_sizes": (32,), "max_iter": 200, "learning_rate_init": 0.01,
            "random_state": 0}


@pytest.mark.parametrize(
    "head",
    [
        Pipeline([("scale", StandardScaler()), ("model", MLPClassifier(**FAST_MLP))]),
        make_age_head("ordinal"),
    ],
    ids=["mlp-classifier", "ordinal"],
)
def test_distribution_heads(head):
    X, age, _ = _faces()
    est = AgeRegressor(head).fit(X[:300], age[:300])
    proba = est.predict_distribution(X[300:])
    assert proba.shape == (100, 101)
    np.testing.assert_array_equal(est.ages_, np.arange(101))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    pred = est.predict(X[300:])
    np.testing.assert_allclose(pred, proba @ np.arange(101))
    assert np.abs(pred - age[300:]).mean() < 10  # predicting the mean age gives ~22
    narrow = est.predict_interval(X[300:], coverage=0.5)
    wide = est.predict_interval(X[300:], coverage=0.95)
    assert wide.shape == (100, 2)
    assert (wide[:, 0] <= narrow[:, 0]).all() and (narrow[:, 1] <= wide[:, 1]).all()
    inside = (wide[:, 0] <= age[300:]) & (age[300:] <= wide[:, 1] + 1)
    assert inside.mean() > 0.75


def test_mlp_family_is_a_regressor():
    X, age, _ = _faces()
    est = AgeRegressor(make_age_head("mlp", **FAST_MLP)).fit(X[:300], age[:300])
    assert not hasattr(est, "predict_distribution")
    assert np.abs(est.predict(X[300:]) - age[300:]).mean() < 10


def test_training_ages_above_range_are_clipped_into_the_distribution():
    X, age, _ = _faces()
    est = AgeRegressor("ordinal", age_range=(0, 60)).fit(X, age)
    assert est.predict_distribution(X).shape[1] == 61
    assert est.predict(X).max() <= 60


def test_regressor_head_clipping_and_intervals():
    X, age, _ = _faces()
    far = X[:5] * 100  # extrapolates a linear model far outside any age
    clipped = AgeRegressor(Ridge(), age_range=(0, 100)).fit(X, age)
    raw = AgeRegressor(Ridge(), age_range=None).fit(X, age)
    assert (clipped.predict(far) >= 0).all() and (clipped.predict(far) <= 100).all()
    assert np.abs(raw.predict(far)).max() > 100
    assert not hasattr(clipped, "predict_distribution")
    assert not hasattr(clipped, "predict_interval")

    est = AgeRegressor(Ridge(), interval_cv=5, random_state=0).fit(X[:300], age[:300])
    assert est.residuals_.shape == (300,)
    interval = est.predict_interval(X[300:], coverage=0.8)
    inside = (interval[:, 0] <= age[300:]) & (age[300:] <= interval[:, 1])
    assert 0.65 < inside.mean() < 0.95


def test_lightgbm_head():
    pytest.importorskip("lightgbm")
    X, age, gender = _faces()
    est = AgeRegressor("lightgbm", random_state=0).fit(X[:300], age[:300])
    assert not hasattr(est, "predict_distribution")
    assert np.abs(est.predict(X[300:]) - age[300:]).mean() < 10
    clf = GenderClassifier("lightgbm", random_state=0).fit(X[:300], gender[:300])
    assert clf.score(X[300:], gender[300:]) > 0.85


def test_missing_lightgbm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # makes `import lightgbm` fail
    X, age, _ = _faces(n=50)
    with pytest.raises(ImportError, match=r"pip install skagegender\[lightgbm\]"):
        AgeRegressor("lightgbm").fit(X, age)
    with pytest.raises(ImportError, match=r"pip install skagegender\[lightgbm\]"):
        make_gender_head("lightgbm")


@pytest.mark.slow
def test_importing_heads_loads_no_lightgbm_or_optuna():
    code = (
        "import sys, skagegender.heads, skagegender.metrics; "
        "print('lightgbm' in sys.modules, 'optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="unknown head family"):
        make_age_head("svm")
    with pytest.raises(ValueError, match="head"):
        AgeRegressor("svm").fit(np.ones((4, 2)), np.arange(4.0))


def test_head_parameters_are_routed_for_search():
    X, age, _ = _faces(n=200)
    est = AgeRegressor(Ridge())
    assert "head__alpha" in est.get_params(deep=True)
    pipe = Pipeline([("scale", StandardScaler()), ("age", est)])
    search = GridSearchCV(
        pipe,
        {"age__head": [Ridge()], "age__head__alpha": [1e-3, 1e6]},
        scoring="neg_mean_absolute_error",
        cv=3,
    ).fit(X, age)
    assert search.best_params_["age__head__alpha"] == 1e-3
    fitted_head = search.best_estimator_.named_steps["age"].head_
    assert fitted_head.alpha == 1e-3
    assert fitted_head is not search.best_estimator_.named_steps["age"].head  # cloned

    tuned = AgeRegressor(make_age_head("mlp")).set_params(head__model__alpha=0.5)
    assert tuned.head.named_steps["model"].alpha == 0.5


def test_nan_rows_are_dropped_in_fit_and_give_nan_outputs():
    X, age, gender = _faces(n=200)
    X[[3, 10, 50]] = np.nan
    with pytest.warns(UserWarning, match="dropped 3 of 200 training rows"):
        est = AgeRegressor("ordinal").fit(X, age)
    pred = est.predict(X)
    assert np.isnan(pred[[3, 10, 50]]).all() and not np.isnan(np.delete(pred, [3, 10, 50])).any()
    assert np.isnan(est.predict_distribution(X)[3]).all()
    assert np.isnan(est.predict_interval(X)[10]).all()
    assert np.isnan(est.predict(X[[3]])).all()  # every row missing

    with pytest.warns(UserWarning, match="dropped 3 of 200"):
        clf = GenderClassifier("ordinal").fit(X, gender)
    labels = clf.predict(X)
    assert labels.dtype == object and labels[3] is np.nan  # noqa: PLW0177 - that very object
    assert set(np.delete(labels, [3, 10, 50])) <= {"female", "male"}
    assert np.isnan(clf.predict_proba(X)[50]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.predict(X[:3])  # no missing rows: plain labels
    assert clf.predict(X[:3]).dtype.kind == "U"

    with pytest.raises(ValueError, match="all 200 training rows contain NaN"):
        AgeRegressor("ordinal").fit(np.full_like(X, np.nan), age)


def test_inf_is_still_rejected():
    X, age, _ = _faces(n=50)
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="[Ii]nf"):
        AgeRegressor("ordinal").fit(X, age)


@pytest.mark.parametrize("estimator", [AgeRegressor("ordinal"), GenderClassifier("ordinal")])
def test_wrong_feature_width_names_both_widths(estimator):
    X, age, gender = _faces(n=60)
    estimator.fit(X, age if isinstance(estimator, AgeRegressor) else gender)
    with pytest.raises(ValueError, match=r"X has 5 features.*expecting 12 features"):
        estimator.predict(X[:, :5])


@pytest.mark.parametrize("labels", [("female", "male"), (0, 1)])
def test_gender_classes_as_given(labels):
    X, _, gender = _faces()
    y = np.where(gender == "male", labels[1], labels[0])
    clf = GenderClassifier(make_gender_head("mlp", **FAST_MLP)).fit(X[:300], y[:300])
    assert clf.classes_.tolist() == list(labels)
    assert set(clf.predict(X[300:])) <= set(labels)
    proba = clf.predict_proba(X[300:])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.score(X[300:], y[300:]) > 0.85
    np.testing.assert_array_equal(clf.predict(X[300:]), clf.classes_[proba.argmax(axis=1)])


def test_calibration_makes_overconfident_head_honest():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 2))
    y = (X[:, 0] + 1.5 * rng.normal(size=3000) > 0).astype(int)  # very noisy labels
    # an unregularised MLP on duplicated, scaled-up features overfits: overconfident
    X_over = np.hstack([X * 20] * 3)
    head = make_gender_head("mlp", hidden_layer_sizes=(64,), alpha=0.0, max_iter=100,
                            early_stopping=False, random_state=0)
    over = GenderClassifier(head).fit(X_over[:2000], y[:2000])
    calibrated = GenderClassifier(head, calibration="sigmoid").fit(X_over[:2000], y[:2000])
    ece_over = expected_calibration_error(y[2000:], over.predict_proba(X_over[2000:]))
    ece_cal = expected_calibration_error(y[2000:], calibrated.predict_proba(X_over[2000:]))
    assert ece_cal < ece_over
    assert ece_cal < 0.06


def test_gender_head_must_be_a_classifier():
    X, _, gender = _faces(n=50)
    with pytest.raises(ValueError, match="must be a classifier"):
        GenderClassifier(Ridge()).fit(X, gender)


def test_expected_age_regressor_reads_its_block():
    from sklearn.ensemble import VotingRegressor

    from skagegender.heads import ExpectedAgeRegressor

    rng = np.random.default_rng(0)
    other = rng.normal(size=(4, 3))
    probs = np.array([[1, 0, 0], [0, 0, 1], [0.5, 0.5, 0], [0.2, 0.3, 0.5]])
    X = np.c_[other, probs]
    reg = ExpectedAgeRegressor(start=3, class_ages=[10, 20, 60]).fit(X, np.zeros(4))
    np.testing.assert_allclose(reg.predict(X), [10, 60, 15, 38])
    X_nan = X.copy()
    X_nan[1, 4] = np.nan
    assert np.isnan(reg.predict(X_nan)[1]) and np.isfinite(reg.predict(X_nan)[[0, 2, 3]]).all()
    with pytest.raises(ValueError, match="no room for 3 probability columns from column 4"):
        ExpectedAgeRegressor(start=4, class_ages=[10, 20, 60]).fit(X, np.zeros(4))
    # Default ages 0, 1, ... over the columns from start.
    assert ExpectedAgeRegressor(start=3).fit(X, np.zeros(4)).predict(X)[1] == 2
    # Blended with a learned head, as in the shipped model.
    y = np.array([30.0, 40.0, 50.0, 60.0])
    from sklearn.dummy import DummyRegressor

    blend = VotingRegressor([("mean", DummyRegressor()),
                             ("probs", ExpectedAgeRegressor(start=3, class_ages=[10, 20, 60]))],
                            weights=[0.5, 0.5]).fit(X, y)
    np.testing.assert_allclose(blend.predict(X), (45 + np.array([10, 60, 15, 38])) / 2)


@pytest.mark.parametrize("n", [12, 60, 600])
def test_default_heads_fit_small_and_medium_data_without_warnings(n):
    # a fixed batch of 256 and a fixed 30-epoch budget made every small fit warn
    # ("batch_size ... larger than sample size", ConvergenceWarning); now early stopping
    # on a held-out split of at least 10 rows converges inside the budget at any size
    X, age, gender = _faces(n=n + 200, n_features=64, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        age_est = AgeRegressor(random_state=0).fit(X[:n], age[:n])
        gender_est = GenderClassifier(random_state=0).fit(X[:n], gender[:n])
    for est in (age_est, gender_est):
        mlp = est.head_.named_steps["model"]
        assert mlp.early_stopping and mlp.n_iter_ < mlp.max_iter
        assert np.ceil(mlp.validation_fraction * n) >= min(10, n / 2)
        assert mlp.batch_size <= n
    if n >= 60:  # and they learn: the mean age is off by ~21 years, a coin by 50 %
        assert np.abs(age_est.predict(X[n:]) - age[n:]).mean() < 8
        assert gender_est.score(X[n:], gender[n:]) > 0.9


@pytest.mark.parametrize("n", [8, 12, 20])
def test_search_space_mlps_fit_small_data(n):
    # a search space builds its heads before the data is known (5 % held out: one row
    # of 20, too few to split); fit sizes the early-stopping split to the rows it gets
    from optuna.trial import FixedTrial

    from skagegender.model_selection import default_head_space

    X, age, gender = _faces(n=n, seed=2)
    trial = FixedTrial({"head": "mlp", "mlp__width": 64, "mlp__depth": 1, "mlp__alpha": 1e-2,
                        "mlp__learning_rate_init": 1e-2})
    for task, estimator, y in (("age", AgeRegressor, age), ("gender", GenderClassifier, gender)):
        params = default_head_space(task, families=["mlp"], random_state=0)(trial)
        mlp = estimator(**params).fit(X, y).head_.named_steps["model"]
        # it did stop early, on a split of at least 2 rows (up to half of them); the
        # parameters stay as given
        assert len(mlp.validation_scores_) == mlp.n_iter_
        assert (mlp.early_stopping, mlp.validation_fraction) == (True, 0.05)


def test_mlp_without_a_splittable_class_trains_without_early_stopping():
    # 3 rows, one of them the only "male": no stratified split can hold both classes
    X, _, _ = _faces(n=3, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 3-row fit may not converge: not the point
        clf = GenderClassifier(random_state=0).fit(X, ["female", "female", "male"])
    mlp = clf.head_.named_steps["model"]
    assert mlp.validation_scores_ is None and mlp.early_stopping  # param kept as given
    assert clf.predict(X).shape == (3,)


def test_family_mlps_load_back_from_a_model_file(tmp_path):
    # the family MLPs are skagegender classes: the model file's loader trusts them
    import hashlib

    from skagegender.model._persistence import load_model_file, save_model_file

    X, age, gender = _faces(n=60, seed=4)
    heads = {"age": AgeRegressor(random_state=0).fit(X, age),
             "gender": GenderClassifier(random_state=0).fit(X, gender)}
    backbone = {"name": "sface", "sha256": hashlib.sha256(b"w").hexdigest(), "options": {}}
    save_model_file(tmp_path / "m.skag", heads, {"backbone": backbone})
    loaded, _ = load_model_file(tmp_path / "m.skag")
    np.testing.assert_array_equal(loaded["age"].predict(X), heads["age"].predict(X))
    np.testing.assert_array_equal(loaded["gender"].predict_proba(X),
                                  heads["gender"].predict_proba(X))


def test_mlp_factories_size_early_stopping_and_batches_to_the_data():
    for factory in (make_age_head, make_gender_head):
        unknown = factory("mlp").named_steps["model"]
        assert (unknown.batch_size, unknown.validation_fraction) == ("auto", 0.05)
        large = factory("mlp", n_samples=20_000).named_steps["model"]
        assert (large.batch_size, large.validation_fraction) == (200, 0.05)
        small = factory("mlp", n_samples=60).named_steps["model"]
        assert small.batch_size == 6 and small.validation_fraction * 60 == pytest.approx(10)
        assert factory("mlp", n_samples=10).named_steps["model"].validation_fraction == 0.5
        # explicit parameters still win over the sized defaults
        assert factory("mlp", n_samples=60, batch_size=32).named_steps["model"].batch_size == 32


def test_one_registry_of_head_families_feeds_factories_search_and_cli(monkeypatch):
    from optuna.trial import FixedTrial
    from sklearn.linear_model import LogisticRegression

    from skagegender.cli import build_parser
    from skagegender.datasets import DATASETS
    from skagegender.heads import HEAD_FAMILIES, HeadFamily, available_head_families
    from skagegender.model_selection import default_head_space

    def train_accepts(family):
        argv = ["train", "--dataset", next(iter(DATASETS)), "--root", "r", "--out", "m.skag"]
        try:
            args = build_parser().parse_args(argv + ["--age-head", family,
                                                     "--gender-head", family])
        except SystemExit:
            return False
        return args.age_head == args.gender_head == family

    assert all(train_accepts(family) for family in HEAD_FAMILIES)
    assert not train_accepts("ridge")
    assert default_head_space("age").families == available_head_families()
    # a family added to the registry alone is built, searched and offered by the CLI
    ridge = HeadFamily(
        "ridge",
        age_steps=lambda random_state, n_samples: [("model", Ridge())],
        gender_steps=lambda random_state, n_samples: [("model", LogisticRegression())],
        age_space=lambda trial, name: {"alpha": trial.suggest_float(f"{name}alpha", 0.1, 10)},
        gender_space=lambda trial, name: {"C": trial.suggest_float(f"{name}C", 0.1, 10)},
    )
    monkeypatch.setitem(HEAD_FAMILIES, "ridge", ridge)
    assert make_age_head("ridge", alpha=2.0).get_params()["model__alpha"] == 2.0
    assert isinstance(make_gender_head("ridge")[-1], LogisticRegression)
    assert train_accepts("ridge")
    space = default_head_space("age", prefix="age__")
    assert space.families[-1] == "ridge"
    head = space(FixedTrial({"age__head": "ridge", "age__ridge__alpha": 3.0}))["age__head"]
    assert isinstance(head[-1], Ridge) and head[-1].alpha == 3.0


def test_every_family_builds_both_heads_ending_in_a_model_step():
    from skagegender.heads import HEAD_FAMILIES, available_head_families

    for name in available_head_families():
        for task in ("age", "gender"):
            head = HEAD_FAMILIES[name].make(task, random_state=0, n_samples=100)
            assert head.steps[-1][0] == "model"
    assert set(available_head_families()) <= set(HEAD_FAMILIES)
