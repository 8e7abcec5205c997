"""The engine that runs the networks: OpenVINO and onnxruntime give the same answers.

Tolerances (between the two engines, float32 both):

- one network on the same input: outputs within 1e-5 absolute (measured: ~2e-6);
- a shipped model end to end on real photos, with OpenVINO throughout or ``auto``
  (OpenVINO for SFace, onnxruntime for the rest): the same faces,
  landmarks within 1e-3 px, feature rows within 1e-3 absolute (measured 4.2e-4, on
  the dlib age probabilities: YuNet's landmarks differ by ~3e-5 px, which moves
  some pixels of the uint8 crops by one level), ages within 0.05 years, gender
  probabilities within 1e-3, the same genders; with the same detector, features
  within 1e-5. The feature cache is shared by the engines on the strength of these
  bounds.

The tests that need OpenVINO skip where the ``openvino`` package is missing; the
``[test]`` extra installs it.
"""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from skagegender.embedding import _runtime
from skagegender.embedding._runtime import RUNTIME_ENV, runtime_name

HAS_OPENVINO = _runtime.importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")


def test_runtime_name_follows_the_environment(monkeypatch):
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    assert runtime_name() == ("openvino" if HAS_OPENVINO else "onnxruntime")  # SFace's
    assert runtime_name(auto="onnxruntime") == "onnxruntime"  # the other networks'
    monkeypatch.setenv(RUNTIME_ENV, "auto")
    assert runtime_name(auto="openvino") == ("openvino" if HAS_OPENVINO else "onnxruntime")
    assert runtime_name(auto="onnxruntime") == "onnxruntime"
    monkeypatch.setenv(RUNTIME_ENV, " ONNXRuntime ")
    assert runtime_name() == runtime_name(auto="onnxruntime") == "onnxruntime"
    monkeypatch.setenv(RUNTIME_ENV, "openvino")
    assert runtime_name() == runtime_name(auto="onnxruntime") == "openvino"
    monkeypatch.setenv(RUNTIME_ENV, "tensorrt")
    with pytest.raises(ValueError, match="onnxruntime, openvino or auto, got 'tensorrt'"):
        runtime_name()
    with pytest.raises(ValueError, match="runtime must be one of"):
        _runtime.make_session(b"", runtime="tvm")


def test_openvino_asked_for_but_missing_says_how_to_install(monkeypatch):
    if HAS_OPENVINO:
        # the real import, made to fail: a None entry in sys.modules stops it
        monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setattr(_runtime, "_core", None)
    with pytest.raises(ImportError, match=r"pip install 'skagegender\[openvino\]'"):
        _runtime.OpenVINOSession(b"")


@pytest.mark.slow
def test_importing_skagegender_loads_no_engine():
    code = ("import sys, json, skagegender, skagegender.cli, skagegender.embedding\n"
            "print(json.dumps([m for m in ('openvino', 'onnxruntime') if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, RUNTIME_ENV: "openvino"}, check=True, timeout=120)
    assert json.loads(done.stdout) == []


# -- one network, the same input ------------------------------------------------


@pytest.fixture(scope="module")
def network_inputs(portrait):
    """Real inputs of every network: the portrait's YuNet blob, crop, chips and maps."""
    from skagegender.embedding import load_image
    from skagegender.embedding._backbones import SFACE_MAP_LAYER, sface_maps
    from skagegender.embedding._chipnets import chip_blob, cut_chip
    from skagegender.embedding._detection import align_face

    rgb = load_image(portrait)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = bgr.shape[:2]
    blob = np.zeros((1, 3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
    blob[0, :, :h, :w] = bgr.transpose(2, 0, 1)
    # landmarks of the face, from onnxruntime's YuNet (only the input matters here)
    from skagegender.embedding import ArcFaceEmbedder

    (face,) = ArcFaceEmbedder().detect_faces(portrait)
    crop = align_face(bgr, face.landmarks)
    crops = np.stack([crop, crop[:, ::-1]])
    return {
        "yunet": {"input": blob},
        "sface": {"data": np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2),
                                               dtype=np.float32)},
        "dlib_age": {"images": chip_blob(np.stack([cut_chip(bgr, face.landmarks, 64)] * 2))},
        "dlib_gender": {"images": chip_blob(np.stack([cut_chip(bgr, face.landmarks, 32)] * 2))},
        "sface_finetuned": {"maps": sface_maps(crops, layer=SFACE_MAP_LAYER, color="bgr")},
    }


def _network_file(name):
    from skagegender.embedding._assets import (
        SFACE,
        YUNET,
        converted_model,
        verified_path,
    )
    from skagegender.embedding._chipnets import CHIP_NETS
    from skagegender.embedding._finetuned import SFACE_FINETUNED

    if name == "yunet":
        return converted_model(YUNET, symbolic_dims={2: "height", 3: "width"})
    if name == "sface":
        return converted_model(SFACE, symbolic_dims={0: "batch"},
                               pooled_layers=("conv_14_relu",), raw_layers=("conv_14_relu",))
    if name == "sface_finetuned":
        return verified_path(SFACE_FINETUNED.asset)
    return verified_path(CHIP_NETS[name].asset)


@needs_openvino
@pytest.mark.slow
@pytest.mark.parametrize("name", ["yunet", "sface", "dlib_age", "dlib_gender",
                                  "sface_finetuned"])
def test_each_network_gives_the_same_outputs_in_both_engines(name, network_inputs):
    path = _network_file(name)
    ort = _runtime.make_session(path, runtime="onnxruntime")
    ov = _runtime.make_session(path, runtime="openvino")
    assert isinstance(ov, _runtime.OpenVINOSession)
    assert [p.name for p in ov.get_inputs()] == [p.name for p in ort.get_inputs()]
    names = [p.name for p in ort.get_outputs()]
    assert [p.name for p in ov.get_outputs()] == names  # YuNet's too ("cls_8", not "291")
    feed = network_inputs[name]
    expected = ort.run(None, feed)
    got = ov.run(None, feed)
    assert len(got) == len(expected)
    for a, b in zip(expected, got):
        assert a.shape == b.shape and b.dtype == np.float32
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4)
    # outputs by name, in any order, alone
    subset = names[::-1][:2]
    for a, b in zip(ort.run(subset, feed), ov.run(subset, feed)):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="no outputs"):
        ov.run(["no_such_output"], feed)


