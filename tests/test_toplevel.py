"""One import line: the main names from the top level, lazily; skagegender.load()."""

import json
import subprocess
import sys

import pytest

import skagegender

ONE_LINE = ("from skagegender import AgeGenderModel, ArcFaceEmbedder, AgeRegressor, "
            "GenderClassifier, one_class_off_score")


def _fresh(code):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_one_import_line_works_and_import_stays_light():
    heavy = ["numpy", "sklearn", "onnxruntime", "cv2", "lightgbm", "optuna", "matplotlib"]
    result = _fresh(
        "import json, sys\nimport skagegender\ndir(skagegender)\n"
        f"light = sorted(m for m in {heavy!r} if m in sys.modules)\n"
        f"{ONE_LINE}\n"
        "print(json.dumps({'light': light, 'onnxruntime': 'onnxruntime' in sys.modules, "
        "'names': [AgeGenderModel.__name__, ArcFaceEmbedder.__name__, AgeRegressor.__name__, "
        "GenderClassifier.__name__, one_class_off_score.__name__]}))")
    assert result["light"] == []
    assert result["onnxruntime"] is False  # the classes import without the ONNX runtime
    assert result["names"] == ["AgeGenderModel", "ArcFaceEmbedder", "AgeRegressor",
                               "GenderClassifier", "one_class_off_score"]


@pytest.mark.slow
def test_every_top_level_name_is_the_subpackage_object():
    for name in skagegender.__all__:
        value = getattr(skagegender, name)
        if name in skagegender._NAMES:
            module = getattr(skagegender, skagegender._NAMES[name])
            assert getattr(module, name) is value, name
    assert set(skagegender.__all__) == {"__version__", *skagegender._SUBPACKAGES,
                                        *skagegender._NAMES}
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        skagegender.Nope  # noqa: B018


@pytest.mark.slow
def test_shipped_model_from_the_class_and_the_top_level():
    from skagegender import AgeGenderModel
    from skagegender.pretrained import MODELS, load

    with pytest.raises(TypeError, match=r"shipped models load with skagegender\.load\(\)"):
        AgeGenderModel.load()
    by_class = AgeGenderModel.load(MODELS["default"])
    assert by_class.meta_ == load().meta_ == skagegender.load().meta_
    assert skagegender.load("fast").meta_ == AgeGenderModel.load(MODELS["fast"]).meta_
    assert by_class.meta_ != skagegender.load("fast").meta_
