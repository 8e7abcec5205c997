"""`skagegender tune` against forged study trials and feature files that grow when converted.

A study is shared storage: whoever can write to it can add a trial with a score of inf,
5.0 for an accuracy, parameters outside the search space or a categorical parameter with
other choices. Such trials are refused before any trial runs, with a clear message and
without writing to the study; the JSON output is strict (no NaN, no Infinity). The
``--max-features-mb`` cap counts ``X`` as the float64 array it becomes. Each test runs the
real ``skagegender.cli.main`` on small generated feature files.
"""

import json
import math

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import CategoricalDistribution, FloatDistribution
from threadpoolctl import threadpool_limits

from skagegender.cli import main
from skagegender.cli._tune_inputs import _from_features
from skagegender.cli.tune import add_tune_arguments


@pytest.fixture(autouse=True)
def _single_blas_thread():
    with threadpool_limits(limits=1):
        yield


def _columns(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    return {
        "X": X,
        "age": np.clip(35 + 8 * X[:, 0] + rng.normal(scale=2, size=n), 1, 90),
        "gender": np.where(X[:, 1] > 0, "male", "female"),
        "groups": np.arange(n) // 2,
    }


def _strict_json(text):
    """Parse ``text`` as strict JSON: NaN and Infinity are refused."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _tune(capsys, features, storage, *extra, n_trials=1):
    # Seed 4 starts with the ordinal family, the fastest head.
    code = main(["tune", "--features", str(features), "--target", "age", "--n-trials",
                 str(n_trials), "--storage", storage, "--cv", "2", "--random-state", "4",
                 "--json", *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def study(tmp_path, capsys):
    """A real one-trial study of ``F-age`` (its record and trial written by tune)."""
    features = tmp_path / "F.npz"
    np.savez(features, **_columns())
    storage = f"sqlite:///{tmp_path / 't.db'}"
    code, _, err = _tune(capsys, features, storage)
    assert code == 0, err
    loaded = optuna.load_study(study_name="F-age", storage=storage)
    return features, storage, loaded


def _forge(study, value, params, distributions, splits=None):
    """Add a finished trial as someone with write access to the storage could."""
    splits = [value, value] if splits is None else splits
    study.add_trial(optuna.trial.create_trial(
        params=params, distributions=distributions, value=value,
        user_attrs={"split_test_score": splits, "split_fit_time": [0.1, 0.1],
                    "split_score_time": [0.1, 0.1]}))


def _real_trial(study):
    trial = study.trials[0]
    return dict(trial.params), dict(trial.distributions)


@pytest.mark.slow
@pytest.mark.parametrize("forgery", ["inf", "nan_splits", "above_one", "out_of_space",
                                     "unknown_param", "not_the_mean"])
def test_a_forged_trial_is_refused_and_never_reported_as_best(study, capsys, forgery):
    features, storage, stored = study
    params, distributions = _real_trial(stored)
    value, splits = 0.99, None
    if forgery == "inf":
        value = math.inf
    elif forgery == "nan_splits":
        splits = [math.nan, math.nan]
    elif forgery == "above_one":  # 5.0 for an accuracy
        value = 5.0
    elif forgery == "out_of_space":
        name, dist = next((k, d) for k, d in distributions.items()
                          if isinstance(d, FloatDistribution))
        wide = FloatDistribution(dist.low, dist.high * 1e6, log=dist.log)
        params[name], distributions[name] = dist.high * 1e3, wide
    elif forgery == "unknown_param":
        params["evil"], distributions["evil"] = 1.0, FloatDistribution(0.0, 2.0)
    elif forgery == "not_the_mean":
        splits = [0.1, 0.2]
    _forge(stored, value, params, distributions, splits)
    n_before = len(stored.get_trials())

    code, out, err = _tune(capsys, features, storage, n_trials=3)
    assert code == 2, err
    assert out == ""  # no result, let alone one naming the forged trial as best
    assert "trial 1:" in err and "could not have written" in err
    assert "nothing was written" in err and "Traceback" not in err
    assert len(optuna.load_study(study_name="F-age", storage=storage).get_trials()) == n_before


@pytest.mark.slow
def test_a_categorical_choices_mismatch_is_refused_once_without_a_failed_trial(study, capsys):
    features, storage, stored = study
    params, distributions = _real_trial(stored)
    head = next(name for name, d in distributions.items()
                if isinstance(d, CategoricalDistribution))
    distributions[head] = CategoricalDistribution((*distributions[head].choices, "evil"))
    # A new study with the search record copied, whose first trial has other choices.
    forged = optuna.create_study(study_name="G-age", storage=storage, direction="maximize")
    for key, value in stored.user_attrs.items():
        forged.set_user_attr(key, value)
    _forge(forged, 0.5, params, distributions)
    for _ in range(2):  # a rerun neither adds a failed trial nor ends in a traceback
        code, out, err = _tune(capsys, features, storage, "--study-name", "G-age",
                               n_trials=3)
        assert code == 2 and out == "", err
        assert f"parameter {head!r} recorded over" in err and "Traceback" not in err
        trials = optuna.load_study(study_name="G-age", storage=storage).get_trials()
        assert len(trials) == 1 and trials[0].state == optuna.trial.TrialState.COMPLETE


@pytest.mark.slow
def test_an_honest_study_is_continued_and_its_json_is_strict(study, capsys):
    features, storage, _ = study
    code, out, err = _tune(capsys, features, storage, n_trials=2)
    assert code == 0, err
    result = _strict_json(out)
    assert result["n_trials"] == 2 and 0 <= result["best_score"] <= 1


# -- the --max-features-mb cap counts the float64 X ------------------------------

def _args(features, mb):
    import argparse

    parser = add_tune_arguments(argparse.ArgumentParser())
    return parser.parse_args(["--features", str(features), "--target", "age", "--storage",
                              "sqlite://", "--cv", "2", "--max-features-mb", str(mb)])


@pytest.mark.slow
def test_a_bool_x_is_counted_as_the_floats_it_becomes(tmp_path, capsys):
    # 4 MiB of booleans compress to a few KB and become 32 MiB of float64.
    n, d = 2**16, 64
    X = np.zeros((n, d), dtype=bool)
    X[::7, 3] = True
    features = tmp_path / "B.npz"
    np.savez_compressed(features, X=X, age=np.full(n, 30.0))
    assert features.stat().st_size < 200_000
    code, out, err = _tune(capsys, features, f"sqlite:///{tmp_path / 't.db'}",
                           "--max-features-mb", "8")
    assert code == 2 and out == ""
    assert "over the" not in err  # the file itself is small
    assert "8 MiB limit (--max-features-mb), counting X as 8-byte floats" in err


def test_reading_features_peaks_within_twice_the_cap(tmp_path):
    import tracemalloc

    # float32 X of 3 MiB: 6 MiB as float64, under a cap of 7 MiB.
    rng = np.random.default_rng(0)
    n, d = 2**14, 48
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[::5, 0] = np.nan  # some rows are dropped: a second copy of the kept rows
    features = tmp_path / "F.npz"
    np.savez(features, X=X, age=rng.uniform(1, 90, n))
    cap = 7
    tracemalloc.start()
    try:
        got, y, _, _ = _from_features(_args(features, cap))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.dtype == np.float64 and got.shape == (n - n // 5 - (n % 5 > 0), d)
    assert len(y) == len(got)
    assert peak < 2 * cap * 2**20, peak / 2**20
