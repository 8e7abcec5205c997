"""The skagegender command: predict, embed, train, evaluate, exit codes, JSON on stdout."""

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import skagegender
from skagegender.cli import main


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "skagegender 0." in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["predict"])  # no paths
    assert info.value.code == 2


def test_a_rejected_model_file_is_a_usage_error(portrait, tmp_path, capsys):
    garbage = tmp_path / "garbage.skag"
    garbage.write_bytes(b"PK\x03\x04 not a model file")
    code, out, err = _run(capsys, ["predict", "--model", str(garbage), portrait])
    assert code == 2 and out == ""
    assert str(garbage) in err and "Traceback" not in err


@pytest.mark.slow
def test_console_script_is_installed():
    exe = shutil.which("skagegender")
    if exe is None:
        pytest.skip("the package is not installed with its console script")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.startswith("skagegender ")


@pytest.mark.parametrize("command", ["predict", "embed", "evaluate", "train", "tune"])
def test_help_gives_every_option_a_sentence_its_default_and_the_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    options, epilog = text.split("\noptions:\n")[1].split("\nexit codes:\n")
    # the exit codes end the help, one line each
    codes = [line.split()[0] for line in epilog.splitlines() if line[:4].strip()]
    assert codes == ["0", "1", "2", "130"]
    if command in ("predict", "embed"):
        assert "no face is found is a success" in epilog
        assert "some inputs could not be read" in epilog and "empty folders" in epilog
    # one block per option: its first line starts with "  -", its help follows
    blocks = []
    for line in options.splitlines():
        if line.startswith("  -"):
            blocks.append(line)
        elif line.strip():
            blocks[-1] += " " + line.strip()
    assert len(blocks) >= 5
    for block in blocks[1:]:  # after -h/--help
        name = block.split()[0]
        words = block.split("  ", 2)[-1]
        assert len(words.split()) >= 3, f"{command} {name} has no help sentence"
        assert "default" in words or "(required)" in words, f"{command} {name}: no default"


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, fgnet_ten):
    out = tmp_path_factory.mktemp("model") / "small.skag"
    cache = tmp_path_factory.mktemp("cache")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["train", "--dataset", "fgnet", "--root", str(fgnet_ten),
                     "--out", str(out), "--age-head", "ordinal", "--gender-head", "ordinal",
                     "--layers", "none", "--cache", str(cache), "--json"])
    assert code == 0
    return out, cache, stderr.getvalue()


@pytest.mark.slow
def test_train_on_few_faces_warns(trained_model):
    *_, stderr = trained_model
    assert "warning: only 127 faces to learn from" in stderr
    assert "will be poor" in stderr


