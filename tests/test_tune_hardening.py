"""`skagegender tune` against hostile feature files and reused or broken Optuna studies.

Issue 12 items 1 (feature files never unpickled, sizes capped, columns checked) and 10
(a study records what it searches, seeds differ per trial, bad storage is a clear error),
and the tune part of issue 16 item 4 (help with defaults and exit codes). Each test runs
the real ``skagegender.cli.main`` on small generated feature files.
"""

import os
import pickle
import threading
import zipfile
from typing import ClassVar

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import FloatDistribution
from sklearn.datasets import make_regression
from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_limits

from skagegender.cli import main
from skagegender.cli.tune import add_tune_arguments
from skagegender.model_selection import HeadSearchCV


@pytest.fixture(autouse=True)
def _single_blas_thread():
    """Small fits on two shared cores are faster without BLAS threads fighting."""
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


def _write(path, **columns):
    np.savez(path, **columns)
    return str(path)


def _tune(capsys, features, storage, *extra, target="age", n_trials=1):
    # Seed 4 happens to start with three trials of the ordinal family, the fastest head.
    argv = ["tune", "--features", str(features), "--target", target, "--n-trials",
            str(n_trials), "--storage", storage, "--cv", "2", "--random-state", "4", "--json",
            *extra]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- item 1: feature files ------------------------------------------------------

class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _armed(column, marker, n=40):
    """The columns with ``column`` an object array holding the payload."""
    columns = _columns(n)
    value = np.empty(n if column != "X" else (n, 5), dtype=object)
    value[...] = 1.0
    value.flat[0] = _Payload(marker)
    columns[column] = value
    return columns


@pytest.mark.parametrize("column,target", [("X", "age"), ("age", "age"),
                                           ("gender", "gender"), ("groups", "age")])
def test_pickled_column_is_refused_and_its_payload_never_runs(tmp_path, capsys, column,
                                                              target):
    # The attack is real: loading the file the old way (pickles allowed) runs it.
    proof = tmp_path / "proof"
    with np.load(_write(tmp_path / "proof.npz", **_armed(column, proof)),
                 allow_pickle=True) as data:
        data[column]
    assert proof.exists()

    marker = tmp_path / "pwned"
    features = _write(tmp_path / "F.npz", **_armed(column, marker))
    code, out, err = _tune(capsys, features, f"sqlite:///{tmp_path / 't.db'}",
                           target=target)
    assert not marker.exists()
    assert code == 2 and out == ""
    assert f"the array {column!r} holds Python objects" in err and "unpickl" in err


def test_a_pickle_file_is_refused_and_never_unpickled(tmp_path, capsys):
    marker = tmp_path / "pwned"
    features = tmp_path / "F.npz"
    features.write_bytes(pickle.dumps({"X": _Payload(marker)}))
    code, _, err = _tune(capsys, features, f"sqlite:///{tmp_path / 't.db'}")
    assert not marker.exists()
    assert code == 2 and "is a pickle" in err


