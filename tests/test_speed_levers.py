"""``benchmarks/speed_levers.py``: its graph surgery and map resampling, and smoke runs.

The fast tests check the pieces the measured numbers rest on: the SFace graph
pruned to ``conv_14_relu`` gives the same maps as the whole graph and runs at
smaller crop sizes; the bilinear upsampling through which an s x s map is fed to
the 7 x 7 fine-tuned layer, and its fold into one s x s linear map. The slow ones
run the script's levers through ``main(argv)`` on a few UTKFace and FG-NET images
(results and caches in tmp, never over the committed results); the crop-size
accuracy lever needs torch and is skipped without it.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def levers():
    path = REPO / "benchmarks" / "speed_levers.py"
    spec = importlib.util.spec_from_file_location("speed_levers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("speed_levers", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", [4, 5, 6, 7])
def test_upsample_matrix_interpolates(levers, size):
    u = levers.upsample_matrix(size)
    assert u.shape == (7, size)
    np.testing.assert_allclose(u.sum(axis=1), 1.0)  # a constant map stays constant
    assert (u >= 0).all()
    if size == 7:
        np.testing.assert_array_equal(u, np.eye(7))
    # a linear ramp stays a ramp: samples at the 7 centres of the same span
    ramp = (np.arange(size) + 0.5) / size
    centres = (np.arange(7) + 0.5) / 7
    inside = (centres >= ramp[0]) & (centres <= ramp[-1])
    np.testing.assert_allclose((u @ ramp)[inside], centres[inside], atol=1e-12)


def test_upsampled_view_and_folded_linear_map_agree(levers):
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((5, 3, 4, 4)).astype(np.float16)
    view = levers.Upsampled(maps)
    assert len(view) == 5 and view.shape == (5, 3, 7, 7)
    rows = np.array([4, 1])
    up = view[rows]
    assert up.shape == (2, 3, 7, 7) and up.dtype == np.float32
    np.testing.assert_allclose(up.mean(axis=(2, 3)),
                               maps[rows].astype(np.float32).mean(axis=(2, 3)), atol=0.2)
    weight = rng.standard_normal((2, 3 * 7 * 7))
    folded = levers.fold_linear(weight, 4)
    assert folded.shape == (2, 3 * 4 * 4)
    np.testing.assert_allclose(up.reshape(2, -1) @ weight.T,
                               maps[rows].astype(np.float64).reshape(2, -1) @ folded.T,
                               rtol=1e-3, atol=1e-3)
    seven = rng.standard_normal((5, 3, 7, 7)).astype(np.float32)
    np.testing.assert_array_equal(levers.Upsampled(seven)[rows], seven[rows])  # as they are


def test_pruned_sface_graph_matches_the_whole_graph(levers, tmp_path):
    from skagegender.embedding import sface_maps

    crops = np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    path = levers.sface_graph("cut14", tmp_path)
    session = levers.ort_session(path)
    assert [o.name for o in session.get_outputs()] == ["conv_14_relu"]
    import onnx

    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not ops & {"Gemm", "Flatten"}  # the embedding layer after conv_14 is gone
    maps = session.run(None, {"data": levers.blob_of(crops)})[0]
    np.testing.assert_allclose(maps, sface_maps(crops), rtol=1e-4, atol=1e-3)
    small = session.run(None, {"data": levers.blob_of(levers.resize_crops(crops, 64))})[0]
    assert small.shape == (2, 1024, 4, 4)


def test_measure_reports_medians_per_item(levers):
    calls = []
    result = levers.measure(lambda: calls.append(1), 4, 3)
    assert len(calls) == 4  # a warm-up, then the repeats
    assert result["repeats"] == 3
    assert 0 <= result["wall_best_ms"] <= result["wall_ms"] and result["cpu_ms"] >= 0


def _argv(shared_data, tmp_path, *levers_and_options):
    return ["--data", shared_data, "--out-dir", tmp_path / "out", "--cache-dir",
            tmp_path / "cache", "--limit", 60, "--repeats", 1, "--n-crops", 8,
            *levers_and_options]


@pytest.mark.slow
def test_timing_levers_smoke(levers, shared_data, tmp_path):
    report = levers.main(list(map(str, _argv(
        shared_data, tmp_path, "--levers", "crop", "int8", "ort", "outputs", "njobs",
        "--sizes", "112", "64", "--n-calibration", "4", "--n-int8-accuracy", "24",
        "--n-njobs", "12", "--njobs-repeats", "1"))))
    saved = json.loads((tmp_path / "out" / "speed_levers.json").read_text())
    assert set(saved) >= {"crop", "int8", "ort", "outputs", "njobs"}
    crop = {(r["graph"], r["size"], r["batch"]): r for r in saved["crop"]["rows"]}
    assert crop[("cut at conv_14_relu", 64, 1)]["map_shape"] == [1024, 4, 4]
    # a 64 px crop is 1/3 of the multiply-adds of a 112 px one
    assert (crop[("cut at conv_14_relu", 64, 8)]["cpu_ms"]
            < crop[("cut at conv_14_relu", 112, 8)]["cpu_ms"])
    variants = {r["variant"] for r in saved["int8"]["rows"]}
    assert "float32" in variants and len(variants) == 5
    assert all(r["cpu_ms"] > 0 for r in saved["int8"]["rows"] if "error" not in r)
    settings = {r["setting"] for r in saved["ort"]["rows"]}
    assert "level all (shipped)" in settings and len(settings) == 10
    assert saved["ort"]["rows"][-1]["cores"] == len(levers.all_cores())
    heads = saved["outputs"]["heads"]
    assert heads["default"]["n_features"] > heads["fast"]["n_features"]
    assert len(heads["default"]["age_head"]["reads"]) == 2  # the two age experts
    assert saved["njobs"]["n_images"] == 12 and saved["njobs"]["ratio"] > 0
    runs = saved["njobs"]["runs"]
    if runs["2"][0]["workers_cpu_s"] is not None:  # psutil installed
        # with n_jobs=2 the work runs in the joblib workers, with n_jobs=1 in this process
        assert runs["2"][0]["workers_cpu_s"] > runs["1"][0]["workers_cpu_s"]
        assert runs["2"][0]["workers_cpu_s"] > runs["2"][0]["parent_cpu_s"]
    text = (tmp_path / "out" / "speed_levers.md").read_text()
    for heading in ("## 1. SFace on smaller", "## 2. int8", "## 3. onnxruntime", "## 4. n_jobs",
                    "## 5. Compute only"):
        assert heading in text
    assert "--levers crop int8 ort outputs njobs" in text
    assert "| n_jobs | wall s per run | CPU s per run (this process + workers) |" in text
    assert report["crop"]["n_crops"] == 8


@pytest.mark.slow
def test_crop_accuracy_lever_smoke(levers, shared_data, tmp_path):
    pytest.importorskip("torch")
    argv = _argv(shared_data, tmp_path, "--levers", "accuracy", "--sizes", "112", "64",
                 "--fgnet-limit", "8")
    argv[argv.index("--limit") + 1] = 200  # 160 training faces: more than one batch of 128
    levers.main(list(map(str, argv)))
    result = json.loads((tmp_path / "out" / "speed_levers.json").read_text())["accuracy"]
    assert result["n_train"] >= 128 and result["n_test"] >= 30
    assert result["n_fgnet_images"] == 8 and 0 < result["n_fgnet"] <= 8
    rows = {r["size"]: r for r in result["rows"]}
    assert rows[112]["map_shape"] == [1024, 7, 7] and rows[64]["map_shape"] == [1024, 4, 4]
    for row in rows.values():
        for key in ("utkface_mae", "degraded_mae", "fgnet_mae"):
            assert math.isfinite(row[key]) and 0 < row[key] < 40
        # SFace's own weights carry gender from the start: far above chance
        assert row["gender_accuracy"] > 0.7
    assert "| 64 | 1024x4x4 |" in (tmp_path / "out" / "speed_levers.md").read_text()