def _floats(obj):
    if isinstance(obj, float):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _floats(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _floats(value)


@pytest.mark.slow
def test_train_then_evaluate_json(trained_model, fgnet_ten, capsys):
    model, cache, _ = trained_model
    capsys.readouterr()
    code, out, _ = _run(capsys, ["evaluate", "--dataset", "fgnet", "--root",
                                 str(fgnet_ten), "--model", str(model),
                                 "--cache", str(cache), "--json"])
    assert code == 0
    result = json.loads(out)  # nothing but JSON on stdout
    # which model and version produced it; floats to 4 decimals
    assert result["model"] == {"path": str(model.resolve()),
                               "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}
    assert result["skagegender_version"] == skagegender.__version__
    # the scores are metrics.evaluation_report's, with what was evaluated
    from skagegender.metrics import evaluation_report

    scores = set(evaluation_report([30.0], [31.0]))
    assert set(result) == scores | {"n_images", "n_faces_found", "seconds", "dataset", "model",
                                    "skagegender_version"}
    oldest = result["per_group"]["age"]["60+"]
    assert set(oldest) == scores - {"per_group"}
    assert result["n"] == result["n_age"] == 127 and oldest["n_gender"] == 0
    assert all(round(value, 4) == value for value in _floats(result))
    assert any(round(value, 2) != value for value in _floats(result))
    assert result["n_images"] == 127
    assert 120 <= result["n_faces_found"] <= 127
    assert result["gender_accuracy"] is None  # FG-NET has no gender labels
    assert 0 <= result["mae"] < 15
    per_age = result["per_group"]["age"]
    assert set(per_age) == {"0-12", "13-19", "20-39", "40-59", "60+"}
    assert sum(row["n"] for row in per_age.values()) == 127
    # The overall scores are the per-group scores weighted by group size.
    for key in ("mae", "one_class_off", "cs5"):
        weighted = sum(row["n"] * row[key] for row in per_age.values()) / 127
        assert weighted == pytest.approx(result[key], abs=1e-3)
    assert "gender" not in result["per_group"]


@pytest.mark.slow
def test_evaluate_with_two_processes_gives_the_same_scores(shared_data, capsys):
    argv = ["evaluate", "--dataset", "utkface", "--root", str(shared_data / "UTKFace"),
            "--limit", "12", "--model", "fast", "--json"]
    psutil = pytest.importorskip("psutil")
    from joblib.externals.loky import get_reusable_executor

    results, workers = [], []
    for n_jobs in ("1", "2"):
        get_reusable_executor().shutdown(wait=True)  # no worker left from other tests
        code, out, _ = _run(capsys, [*argv, "--n-jobs", n_jobs])
        assert code == 0
        results.append({k: v for k, v in json.loads(out).items() if k != "seconds"})
        workers.append(len(psutil.Process().children(recursive=True)))
    assert results[0] == results[1] and results[0]["n_images"] == 12
    # joblib keeps its worker processes for reuse: --n-jobs 2 leaves two more behind
    assert workers[1] >= workers[0] + 2, workers
    get_reusable_executor().shutdown(wait=True)


@pytest.mark.slow
def test_evaluate_json_gender_accuracy_per_age_group_and_race(shared_data, capsys):
    code, out, _ = _run(capsys, ["evaluate", "--dataset", "utkface", "--root",
                                 str(shared_data / "UTKFace"), "--limit", "60", "--json"])
    assert code == 0
    result = json.loads(out)
    from skagegender.pretrained import MODEL_FILE

    assert result["model"] == {"name": "shipped",
                               "sha256": hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest()}
    assert result["n_images"] == 60 and 0.8 <= result["gender_accuracy"] <= 1
    for kind in ("age", "race"):
        rows = result["per_group"][kind].values()
        assert sum(row["n"] for row in rows) == 60
        assert all(0 <= row["gender_accuracy"] <= 1 for row in rows)
        # the groups' accuracies weighted by their sizes give the overall one
        weighted = sum(row["n"] * row["gender_accuracy"] for row in rows) / 60
        assert weighted == pytest.approx(result["gender_accuracy"], abs=1e-3)
    # the age interval's coverage and the gender ECE, overall and per age group
    ages = result["per_group"]["age"].values()
    weighted = sum(row["n"] * row["interval_coverage"] for row in ages) / 60
    assert weighted == pytest.approx(result["interval_coverage"], abs=1e-3)
    assert all(row["interval_width"] > 0 for row in ages)
    children, adults = result["per_group"]["age"]["0-12"], result["per_group"]["age"]["20-39"]
    assert children["interval_width"] < adults["interval_width"]  # the interval follows the face
    assert 0 <= result["gender_ece"] < 0.1  # the shipped probability is calibrated
    assert all(0 <= row["gender_ece"] <= 1 for row in ages)


@pytest.mark.slow
def test_predict_json_keeps_order_and_reports_failures(trained_model, group_photo, tmp_path,
                                                       capsys):
    model, *_ = trained_model
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    folder = tmp_path / "folder"
    folder.mkdir()
    blank = folder / "blank.png"
    from PIL import Image

    Image.new("RGB", (120, 90), "white").save(blank)
    code, out, _ = _run(capsys, ["predict", "--json", "--model", str(model), group_photo,
                                 str(bad), str(folder)])
    assert code == 1  # one input failed; the others are still reported
    records = json.loads(out)
    assert [r["path"] for r in records] == [group_photo, str(bad), str(blank)]
    assert len(records[0]["faces"]) == 6 and records[0]["error"] is None
    face = records[0]["faces"][0]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5
    assert records[1]["faces"] == [] and "not a recognised image" in records[1]["error"]
    assert records[2] == {"path": str(blank), "faces": [], "error": None}

    code, out, _ = _run(capsys, ["predict", "--model", str(model), group_photo])
    assert code == 0 and out.count("face ") == 6 and "age " in out


def test_embed_writes_npz_and_names_failures(group_photo, tmp_path, capsys):
    out_file = tmp_path / "e.npz"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = _run(capsys, ["embed", group_photo, str(tmp_path / "nope.jpg"), str(bad),
                                   str(empty), "--out", str(out_file), "--json"])
    assert code == 1
    summary = json.loads(out)
    assert summary["n_faces_found"] == 1 and summary["embedding_dim"] == 128
    assert summary["n_failed"] == 3
    # each failed input and its reason on stderr
    lines = err.splitlines()
    assert len(lines) == 3
    assert f"{tmp_path / 'nope.jpg'}: no such file" in lines[0]
    assert str(bad) in lines[1] and "image" in lines[1]
    assert f"{empty}: no image files in this folder" in lines[2]
    # numbers and strings only: a reader that refuses pickles reads every column
    with np.load(out_file, allow_pickle=False) as data:
        columns = {name: data[name] for name in data.files}
    assert all(column.dtype != object for column in columns.values())
    assert columns["embeddings"].shape == (4, 128)
    assert columns["found"].tolist() == [True, False, False, False]
    assert columns["paths"].tolist() == [group_photo, str(tmp_path / "nope.jpg"), str(bad),
                                         str(empty)]
    assert "no such file" in str(columns["errors"][1]) and columns["errors"][0] == ""


@pytest.mark.slow
def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "skagegender", "--version"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "skagegender" in done.stdout
