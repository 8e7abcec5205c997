"""HeadSearchCV: the sklearn contract, search behaviour, resumable storage, the tune command."""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FixedTrial, TrialState
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.datasets import make_classification, make_regression
from sklearn.dummy import DummyRegressor
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold, KFold, cross_val_score
from sklearn.neighbors import KNeighborsRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

import skagegender.heads as skagegender_heads
from skagegender.cli.tune import add_tune_arguments
from skagegender.cli.tune import run as run_tune
from skagegender.model_selection import HeadSearchCV, default_head_space

# Two shared cores: BLAS threads fighting over them make a 67x10 logistic fit 30x slower.
pytestmark = pytest.mark.usefixtures("_one_blas_thread")


@pytest.fixture(scope="module")
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


ALPHA = {"alpha": FloatDistribution(1e-3, 1e3, log=True)}

EXPECTED_FAILED_CHECKS = {
    "check_dtype_object": (
        "a fit that fails on every split is reported the GridSearchCV way: a ValueError "
        "that lists the split errors (the TypeError 'float() argument must be a string or "
        "a real number' is in its message), not the TypeError itself"
    ),
}


@parametrize_with_checks(
    [
        HeadSearchCV(Ridge(), ALPHA, n_trials=2, cv=2, random_state=0),
        HeadSearchCV(
            LogisticRegression(),
            {"C": FloatDistribution(1e-2, 1.0, log=True)},
            n_trials=2,
            cv=2,
            random_state=0,
        ),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(n_samples=90, n_features=6, n_informative=4, noise=5.0, random_state=0)
    return X, y


def _family_space(trial):
    """Conditional space: a model family, then that family's own hyperparameters."""
    family = trial.suggest_categorical("model", ["ridge", "knn", "mlp"])
    if family == "ridge":
        return {"model": Ridge(alpha=trial.suggest_float("ridge__alpha", 1e-3, 1e2, log=True))}
    if family == "knn":
        return {"model": KNeighborsRegressor(n_neighbors=trial.suggest_int("knn__k", 1, 20))}
    return {
        "model": MLPRegressor(
            hidden_layer_sizes=(trial.suggest_categorical("mlp__width", [4, 8]),),
            alpha=trial.suggest_float("mlp__alpha", 1e-5, 1e-1, log=True),
            max_iter=50,
            random_state=0,
        )
    }


def test_cv_results_match_cross_val_score(regression):
    X, y = regression
    search = HeadSearchCV(Ridge(), ALPHA, cv=3, n_trials=6, random_state=0).fit(X, y)
    res = search.cv_results_
    assert search.n_trials_ == 6 and len(res["params"]) == 6
    assert list(res["state"]) == ["COMPLETE"] * 6
    assert list(res["number"]) == list(range(6))
    for key in ["mean_fit_time", "std_score_time", "split2_test_score", "param_alpha"]:
        assert len(res[key]) == 6
    assert "split3_test_score" not in res and "mean_train_score" not in res
    # Every recorded score is the plain cross-validated score of that trial's params.
    for i in [0, search.best_index_]:
        expected = cross_val_score(Ridge(**res["params"][i]), X, y, cv=3)
        np.testing.assert_allclose([res[f"split{k}_test_score"][i] for k in range(3)], expected)
        np.testing.assert_allclose(res["mean_test_score"][i], expected.mean())
    assert res["rank_test_score"][search.best_index_] == 1
    assert search.best_score_ == pytest.approx(np.max(res["mean_test_score"]))
    assert search.best_params_ == {"alpha": search.study_.best_trial.params["alpha"]}
    assert search.best_estimator_.alpha == search.best_params_["alpha"]
    assert search.n_features_in_ == 6 and search.n_splits_ == 3
    assert search.score(X, y) == pytest.approx(search.best_estimator_.score(X, y))


def test_seeded_search_is_reproducible(regression):
    X, y = regression
    space = {"alpha": FloatDistribution(1e-3, 1e3, log=True), "fit_intercept":
             CategoricalDistribution([True, False])}
    # More trials than TPE's 10 random start-up trials, so the model-based part is covered.
    first = HeadSearchCV(Ridge(), space, cv=2, n_trials=13, random_state=7).fit(X, y)
    second = HeadSearchCV(Ridge(), space, cv=2, n_trials=13, random_state=7).fit(X, y)
    other = HeadSearchCV(Ridge(), space, cv=2, n_trials=13, random_state=8).fit(X, y)
    assert first.best_params_ == second.best_params_
    assert first.cv_results_["params"] == second.cv_results_["params"]
    assert first.cv_results_["params"] != other.cv_results_["params"]
    # The same object fitted again also repeats itself (the sampler is copied per fit).
    assert first.fit(X, y).cv_results_["params"] == second.cv_results_["params"]


_FAMILIES = {"ridge": Ridge, "knn": KNeighborsRegressor, "mlp": MLPRegressor}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_conditional_space_over_families_in_a_pipeline(regression):
    X, y = regression
    pipe = Pipeline([("scale", StandardScaler()), ("model", Ridge())])
    search = HeadSearchCV(pipe, _family_space, cv=3, n_trials=12, random_state=0).fit(X, y)
    res = search.cv_results_
    families = {type(p["model"]).__name__ for p in res["params"]}
    assert families == {"Ridge", "KNeighborsRegressor", "MLPRegressor"}
    # Each trial's params only hold what its family suggested (the space is conditional).
    for params, trial in zip(res["params"], search.study_.trials):
        family = trial.params["model"]
        assert all(k == "model" or k.startswith(family) for k in trial.params)
        assert type(params["model"]) is _FAMILIES[family]
    best = search.best_estimator_.named_steps["model"]
    assert type(best) is type(search.best_params_["model"])
    assert best.get_params() == search.best_params_["model"].get_params()
    # A linear target: the linear family must win.
    assert isinstance(best, Ridge)


def test_pruner_stops_bad_trials_after_first_folds(regression):
    X, y = regression
    # Large alphas are bad; a MedianPruner stops a trial as soon as its running mean is
    # below the median of the earlier trials at the same fold (after 3 start-up trials).
    space = {"alpha": FloatDistribution(1e-3, 1e5, log=True)}
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    search = HeadSearchCV(Ridge(), space, cv=5, n_trials=16, pruner=pruner,
                          sampler=optuna.samplers.RandomSampler(seed=0)).fit(X, y)
    res = search.cv_results_
    states = np.asarray(res["state"])
    assert search.n_trials_ == 16
    pruned = states == "PRUNED"
    assert pruned.any() and not pruned.all()
    assert not pruned[:3].any()
    for i in np.flatnonzero(pruned):
        # Stopped at its first fold: below the median of the earlier complete trials.
        assert np.isfinite(res["split0_test_score"][i])
        earlier_complete = np.flatnonzero(~pruned[:i])
        assert res["split0_test_score"][i] < np.median(res["split0_test_score"][earlier_complete])
    # A pruned trial keeps the folds it ran, has NaN for the rest, no mean and the last rank.
    assert np.all(np.isnan(res["split4_test_score"][pruned]))
    assert np.all(np.isnan(res["mean_test_score"][pruned]))
    assert np.all(res["rank_test_score"][pruned] == (~pruned).sum() + 1)
    assert not pruned[search.best_index_]
    assert search.best_params_["alpha"] < np.median([p["alpha"] for p in res["params"]])


def test_groups_make_subject_disjoint_folds():
    rng = np.random.default_rng(0)
    # 30 subjects, 4 identical photos each, one copy of each in every block of 30 rows:
    # a 1-nearest-neighbour model is perfect when a subject is on both sides of a split,
    # and only guesses when it is not.
    X_subject, y_subject = rng.normal(size=(30, 5)), rng.uniform(10, 80, size=30)
    X, y = np.tile(X_subject, (4, 1)), np.tile(y_subject, 4)
    groups = np.tile(np.arange(30), 4)
    space = {"n_neighbors": IntDistribution(1, 1)}
    leaky = HeadSearchCV(KNeighborsRegressor(), space, cv=KFold(4), n_trials=1,
                         scoring="neg_mean_absolute_error").fit(X, y)
    disjoint = HeadSearchCV(KNeighborsRegressor(), space, cv=GroupKFold(3), n_trials=1,
                            scoring="neg_mean_absolute_error").fit(X, y, groups=groups)
    assert leaky.best_score_ == 0.0
    np.testing.assert_array_equal(disjoint.predict(X), y)  # refit on all: perfect again
    assert disjoint.best_score_ < -5.0


def test_scoring_string_and_callable(regression):
    X, y = regression
    mae = HeadSearchCV(Ridge(), ALPHA, cv=3, n_trials=2, random_state=0,
                       scoring="neg_mean_absolute_error").fit(X, y)
    alpha = mae.cv_results_["params"][0]["alpha"]
    expected = cross_val_score(Ridge(alpha=alpha), X, y, cv=3, scoring="neg_mean_absolute_error")
    assert mae.cv_results_["mean_test_score"][0] == pytest.approx(expected.mean())
    assert mae.best_score_ < 0

    # Our names resolve through skagegender.metrics.get_scorer.
    ages = np.clip(40 + y / 10, 1, 90)
    one_off = HeadSearchCV(Ridge(), ALPHA, cv=3, n_trials=2, random_state=0,
                           scoring="one_class_off").fit(X, ages)
    from skagegender.metrics import one_class_off_scorer

    assert one_off.scorer_ is one_class_off_scorer and 0 < one_off.best_score_ <= 1

    def constant(estimator, X, y):
        return 42.0

    search = HeadSearchCV(Ridge(), ALPHA, cv=3, n_trials=2, scoring=constant).fit(X, y)
    assert search.best_score_ == 42.0 and search.score(X, y) == 42.0


def test_classifier_delegation_and_refit_false():
    X, y = make_classification(n_samples=80, n_features=5, random_state=0)
    space = {"C": FloatDistribution(1e-2, 1e2, log=True)}
    search = HeadSearchCV(LogisticRegression(), space, cv=3, n_trials=3, random_state=0)
    search.fit(X, y)
    np.testing.assert_array_equal(search.classes_, [0, 1])
    np.testing.assert_allclose(search.predict_proba(X), search.best_estimator_.predict_proba(X))
    np.testing.assert_allclose(search.decision_function(X),
                               search.best_estimator_.decision_function(X))
    assert search.score(X, y) == search.best_estimator_.score(X, y)
    assert not hasattr(HeadSearchCV(Ridge(), ALPHA), "predict_proba")

    no_refit = HeadSearchCV(LogisticRegression(), space, cv=3, n_trials=3, refit=False).fit(X, y)
    assert "C" in no_refit.best_params_
    assert not hasattr(no_refit, "best_estimator_")
    for attr in ["predict", "predict_proba", "classes_", "n_features_in_"]:
        assert not hasattr(no_refit, attr)


class _FailsForLargeAlpha(RegressorMixin, BaseEstimator):
    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def fit(self, X, y):
        if self.alpha > 1:
            raise RuntimeError("alpha too large")
        self.model_ = Ridge(alpha=self.alpha).fit(X, y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        return self.model_.predict(X)


def test_error_score(regression):
    X, y = regression
    space = {"alpha": FloatDistribution(0.0, 2.0)}
    search = HeadSearchCV(_FailsForLargeAlpha(), space, cv=2, n_trials=8, random_state=0)
    with pytest.warns(FitFailedWarning, match="fits failed out of a total of 16"):
        search.fit(X, y)
    failed = search.study_.get_trials(states=(TrialState.FAIL,))
    assert failed and all(t.params["alpha"] > 1 for t in failed)
    assert "alpha too large" in failed[0].user_attrs["fit_errors"][0]
    assert search.n_trials_ == 8 - len(failed)  # failed trials are not in cv_results_
    assert all(p["alpha"] <= 1 for p in search.cv_results_["params"])

    numeric = HeadSearchCV(_FailsForLargeAlpha(), space, cv=2, n_trials=8, random_state=0,
                           error_score=-1e6)
    with pytest.warns(FitFailedWarning, match="alpha too large"):
        numeric.fit(X, y)
    assert numeric.n_trials_ == 8 and -1e6 in numeric.cv_results_["mean_test_score"]

    with pytest.raises(RuntimeError, match="alpha too large"):
        HeadSearchCV(_FailsForLargeAlpha(), {"alpha": FloatDistribution(5, 6)}, cv=2,
                     n_trials=2, error_score="raise").fit(X, y)
    with pytest.raises(ValueError, match="(?s)No trial of 2 completed.*alpha too large"):
        HeadSearchCV(_FailsForLargeAlpha(), {"alpha": FloatDistribution(5, 6)}, cv=2,
                     n_trials=2).fit(X, y)


def test_parallel_folds_give_the_same_search(regression):
    X, y = regression
    from joblib import parallel_config

    serial = HeadSearchCV(Ridge(), ALPHA, cv=5, n_trials=4, random_state=0).fit(X, y)
    with parallel_config(backend="threading"):
        parallel = HeadSearchCV(Ridge(), ALPHA, cv=5, n_trials=4, random_state=0, n_jobs=2)
        parallel.fit(X, y)
    assert parallel.cv_results_["params"] == serial.cv_results_["params"]
    for k in range(5):
        np.testing.assert_allclose(parallel.cv_results_[f"split{k}_test_score"],
                                   serial.cv_results_[f"split{k}_test_score"])
    # Intermediate values are reported per fold even when folds run in batches.
    assert sorted(parallel.study_.trials[0].intermediate_values) == [0, 1, 2, 3, 4]


def test_invalid_search_spaces(regression):
    X, y = regression
    with pytest.raises(TypeError, match="optuna distribution"):
        HeadSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, n_trials=1).fit(X, y)
    with pytest.raises(TypeError, match="must return a dict"):
        HeadSearchCV(Ridge(), lambda trial: None, n_trials=1).fit(X, y)
    with pytest.raises(ValueError, match="both be None"):
        HeadSearchCV(Ridge(), ALPHA, n_trials=None).fit(X, y)


@pytest.mark.slow
def test_storage_resume_counts_finished_trials(regression, tmp_path):
    X, y = regression
    url = f"sqlite:///{tmp_path / 'study.db'}"
    kwargs = {"cv": 3, "storage": url, "study_name": "ridge", "random_state": 0}
    first = HeadSearchCV(Ridge(), ALPHA, n_trials=3, **kwargs).fit(X, y)
    resumed = HeadSearchCV(Ridge(), ALPHA, n_trials=5, **kwargs).fit(X, y)
    assert resumed.n_trials_ == 5 and len(resumed.study_.trials) == 5  # 2 new trials only
    assert resumed.cv_results_["params"][:3] == first.cv_results_["params"]
    np.testing.assert_allclose(resumed.cv_results_["mean_test_score"][:3],
                               first.cv_results_["mean_test_score"])
    # Fitting again with a smaller or equal total runs nothing and still refits the best.
    again = HeadSearchCV(Ridge(), ALPHA, n_trials=4, **kwargs).fit(X, y)
    assert len(again.study_.trials) == 5 and again.best_params_ == resumed.best_params_
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        HeadSearchCV(Ridge(), ALPHA, n_trials=1, load_if_exists=False, **kwargs).fit(X, y)
    # A fitted search with a database study pickles (the connection is rebuilt on load).
    assert pickle.loads(pickle.dumps(resumed)).best_params_ == resumed.best_params_


_KILLABLE_SEARCH = '''
import pathlib, sys, time
import numpy as np
from optuna.distributions import FloatDistribution
from optuna.storages import RDBStorage
from sklearn.datasets import make_regression
from sklearn.linear_model import Ridge
from skagegender.model_selection import HeadSearchCV


class BlockingRidge(Ridge):
    """Ridge that, in the killed process, stops inside the fit after ``block_after`` fits.

    The fits of a trial run one after another (n_jobs=1, 3 splits), so blocking in fit
    number 3 * k + 1 leaves exactly k finished trials and the next one RUNNING: the kill
    always lands inside a trial.
    """

    block_after = None  # set by the killed process only
    ready = None  # the file written once it blocks
    n_fits = 0

    def fit(self, X, y):
        cls = type(self)
        cls.n_fits += 1
        if cls.block_after is not None and cls.n_fits > cls.block_after:
            pathlib.Path(cls.ready).write_text("blocked")
            time.sleep(3600)  # until killed
        return super().fit(X, y)


def make_search(url, n_trials):
    # Short heartbeat so that the test sees the killed process's trial go stale fast.
    storage = RDBStorage(url, heartbeat_interval=1, grace_period=1)
    return HeadSearchCV(BlockingRidge(), {"alpha": FloatDistribution(1e-3, 1e3, log=True)},
                        cv=3, n_trials=n_trials, storage=storage, study_name="killed",
                        random_state=0)


X, y = make_regression(n_samples=60, n_features=4, noise=1.0, random_state=0)

if __name__ == "__main__":
    BlockingRidge.block_after, BlockingRidge.ready = 3 * 3, sys.argv[2]
    make_search(sys.argv[1], 1000).fit(X, y)
'''


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_killed_search_resumes_without_losing_trials(tmp_path):
    script = tmp_path / "killable_search.py"
    script.write_text(textwrap.dedent(_KILLABLE_SEARCH))
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    ready = tmp_path / "blocked"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), url, str(ready)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # It blocks inside its 4th trial; the limit only bounds a broken run's wait.
        limit = time.monotonic() + 300
        while not ready.exists() and proc.poll() is None and time.monotonic() < limit:
            time.sleep(0.1)
        assert ready.exists(), proc.stderr.read().decode() if proc.poll() is not None else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()

    study = optuna.load_study(study_name="killed", storage=url)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    before = {t.number: t.value for t in study.get_trials(states=done)}
    zombies = [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]
    assert list(before) == [0, 1, 2] and zombies == [3]  # killed inside its 4th trial
    # its heartbeat (every 1 s until the kill) goes stale after the 1 s grace period, counted
    # in whole seconds by sqlite: a sleep of 2.2 s always gets there
    time.sleep(2.2)

    import importlib.util

    spec = importlib.util.spec_from_file_location("killable_search", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    n_total = len(before) + 2
    search = module.make_search(url, n_total).fit(module.X, module.y)

    trials = search.study_.trials
    assert sum(t.state in done for t in trials) == n_total == search.n_trials_
    assert [trials[n].value for n in before] == list(before.values())  # nothing lost
    assert all(trials[n].state == TrialState.FAIL for n in zombies)
    assert not any(t.state == TrialState.RUNNING for t in trials)
    assert list(search.cv_results_["number"]) == sorted(
        t.number for t in trials if t.state in done
    )


def test_default_head_space_replays_each_family():
    space = default_head_space("age", prefix="age__", random_state=3)
    assert space.families[0] == "mlp" and space.families[-1] == "ordinal"
    mlp = space(FixedTrial({"age__head": "mlp", "age__mlp__width": 128, "age__mlp__depth": 2,
                            "age__mlp__alpha": 1e-4, "age__mlp__learning_rate_init": 1e-3}))
    assert list(mlp) == ["age__head"]
    model = mlp["age__head"].named_steps["model"]
    assert (model.hidden_layer_sizes, model.alpha, model.learning_rate_init) == (
        (128, 128), 1e-4, 1e-3)
    assert model.random_state == 3
    ordinal = space(FixedTrial({"age__head": "ordinal", "age__ordinal__alpha": 3.0}))
    assert type(ordinal["age__head"][-1]).__name__ == "OrdinalLogisticRegression"
    assert ordinal["age__head"][-1].alpha == 3.0
    gender = default_head_space("gender")(FixedTrial({"head": "ordinal", "ordinal__C": 0.5}))
    assert isinstance(gender["head"][-1], LogisticRegression) and gender["head"][-1].C == 0.5
    with pytest.raises(ValueError, match="not available"):
        default_head_space("gender", families=["svm"])
    with pytest.raises(ValueError, match="task"):
        default_head_space("race")
    assert pickle.loads(pickle.dumps(space)).families == space.families


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:Got `batch_size`:UserWarning")
def test_search_across_head_families_of_an_age_regressor():
    heads = skagegender_heads
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    age = np.clip(40 + 12 * X[:, 0] + rng.normal(0, 2, 120), 1, 90)
    pipe = Pipeline([("scale", StandardScaler()), ("age", heads.AgeRegressor())])
    # lightgbm is left out only to keep this test fast on two shared cores.
    space = default_head_space("age", prefix="age__", families=["mlp", "ordinal"],
                               random_state=0)
    # scoring=None for a pipeline ending in an AgeRegressor: one-class-off accuracy.
    search = HeadSearchCV(pipe, space, cv=3, n_trials=6, random_state=0)
    search.fit(X, age)
    from skagegender.metrics import one_class_off_scorer

    assert search.scorer_ is one_class_off_scorer
    tried = {t.params["age__head"] for t in search.study_.trials}
    assert tried == {"mlp", "ordinal"}
    best = search.best_estimator_.named_steps["age"]
    family = search.study_.best_trial.params["age__head"]
    model = best.head_.named_steps["model"]
    assert type(model) is type(search.best_params_["age__head"].named_steps["model"])
    assert (family == "ordinal") == (type(model).__name__ == "OrdinalLogisticRegression")
    # The recorded CV score is that of the best parameters, and it beats a constant guess.
    expected = cross_val_score(clone(pipe).set_params(**search.best_params_), X, age, cv=3,
                               scoring=one_class_off_scorer)
    assert search.best_score_ == pytest.approx(expected.mean())
    constant = heads.AgeRegressor(DummyRegressor(strategy="median"))
    assert search.best_score_ > cross_val_score(constant, X, age, cv=3,
                                                scoring=one_class_off_scorer).mean()
    assert search.predict(X[:5]).shape == (5,)


def test_default_head_space_drops_lightgbm_when_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "lightgbm" else real(name, *a))
    assert default_head_space("age").families == ("mlp", "ordinal")
    assert default_head_space("gender").families == ("mlp", "ordinal")


def _write_features(path, n=90, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    age = np.clip(35 + 8 * X[:, 0] + rng.normal(scale=2, size=n), 1, 90)
    gender = np.where(X[:, 1] + 0.3 * rng.normal(size=n) > 0, "male", "female")
    X[0] = np.nan  # an image without a face
    np.savez(path, X=X, age=age, gender=gender, groups=np.arange(n) // 3)


def _tune_args(argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_tune_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.slow
def test_run_tune_from_features_file(tmp_path, capsys, monkeypatch):
    features = tmp_path / "features.npz"
    _write_features(features)
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    # A small MLP-only space keeps the test fast; the command's space is the default one.
    monkeypatch.setattr(
        "skagegender.cli.tune._make_search_space",
        lambda target: _tiny_space,
    )
    monkeypatch.setattr(
        "skagegender.cli.tune._make_estimator", lambda target: _tiny_estimator()
    )
    args = _tune_args(["--features", str(features), "--target", "age", "--n-trials", "3",
                       "--storage", storage, "--cv", "3", "--json"])
    assert run_tune(args) == 0
    out = json.loads(capsys.readouterr().out)  # nothing but JSON on stdout
    assert out["n_trials"] == 3 and out["study_name"] == "features-age"
    assert out["best_score"] == pytest.approx(
        optuna.load_study(study_name="features-age", storage=storage).best_value
    )
    assert set(out["best_params"]) == {"alpha"}
    assert out["best_trial_params"] == out["best_params"]
    assert out["n_samples"] == 89  # the row without a face is dropped

    # Rerunning with a larger total resumes the stored study; plain text output.
    args = _tune_args(["--features", str(features), "--target", "age", "--n-trials", "4",
                       "--storage", storage, "--cv", "3"])
    assert run_tune(args) == 0
    text = capsys.readouterr().out
    assert "best score" in text and "alpha" in text
    assert len(optuna.load_study(study_name="features-age", storage=storage).trials) == 4


def test_run_tune_gender_with_the_real_head(tmp_path, capsys, monkeypatch):
    features = tmp_path / "faces.npz"
    _write_features(features)
    # The ordinal family (a logistic regression for two genders) keeps the test fast.
    monkeypatch.setattr(
        "skagegender.cli.tune._make_search_space",
        lambda target: default_head_space(target, families=["ordinal"]),
    )
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    args = _tune_args(["--features", str(features), "--target", "gender", "--n-trials", "2",
                       "--storage", storage, "--cv", "3", "--json", "--study-name", "g"])
    assert run_tune(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["study_name"] == "g" and out["n_trials"] == 2
    assert out["best_trial_params"]["head"] == "ordinal"
    assert "LogisticRegression" in out["best_params"]["head"]
    assert 0.7 < out["best_score"] <= 1  # accuracy; gender follows feature 1


def test_run_tune_embeds_the_dataset_and_keeps_subjects_apart(tmp_path, capsys, monkeypatch):
    from sklearn.utils import Bunch

    import skagegender.datasets

    rng = np.random.default_rng(0)
    subject = np.repeat([f"p{i}" for i in range(20)], 3).astype(object)
    X = rng.normal(size=(60, 4))
    X[5] = np.nan  # no face found
    age = rng.uniform(10, 70, size=60)
    age[7] = np.nan  # unknown age
    calls = []

    def fake_embed_dataset(name, root, *, cache=None, limit=None):
        calls.append((name, root, cache, limit))
        return X, Bunch(name=name, age=age, gender=np.full(60, None), subject=subject,
                        fold=None)

    monkeypatch.setattr(skagegender.datasets, "embed_dataset", fake_embed_dataset)
    monkeypatch.setattr("skagegender.cli.tune._make_search_space",
                        lambda target: _tiny_space)
    monkeypatch.setattr("skagegender.cli.tune._make_estimator",
                        lambda target: _tiny_estimator())
    seen_groups = []
    original_fit = HeadSearchCV.fit

    def spy_fit(self, X, y=None, groups=None, **kw):
        train, test = next(self.cv.split(X, y, groups))
        seen_groups.append((set(groups[train]), set(groups[test])))
        return original_fit(self, X, y, groups=groups, **kw)

    monkeypatch.setattr(HeadSearchCV, "fit", spy_fit)
    args = _tune_args(["--dataset", "morph2", "--root", str(tmp_path), "--target", "age",
                       "--n-trials", "1", "--storage", f"sqlite:///{tmp_path / 't.db'}",
                       "--cache", str(tmp_path / "cache"), "--limit", "60", "--cv", "3",
                       "--json", "--scoring", "neg_mean_absolute_error"])
    assert run_tune(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert calls == [("morph2", str(tmp_path), str(tmp_path / "cache"), 60)]
    assert out["n_samples"] == 58 and out["study_name"] == "morph2-age"
    train_subjects, test_subjects = seen_groups[0]
    assert train_subjects and test_subjects and not train_subjects & test_subjects


def _tiny_space(trial):
    return {"alpha": trial.suggest_float("alpha", 1e-3, 1e2, log=True)}


def _tiny_estimator():
    return Ridge()


def test_run_tune_errors(tmp_path, capsys):
    features = tmp_path / "bad.npz"
    np.savez(features, X=np.zeros((5, 2)))
    args = _tune_args(["--features", str(features), "--target", "age", "--n-trials", "1",
                       "--storage", f"sqlite:///{tmp_path / 'x.db'}"])
    assert run_tune(args) == 2
    assert "age" in capsys.readouterr().err
    args = _tune_args(["--target", "age", "--n-trials", "1",
                       "--storage", f"sqlite:///{tmp_path / 'x.db'}"])
    assert run_tune(args) == 2
    assert "--dataset" in capsys.readouterr().err


def test_open_study_checks_the_storage_before_any_trial(tmp_path):
    from sklearn.linear_model import Lasso

    from skagegender.model_selection import StudyError

    url = f"sqlite:///{tmp_path / 'open.db'}"
    space = {"alpha": FloatDistribution(1e-3, 1e3, log=True)}
    study = HeadSearchCV(Ridge(), space, storage=url, study_name="s").open_study()
    assert study.study_name == "s" and study.trials == []
    assert HeadSearchCV(Ridge(), space, storage=url, study_name="s").open_study().trials == []
    # another search's study is refused, and so is a storage that cannot be opened
    with pytest.raises(StudyError, match="belongs to another search"):
        HeadSearchCV(Lasso(), space, storage=url, study_name="s").open_study()
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}"
    with pytest.raises(StudyError, match="cannot open the storage"):
        HeadSearchCV(Ridge(), space, storage=missing, study_name="s").open_study()
    with pytest.raises(ValueError, match="n_trials and timeout cannot both be None"):
        HeadSearchCV(Ridge(), space, n_trials=None).open_study()
