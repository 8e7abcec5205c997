"""The skagegender command: predict, embed, train, evaluate, exit codes, JSON on stdout."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

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


def test_console_script_is_installed():
    exe = shutil.which("skagegender")
    if exe is None:
        pytest.skip("the package is not installed with its console script")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("skagegender ")


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("model") / "small.skag"
    cache = tmp_path_factory.mktemp("cache")
    code = main(["train", "--dataset", "fgnet", "--root", str(shared_data / "FGNET"),
                 "--out", str(out), "--age-head", "ordinal", "--gender-head", "ordinal",
                 "--layers", "none", "--cache", str(cache), "--json"])
    assert code == 0
    return out, cache


def test_train_then_evaluate_json(trained_model, shared_data, capsys):
    model, cache = trained_model
    capsys.readouterr()
    code, out, _ = _run(capsys, ["evaluate", "--dataset", "fgnet", "--root",
                                 str(shared_data / "FGNET"), "--model", str(model),
                                 "--cache", str(cache), "--json"])
    assert code == 0
    result = json.loads(out)  # nothing but JSON on stdout
    assert result["n_images"] == 127
    assert 120 <= result["n_faces_found"] <= 127
    assert result["gender_accuracy"] is None  # FG-NET has no gender labels
    assert 0 <= result["mae"] < 15 and 0 <= result["one_class_off"] <= 1
    per_age = result["per_group"]["age"]
    assert set(per_age) == {"0-12", "13-19", "20-39", "40-59", "60+"}
    assert sum(row["n"] for row in per_age.values()) == 127
    assert "gender" not in result["per_group"]


def test_predict_json_keeps_order_and_reports_failures(trained_model, group_photo, tmp_path,
                                                       capsys):
    model, _ = trained_model
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


def test_embed_writes_npz(group_photo, tmp_path, capsys):
    out_file = tmp_path / "e.npz"
    code, out, _ = _run(capsys, ["embed", group_photo, str(tmp_path / "nope.jpg"),
                                 "--out", str(out_file), "--json"])
    assert code == 1
    summary = json.loads(out)
    assert summary["n_faces_found"] == 1 and summary["embedding_dim"] == 128
    data = np.load(out_file)
    assert data["embeddings"].shape == (2, 128)
    assert data["found"].tolist() == [True, False]
    assert "no such file" in str(data["errors"][1])


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "skagegender", "--version"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "skagegender" in done.stdout
