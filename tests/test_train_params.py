"""From tune to train: train --params FILE (tune --json output) and --study STORAGE."""

import json

import numpy as np
import pytest

pytest.importorskip("optuna")

from optuna.trial import FixedTrial

from skagegender.cli import build_parser, main
from skagegender.cli._train_inputs import _tuned_heads
from skagegender.model_selection import default_head_space


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """An age study of 3 trials on small random features, and tune's --json output."""
    folder = tmp_path_factory.mktemp("tuned")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    np.savez(folder / "f.npz", X=X, age=40 + 10 * X[:, 0], gender=np.array([""] * 60))
    storage = f"sqlite:///{folder / 'tune.db'}"
    args = build_parser().parse_args(
        ["tune", "--features", str(folder / "f.npz"), "--target", "age", "--n-trials", "3",
         "--cv", "2", "--storage", storage, "--json"])
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    best = folder / "best.json"
    best.write_text(out.getvalue().strip().splitlines()[-1])
    return storage, best, json.loads(best.read_text())


def _args(*extra):
    return build_parser().parse_args(["train", "--dataset", "fgnet", "--root", "x", "--out",
                                      "m.skag", *extra])


@pytest.mark.slow
def test_params_file_and_study_give_the_tuned_head(tuned):
    storage, best, record = tuned
    expected = default_head_space("age")(FixedTrial(record["best_trial_params"]))["head"]
    by_file = _tuned_heads(_args("--params", str(best)))
    by_study = _tuned_heads(_args("--study", storage, "--study-name", "f-age"))
    assert set(by_file) == set(by_study) == {"age"}
    assert repr(by_file["age"].head) == repr(by_study["age"].head) == repr(expected)


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "not JSON"),
    ('{"head": "mlp"}', "expected what 'skagegender tune --json' prints"),
    ('{"target": "height", "best_trial_params": {}}', "expected what"),
])
def test_bad_params_files_are_refused_before_any_work(tmp_path, capsys, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    assert main(["train", "--dataset", "fgnet", "--root", str(tmp_path / "none"), "--out",
                 str(tmp_path / "m.skag"), "--params", str(path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_unknown_study_and_clashing_options_are_refused(tuned, tmp_path, capsys):
    storage, best, _ = tuned
    common = ["train", "--dataset", "fgnet", "--root", str(tmp_path), "--out",
              str(tmp_path / "m.skag")]
    assert main([*common, "--study", storage]) == 2  # tune's default names: fgnet-age/-gender
    assert "no study named fgnet-age or fgnet-gender" in capsys.readouterr().err
    assert main([*common, "--study", storage, "--study-name", "nope"]) == 2
    assert "no study named 'nope'; it has ['f-age']" in capsys.readouterr().err
    assert main([*common, "--params", str(best), "--age-head", "ordinal"]) == 2
    assert "--age-head and the tuned age parameters" in capsys.readouterr().err
    assert main([*common, "--params", str(best), "--params", str(best)]) == 2
    assert "two sets of tuned parameters for the age head" in capsys.readouterr().err
    assert main([*common, "--params", str(best), "--recipe", "fast"]) == 2


def test_both_helps_say_so():
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    train, tune = (" ".join(subs[name].format_help().split()) for name in ("train", "tune"))
    assert "--params FILE" in train and "what 'tune --json' printed" in train
    assert "--study STORAGE" in train
    assert "'skagegender train ... --study STORAGE'" in tune and "train --params FILE" in tune


@pytest.mark.slow
@pytest.mark.shared_data
def test_train_with_params_saves_the_tuned_head(tuned, shared_data, tmp_path, capsys):
    _, best, record = tuned
    out = tmp_path / "m.skag"
    assert main(["train", "--dataset", "fgnet", "--root", str(shared_data / "FGNET"),
                 "--limit", "16", "--out", str(out), "--params", str(best)]) == 0
    capsys.readouterr()
    from skagegender.model import AgeGenderModel

    model = AgeGenderModel.load(out)
    expected = default_head_space("age")(FixedTrial(record["best_trial_params"]))["head"]
    assert repr(model.age_head_.head) == repr(expected)
