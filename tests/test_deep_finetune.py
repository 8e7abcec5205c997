"""SFace fine-tuned at each depth: the torch rebuild, resumable training, ONNX export, freezing."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skagegender.training import (
    DEPTHS,
    aligned_crops,
    sface_torch,
    train_deep,
    training_views,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def faces(shared_data, tmp_path_factory):
    """Aligned RGB crops of 12 real UTKFace images, their ages and genders."""
    paths = sorted(str(p) for p in (shared_data / "UTKFace").glob("*.jpg"))
    paths = paths[5::len(paths) // 12][:12]
    crops, found = aligned_crops("t", paths, tmp_path_factory.mktemp("crops"), verbose=False)
    assert found.all()
    names = [Path(p).name.split("_") for p in paths]
    age = np.array([float(n[0]) for n in names])
    female = np.array([float(n[1]) for n in names])
    return crops, age, female


def _blob(crops):
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)


def _onnxruntime_sface(crops, output):
    from skagegender.embedding import sface_maps

    return sface_maps(crops, layer=output)


def test_sface_in_torch_equals_onnxruntime_on_real_faces(faces):
    crops = faces[0][:4]
    with torch.no_grad():
        whole = sface_torch()(torch.from_numpy(_blob(crops))).numpy()
        below = sface_torch(None, "conv_12_relu")(torch.from_numpy(_blob(crops))).numpy()
    reference = _onnxruntime_sface(crops, "fc1")
    assert np.abs(whole - reference).max() < 1e-4 * np.abs(reference).max()
    maps = _onnxruntime_sface(crops, "conv_12_relu")
    assert np.abs(below - maps).max() < 1e-4 * np.abs(maps).max()
    with torch.no_grad():  # the rest of the network, from the maps
        above = sface_torch("conv_12_relu")(torch.from_numpy(maps)).numpy()
    assert np.abs(above - reference).max() < 1e-4 * np.abs(reference).max()
    with pytest.raises(ValueError, match="no activation"):
        sface_torch(None, "conv_99_relu")


def test_training_views_are_seeded_per_face_and_epoch(faces):
    crops = faces[0]
    rows = np.arange(4)
    first = training_views(crops, rows, 0)
    assert np.array_equal(first, training_views(crops, rows, 0))
    assert np.array_equal(first[1:], training_views(crops, rows[1:], 0))  # per face
    assert not np.array_equal(first, training_views(crops, rows, 1))
    assert np.array_equal(training_views(crops, rows, 0, augment=False), crops[rows])


def _train(faces, folder, **kwargs):
    crops, age, female = faces
    return train_deep(crops, age, female, depth="layer", epochs=2, batch_size=4, n_threads=1,
                      cache_folder=folder / "frozen", **kwargs)


@pytest.mark.slow
def test_a_stopped_run_resumes_to_the_same_state(faces, tmp_path):
    whole = _train(faces, tmp_path, checkpoint_folder=tmp_path / "a")
    assert whole.finished and whole.step == 6
    stopped = _train(faces, tmp_path, checkpoint_folder=tmp_path / "b", stop_after_steps=4)
    assert not stopped.finished and stopped.step == 4
    # as a new process would: only the checkpoint carries the state over
    epochs = []
    resumed = _train(faces, tmp_path, checkpoint_folder=tmp_path / "b",
                     callback=lambda epoch, model: epochs.append(epoch))
    assert resumed.finished and resumed.step == 6
    assert epochs == [1]  # it went on in the second epoch (3 steps an epoch), not from 0
    a, b = whole.trained.state_dict(), resumed.trained.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not torch.equal(stopped.trained.state_dict()["age.weight"], a["age.weight"])
    with pytest.raises(ValueError, match="other data or settings"):
        _train(faces, tmp_path, checkpoint_folder=tmp_path / "b", sigma=3.0)


@pytest.mark.slow
def test_exported_onnx_equals_torch_on_real_faces(faces, tmp_path):
    import onnxruntime as ort

    model = _train(faces, tmp_path)
    crops = faces[0]
    path = model.export_onnx(tmp_path / "net.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exported = session.run(["probs"], {"data": _blob(crops)})[0]
    expected = model.predict(crops)
    assert exported.shape == (len(crops), 102)
    assert np.allclose(exported[:, :101].sum(1), 1, atol=1e-5)
    assert np.abs(exported - expected).max() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("depth", ["last-stage", "whole"])
def test_depth_trains_exactly_the_layers_above_its_cut(faces, tmp_path, depth):
    crops, age, female = faces
    original = {name: value.clone() for name, value in sface_torch().state_dict().items()}
    model = train_deep(crops[:8], age[:8], female[:8], depth=depth, epochs=1, batch_size=8,
                       lr=1e-3, n_threads=1, cache_folder=tmp_path)
    assert model.step == 1
    trained = {name.split(".", 1)[1]: value for name, value in model.trained.state_dict().items()
               if name.startswith("sface.")}
    frozen = {} if model.frozen is None else model.frozen.state_dict()
    cut = DEPTHS[depth]
    conv = [name for name in {n.split(".")[1] for n in original}
            if name.startswith("conv_")]
    index = (lambda name: int(re.match(r"conv_(\d+)", name).group(1)))
    if depth == "whole":
        assert model.frozen is None
        expected_trained = set(conv) | {"bn1", "pre_fc1", "fc1"}
    else:
        expected_trained = {n for n in conv if index(n) > index(cut)} | {"bn1", "pre_fc1", "fc1"}
    assert {name.split(".")[1] for name in trained} == expected_trained
    assert set(trained) | set(frozen) == set(original)
    for name, value in frozen.items():  # the frozen part: SFace exactly
        assert torch.equal(value, original[name]), name
    weights = [name for name in trained if name.endswith("weight")]
    changed = [name for name in weights if not torch.equal(trained[name], original[name])]
    assert set(changed) == set(weights)  # every trained weight moved in the one step
    for name, value in trained.items():  # batch-norm statistics stay SFace's
        if "running_" in name:
            assert torch.equal(value, original[name]), name


@pytest.mark.slow
def test_finetune_depth_benchmark_on_tiny_data(shared_data, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "finetune_depth", REPO / "benchmarks" / "finetune_depth.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "out"
    bench.main(["--data", str(shared_data), "--work", str(tmp_path / "work"), "--out", str(out),
                "--n-train", "16", "--n-test", "6", "--fgnet-limit", "3", "--layer-epochs", "1",
                "--epochs", "1", "--batch-size", "8", "--threads", "1", "--n-jobs", "1",
                "--depths", "layer", "last-stage"])
    result = json.loads((out / "finetune_depth.json").read_text())
    assert set(result["depths"]) == {"layer", "last-stage"}
    stage = result["depths"]["last-stage"]
    assert stage["starts_from"] == "layer" and stage["steps"] == 2
    assert stage["onnx_vs_torch_max_abs_diff"] < 1e-5
    for domain in ("utkface", "utkface-degraded", "fgnet"):
        assert np.isfinite(stage["domains"][domain]["mae"])
    assert stage["domains"]["fgnet"]["gender_accuracy"] is None
    report = (out / "finetune_depth.md").read_text()
    assert "| last-stage | fgnet |" in report
    # the committed results name no path of the machine that ran them
    commands = [result["setup"]["command"], *(r["command"] for r in result["depths"].values())]
    assert all("--work WORK" in c and "--data DATA" in c and "--out OUT" in c for c in commands)
    assert str(tmp_path) not in json.dumps(result) + report


def test_benchmark_uses_no_machine_path_and_no_private_api():
    source = (REPO / "benchmarks" / "finetune_depth.py").read_text()
    assert not re.search(r"[\"']/(?:home|root|work|opt|usr|tmp|mnt)/", source)
    assert not re.findall(r"skagegender(?:\.\w+)*\._\w+", source)
    assert "--out" in source