@needs_openvino
@pytest.mark.slow
def test_yunet_outputs_keep_their_onnx_names_compiled_or_from_the_cache(monkeypatch, tmp_path):
    # a fresh compilation names the first output {"cls_8", "291"}; a cached one {"cls_8"}
    path = _network_file("yunet")
    names = {}
    for cached in (False, True, True):  # no cache, a cold cache, a warm cache
        folder = tmp_path / "openvino" if cached else None
        monkeypatch.setattr(_runtime, "_cache_folder", lambda folder=folder: folder)
        session = _runtime.make_session(path, runtime="openvino")
        names[cached] = [p.name for p in session.get_outputs()]
        assert names[cached][:6] == ["cls_8", "cls_16", "cls_32", "obj_8", "obj_16", "obj_32"]
    assert any((tmp_path / "openvino").iterdir())  # the cache was written


@needs_openvino
@pytest.mark.slow
def test_user_fine_tuned_weights_run_in_openvino(monkeypatch, network_inputs):
    from skagegender.embedding._finetuned import (
        FINETUNED_WEIGHT_ARRAYS,
        FineTunedWeights,
    )

    rng = np.random.default_rng(0)
    weights = FineTunedWeights({
        key: (rng.normal(scale=0.01, size=shape)).astype(dtype)
        for key, (shape, dtype) in FINETUNED_WEIGHT_ARRAYS.items()})
    maps = network_inputs["sface_finetuned"]["maps"]
    monkeypatch.setenv(RUNTIME_ENV, "onnxruntime")
    expected = weights.outputs(maps)
    monkeypatch.setenv(RUNTIME_ENV, "openvino")
    session = weights.session()
    assert isinstance(session, _runtime.OpenVINOSession)
    np.testing.assert_allclose(weights.outputs(maps, session=session), expected,
                               atol=1e-6, rtol=1e-4)


@needs_openvino
@pytest.mark.slow
def test_one_openvino_session_serves_several_threads(network_inputs):
    session = _runtime.make_session(_network_file("dlib_age"), runtime="openvino")
    images = network_inputs["dlib_age"]["images"]
    feeds = [images * scale for scale in (1.0, 0.5, 0.25, 0.0)]
    expected = [session.run(None, {"images": feed})[0] for feed in feeds]
    results = {}

    def work(i):
        for _ in range(20):
            out = session.run(None, {"images": feeds[i]})[0]
            if not np.array_equal(out, expected[i]):
                results[i] = out
                return
        results.setdefault(i, None)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(feeds))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == dict.fromkeys(range(len(feeds)))  # each thread got its own answers


def test_other_providers_than_the_cpu_are_onnxruntime_sessions(monkeypatch):
    import onnxruntime

    monkeypatch.setenv(RUNTIME_ENV, "openvino")
    with pytest.warns(RuntimeWarning, match="falling back") if (
            "CUDAExecutionProvider" not in onnxruntime.get_available_providers()) else (
            _no_warning()):
        session = _runtime.make_session(_network_file("dlib_gender"),
                                        providers=["CUDAExecutionProvider"])
    assert isinstance(session, onnxruntime.InferenceSession)


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


# -- the shipped models end to end ---------------------------------------------


def _faces_by_runtime(monkeypatch, name, paths):
    from skagegender.pretrained import load

    out = {}
    for runtime in ("onnxruntime", "openvino", "auto"):
        monkeypatch.setenv(RUNTIME_ENV, runtime)
        model = load(name)
        faces = [model.embedder_.detect_faces(path) for path in paths]
        details = [model.predict_features(np.stack([f.embedding for f in found]))
                   for found in faces]
        out[runtime] = (faces, details)
    return out