def _npz_with_header(path, name, shape, descr="<f8", data=b"\0" * 64):
    """An .npz whose member ``name`` declares ``shape`` but holds only ``data``."""
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open(f"{name}.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, header)
            member.write(data)
        for column, value in _columns().items():
            if column != name:
                with archive.open(f"{column}.npy", "w") as member:
                    np.lib.format.write_array(member, value)
    return str(path)


def test_a_huge_declared_array_is_refused_before_any_data_is_read(tmp_path, capsys):
    import resource

    # 40 rows of 5e8 float64 features declared (160 GB) in a 2 kB file.
    features = _npz_with_header(tmp_path / "F.npz", "X", (40, 500_000_000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, out, err = _tune(capsys, features, f"sqlite:///{tmp_path / 't.db'}")
    assert code == 2 and out == ""
    assert "MiB limit (--max-features-mb)" in err
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100_000


@pytest.mark.slow
def test_the_size_cap_applies_to_real_compressed_arrays_and_to_the_file(tmp_path, capsys):
    columns = _columns(n=4000)
    columns["X"] = np.zeros((4000, 1000))  # 30.5 MiB of zeros, 31 kB deflated
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, **columns)
    assert bomb.stat().st_size < 100_000
    storage = f"sqlite:///{tmp_path / 't.db'}"
    code, _, err = _tune(capsys, bomb, storage, "--max-features-mb", "8")
    assert code == 2 and "declare more than the 8 MiB limit" in err
    big = _write(tmp_path / "big.npz", **_columns(), padding=np.zeros(2**20 // 8 * 3))
    code, _, err = _tune(capsys, big, storage, "--max-features-mb", "2")
    assert code == 2 and "over the 2 MiB limit" in err


def test_a_zip_declaring_many_members_is_refused_before_listing_them(tmp_path, capsys):
    features = tmp_path / "F.npz"
    with zipfile.ZipFile(features, "w") as archive:
        for i in range(300):
            archive.writestr(f"m{i}", b"")
    code, _, err = _tune(capsys, features, f"sqlite:///{tmp_path / 't.db'}")
    assert code == 2 and "declares 300 members" in err


def _cases(tmp_path):
    """(feature file, target, expected message) for every malformed file."""
    good = _columns()
    cases = []

    def add(name, message, target="age", **columns):
        cases.append((_write(tmp_path / f"{name}.npz", **{**good, **columns}), target, message))

    add("x1d", "'X' must be a 2-D array of numbers", X=good["X"][:, 0])
    add("xtext", "'X' must be a 2-D array of numbers", X=good["X"].astype(str))
    add("age2d", "'age' must be a 1-D array of numbers", age=good["age"][:, None])
    add("agetext", "'age' must be a 1-D array of numbers", age=good["age"].astype(str))
    add("genderlen", "gender has 39 entries but X has 40 rows", target="gender",
        gender=good["gender"][:-1])
    add("groupslen", "groups has 41 entries but X has 40 rows",
        groups=np.arange(41))
    add("empty", "X is empty", X=np.zeros((40, 0)))
    add("fewgroups", "1 distinct groups among the usable samples, fewer than --cv 2",
        groups=np.zeros(40, dtype=int))
    add("nolabels", "0 samples have both features and the age label",
        age=np.full(40, np.nan))
    no_age = {k: v for k, v in good.items() if k != "age"}
    cases.append((_write(tmp_path / "noage.npz", **no_age), "age", "lacks the array(s) ['age']"))
    embed_like = _write(tmp_path / "embed.npz", embeddings=good["X"],
                        paths=np.array([f"{i}.jpg" for i in range(40)]),
                        found=np.ones(40, bool), errors=np.full(40, ""))
    cases.append((embed_like, "age", "looks like `skagegender embed` output"))

    text = tmp_path / "text.npz"
    text.write_text("X,age\n1,2\n")
    cases.append((str(text), "age", "not an .npz file"))
    npy = tmp_path / "single.npz"
    np.save(npy.with_suffix(".npy"), good["X"])
    npy.with_suffix(".npy").rename(npy)
    cases.append((str(npy), "age", "a single .npy array"))
    whole = tmp_path / "whole.npz"
    _write(whole, **good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    cases.append((str(truncated), "age", "not an .npz file"))
    corrupt = tmp_path / "corrupt.npz"
    np.savez_compressed(corrupt, **good)
    raw = bytearray(corrupt.read_bytes())
    with zipfile.ZipFile(corrupt) as archive:
        item = archive.getinfo("X.npy")
    start = item.header_offset + 30 + len(item.filename) + 200  # inside X's deflated data
    raw[start: start + 64] = bytes(64)
    corrupt.write_bytes(bytes(raw))
    cases.append((str(corrupt), "age", "the array 'X' cannot be read"))
    short = _npz_with_header(tmp_path / "short.npz", "X", (40, 5), data=b"\0" * 100)
    cases.append((short, "age", "the array 'X' cannot be read"))
    weird = _npz_with_header(tmp_path / "weird.npz", "X", (40, 5), descr=[("a", "<f8")])
    cases.append((weird, "age", "'X' must be a 2-D array of numbers"))
    cases.append((str(tmp_path), "age", "not a regular file"))
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    cases.append((str(fifo), "age", "not a regular file"))
    cases.append((str(tmp_path / "missing.npz"), "age", "cannot open it: No such file"))
    return cases


@pytest.mark.slow
def test_malformed_feature_files_get_a_clear_message_and_exit_2(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for features, target, message in _cases(tmp_path):
        code, out, err = _tune(capsys, features, storage, target=target)
        assert (code, out) == (2, ""), (features, err)
        assert err.startswith("skagegender tune: error: --features"), (features, err)
        assert message in err, (features, err)
    # No trial ran on any of them.
    summaries = optuna.get_all_study_summaries(storage)
    assert summaries and all(summary.n_trials == 0 for summary in summaries)


@pytest.mark.slow
@pytest.mark.parametrize("coding", ["strings", "numbers"])
def test_a_plain_feature_file_is_tuned(tmp_path, capsys, coding):
    import json

    columns = _columns()
    if coding == "strings":
        columns["gender"][:3] = ""  # unknown genders are left out
    else:
        columns["gender"] = (columns["gender"] == "female").astype(float)
        columns["gender"][:3] = np.nan
        columns["X"] = columns["X"].astype(np.float32)
        columns["groups"] = np.array([f"p{i // 2}" for i in range(40)])
    features = _write(tmp_path / "F.npz", **columns)
    code, out, err = _tune(capsys, features, f"sqlite:///{tmp_path / 't.db'}",
                           target="gender")
    assert code == 0, err
    result = json.loads(out)
    assert result["n_samples"] == 37 and result["study_name"] == "F-gender"


def test_embed_writes_a_file_without_object_arrays(portrait, tmp_path, capsys):
    out_file = tmp_path / "embed.npz"
    assert main(["embed", portrait, "--out", str(out_file), "--json"]) == 0
    capsys.readouterr()
    with np.load(out_file, allow_pickle=False) as data:  # raises on any object array
        arrays = {name: data[name] for name in data.files}
    assert set(arrays) == {"embeddings", "paths", "found", "errors", "notes"}
    assert not any(value.dtype.hasobject for value in arrays.values())
    code, _, err = _tune(capsys, out_file, f"sqlite:///{tmp_path / 't.db'}")
    assert code == 2 and "looks like `skagegender embed` output" in err


# -- item 10: studies -------------------------------------------------------------

def _trials(storage, name):
    return optuna.load_study(study_name=name, storage=storage).trials


@pytest.mark.slow
def test_a_study_of_the_other_target_is_refused_before_any_trial(tmp_path, capsys):
    import json

    features = _write(tmp_path / "F.npz", **_columns())
    storage = f"sqlite:///{tmp_path / 't.db'}"
    code, out, err = _tune(capsys, features, storage, "--study-name", "s", n_trials=2)
    assert code == 0, err
    age_best = json.loads(out)["best_score"]

    code, out, err = _tune(capsys, features, storage, "--study-name", "s", target="gender",
                           n_trials=3)
    assert (code, out) == (2, "")
    assert "belongs to another search" in err and "GenderClassifier" in err
    assert "Traceback" not in err
    assert len(_trials(storage, "s")) == 2  # no gender trial was appended

    # The age study is intact: the next age run reports an age score.
    code, out, err = _tune(capsys, features, storage, "--study-name", "s", n_trials=2)
    assert code == 0, err
    assert json.loads(out)["best_score"] == age_best
    # A different scorer is another search too.
    code, _, err = _tune(capsys, features, storage, "--study-name", "s", "--scoring",
                         "neg_mean_absolute_error", n_trials=3)
    assert code == 2 and "scorer: stored" in err


def test_a_minimizing_study_is_refused(tmp_path, capsys):
    features = _write(tmp_path / "F.npz", **_columns())
    storage = f"sqlite:///{tmp_path / 't.db'}"
    study = optuna.create_study(storage=storage, study_name="F-age", direction="minimize")
    code, _, err = _tune(capsys, features, storage, n_trials=2)
    assert code == 2 and "direction minimize" in err and "would be the worst" in err
    assert study.trials == []
    # HeadSearchCV itself refuses it the same way.
    X, y = make_regression(n_samples=30, n_features=3, random_state=0)
    with pytest.raises(ValueError, match="direction minimize"):
        HeadSearchCV(Ridge(), {"alpha": FloatDistribution(1e-3, 1e3, log=True)}, cv=2,
                     n_trials=1, storage=storage, study_name="F-age").fit(X, y)


@pytest.mark.slow
def test_a_foreign_study_with_trials_is_refused_an_empty_one_adopted(tmp_path):
    X, y = make_regression(n_samples=30, n_features=3, random_state=0)
    storage = f"sqlite:///{tmp_path / 't.db'}"
    foreign = optuna.create_study(storage=storage, study_name="foreign", direction="maximize")
    foreign.optimize(lambda trial: trial.suggest_float("alpha", 0, 1), n_trials=2)
    optuna.create_study(storage=storage, study_name="empty", direction="maximize")
    space = {"alpha": FloatDistribution(1e-3, 1e3, log=True)}
    with pytest.raises(ValueError, match="holds 2 trials of unknown origin"):
        HeadSearchCV(Ridge(), space, cv=2, n_trials=3, storage=storage,
                     study_name="foreign").fit(X, y)
    assert len(_trials(storage, "foreign")) == 2
    search = HeadSearchCV(Ridge(), space, cv=2, n_trials=2, storage=storage,
                          study_name="empty").fit(X, y)
    record = search.study_.user_attrs["skagegender_search"]
    assert record["estimator"] == "Ridge" and record["direction"] == "maximize"
    assert record["search_space"] == {"alpha": repr(space["alpha"])}


_SPACE = {"alpha": FloatDistribution(1e-3, 1e3, log=True)}


def _alphas(search):
    return [params["alpha"] for params in search.cv_results_["params"]]


@pytest.mark.slow
def test_a_resumed_seeded_study_draws_new_points(tmp_path):
    X, y = make_regression(n_samples=30, n_features=3, noise=1.0, random_state=0)
    storage = f"sqlite:///{tmp_path / 't.db'}"
    kwargs = {"cv": 2, "storage": storage, "study_name": "r", "random_state": 0}
    HeadSearchCV(Ridge(), _SPACE, n_trials=5, **kwargs).fit(X, y)
    resumed = HeadSearchCV(Ridge(), _SPACE, n_trials=10, **kwargs).fit(X, y)
    assert len(set(_alphas(resumed))) == 10  # was 5 distinct: the first 5 replayed
    # A fresh seeded search is still reproducible, and the stored study began like it.
    fresh = HeadSearchCV(Ridge(), _SPACE, cv=2, n_trials=10, random_state=0).fit(X, y)
    again = HeadSearchCV(Ridge(), _SPACE, cv=2, n_trials=10, random_state=0).fit(X, y)
    assert _alphas(fresh) == _alphas(again) == _alphas(resumed)


class _MeetingRidge(Ridge):
    """Ridge whose first fit in each thread waits for the other worker's first fit."""

    meeting = None
    missed: ClassVar[list] = []  # a worker whose partner never came: the scenario did not happen

    def fit(self, X, y):
        local = _MeetingRidge._local
        if not getattr(local, "met", False):
            local.met = True
            try:
                _MeetingRidge.meeting.wait(timeout=60)  # bounds a broken run only
            except threading.BrokenBarrierError as exc:
                _MeetingRidge.missed.append(exc)
        return super().fit(X, y)


_MeetingRidge._local = threading.local()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_two_workers_with_the_same_seed_draw_different_points():
    X, y = make_regression(n_samples=30, n_features=3, noise=1.0, random_state=0)
    storage = optuna.storages.InMemoryStorage()  # shared by both workers, as a database is
    _MeetingRidge.meeting = threading.Barrier(2)
    _MeetingRidge.missed = []
    errors = []

    def worker():
        try:
            HeadSearchCV(_MeetingRidge(), _SPACE, cv=2, n_trials=8, storage=storage,
                         study_name="shared", random_state=0).fit(X, y)
        except Exception as exc:  # noqa: BLE001 - any error of the thread is reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and not _MeetingRidge.missed
    study = optuna.load_study(study_name="shared", storage=storage)
    # (a trial created when the other worker had just finished the 8th is not run: no alpha)
    alphas = [t.params["alpha"] for t in study.trials if "not_run" not in t.user_attrs]
    assert len(alphas) >= 8
    # Both workers' first trials started before either finished: with one random
    # sequence per run they were the same point.
    assert len(set(alphas)) == len(alphas)


@pytest.mark.parametrize("url,message", [
    ("notaurl", "the storage URL cannot be parsed"),
    ("sqlite:///{tmp}/no/such/folder/t.db", "unable to open database file"),
    ("sqlite:///{tmp}", "unable to open database file"),
    ("sqlite:///{tmp}/garbage.db", "file is not a database"),
    ("foo://host/db", "cannot open the storage 'foo://host/db'"),
    ("postgresql://user:secret@localhost:1/db", "cannot open the storage"),
])
def test_a_bad_storage_is_a_clear_error(tmp_path, capsys, url, message):
    (tmp_path / "garbage.db").write_bytes(np.random.default_rng(0).bytes(4096))
    features = _write(tmp_path / "F.npz", **_columns())
    code, out, err = _tune(capsys, features, url.format(tmp=tmp_path))
    assert (code, out) == (2, "")
    assert err.startswith("skagegender tune: error:") and message in err
    assert "Traceback" not in err and "secret" not in err


def test_a_bad_storage_is_reported_before_a_dataset_is_embedded(tmp_path, capsys):
    # The dataset folder does not exist: embedding would fail, later, with another error.
    code = main(["tune", "--dataset", "utkface", "--root", str(tmp_path / "nowhere"),
                 "--target", "age", "--storage", f"sqlite:///{tmp_path}/no/such/t.db"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot open the storage" in err and "nowhere" not in err


def test_no_data_is_a_usage_error_with_a_study_name_too(tmp_path, capsys):
    code = main(["tune", "--target", "age", "--study-name", "s",
                 "--storage", f"sqlite:///{tmp_path / 't.db'}"])
    assert code == 2 and "give --dataset and --root" in capsys.readouterr().err


# -- issue 16 item 4: help ----------------------------------------------------------

def test_every_tune_option_has_help_with_its_default_and_the_exit_codes(capsys):
    import argparse

    parser = add_tune_arguments(argparse.ArgumentParser())
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help and ("default" in action.help or action.required), action.dest
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "(default: 50)" in text and "(default: 2048)" in text
    codes = text[text.index("exit codes:"):]
    for code in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n  {code}" in codes
    assert "kept in the storage" in codes


def test_out_of_range_numbers_are_usage_errors(capsys):
    for option, value in [("--n-trials", "0"), ("--cv", "1"), ("--timeout", "nan"),
                          ("--max-features-mb", "-1"), ("--limit", "x")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["tune", "--target", "age", "--storage", "sqlite://", option, value])
        assert exit_info.value.code == 2
        assert f"argument {option}" in capsys.readouterr().err