@needs_openvino
@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["default", "fast"])
def test_shipped_models_predict_the_same_in_both_engines(name, monkeypatch, group_photo,
                                                         portrait, shared_data):
    fgnet = shared_data / "FGNET" / "images"
    paths = [group_photo, portrait, *(str(fgnet / f) for f in ("001A02.JPG", "002A29.JPG"))]
    result = _faces_by_runtime(monkeypatch, name, paths)
    faces_a, details_a = result["onnxruntime"]
    for runtime in ("openvino", "auto"):  # OpenVINO throughout; for SFace and compact only
        faces_b, details_b = result[runtime]
        assert [len(f) for f in faces_a] == [len(f) for f in faces_b] == [6, 1, 1, 1]
        for found_a, found_b, da, db in zip(faces_a, faces_b, details_a, details_b):
            for fa, fb in zip(found_a, found_b):
                np.testing.assert_allclose(fb.landmarks, fa.landmarks, atol=1e-3)
                if runtime == "auto":  # the same detector
                    np.testing.assert_array_equal(fb.landmarks, fa.landmarks)
                np.testing.assert_allclose(fb.embedding, fa.embedding, atol=2e-3)
            np.testing.assert_allclose(db["age"], da["age"], atol=0.05)
            np.testing.assert_allclose(db["gender_probability"], da["gender_probability"],
                                       atol=1e-3)
            np.testing.assert_array_equal(db["gender"], da["gender"])


# -- the benchmarks' runtime options ------------------------------------------


def _benchmark(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / name
    spec = _runtime.importlib.util.spec_from_file_location(name.removesuffix(".py"), path)
    module = _runtime.importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_benchmark_names_the_engines_and_summarises_them(monkeypatch):
    throughput = _benchmark("throughput.py")
    monkeypatch.setenv(RUNTIME_ENV, "onnxruntime")
    assert throughput.runtime_label(None) == "onnxruntime"
    assert throughput.runtime_label("openvino") == "openvino"
    auto = ("auto: SFace and compact openvino, others onnxruntime" if HAS_OPENVINO
            else "onnxruntime")
    assert throughput.runtime_label("auto") == auto
    assert os.environ[RUNTIME_ENV] == "onnxruntime"  # restored
    assert throughput._runtime_env("openvino")[RUNTIME_ENV] == "openvino"
    assert throughput._runtime_env(None)[RUNTIME_ENV] == "onnxruntime"

    def run(model, runtime, cpu):
        return {"model": model, "runtime": runtime, "cpu": cpu, "wall": cpu, "n_images": 10,
                "found": 10, "load": "1.00 1.00 1.00"}

    side = {"UTKFace": {
        "default": [run("default", "onnxruntime", 3.0), run("default", "onnxruntime", 5.0)],
        "default, openvino": [run("default", "openvino", 2.0)],
        "peer": [{"cpu": 1.0, "wall": 1.0, "n_images": 10, "found": 10, "load": "1.0"}]}}
    report = {"side_by_side": {"runs": side},
              "stages_by_runtime": {"onnxruntime": {"networks_ms_default": 30.0},
                                    "openvino": {"networks_ms_default": 15.0}}}
    lines = throughput.runtime_summary(report)
    assert "| default | onnxruntime | 400.0 | 0.25x | 30.0 |" in lines  # median of 3 and 5 s
    assert "| default | openvino | 200.0 | 0.50x | 15.0 |" in lines
    report["stages_by_runtime"].pop("openvino")  # one engine: no summary
    assert throughput.runtime_summary(report) == []


@needs_openvino
@pytest.mark.slow
def test_startup_benchmark_runs_each_engine(portrait, tmp_path):
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "startup.py"
    env = {k: v for k, v in os.environ.items() if k != RUNTIME_ENV}
    subprocess.run([sys.executable, str(script), "--image", portrait, "--runs", "1",
                    "--warmup", "0", "--model", "fast", "--runtime", "onnxruntime",
                    "--runtime", "openvino", "--out", str(tmp_path)],
                   env=env, check=True, capture_output=True, timeout=600)
    report = json.loads((tmp_path / "startup.json").read_text())
    assert {key: r["runtime"] for key, r in report["models"].items()} == {
        "fast, onnxruntime": "onnxruntime", "fast, openvino": "openvino"}
    ort_run, = report["models"]["fast, onnxruntime"]["runs"]
    ov_run, = report["models"]["fast, openvino"]["runs"]
    assert "face 1: age" in ort_run["stdout"] and "face 1: age" in ov_run["stdout"]
    # each engine alone is loaded: OpenVINO throughout never imports onnxruntime
    assert "onnxruntime" in ort_run["loaded"]["load_end"]
    assert "openvino" not in ort_run["loaded"]["load_end"]
    assert "openvino" in ov_run["loaded"]["load_end"]
    assert "onnxruntime" not in ov_run["loaded"]["load_end"]
    assert "runtime openvino" in (tmp_path / "startup.md").read_text()
