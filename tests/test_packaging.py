"""What a Python package is expected to carry: licence, py.typed, type hints, a changelog."""

import inspect
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_license_file_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "BSD-3-Clause"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder" in text  # the third clause


def test_changelog_names_the_current_version():
    import skagegender

    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## {skagegender.__version__}" in changelog


def _public_callables():
    from skagegender import metrics, model, pretrained

    for name in metrics.__all__:
        value = getattr(metrics, name)
        if isinstance(value, type):  # the Displays: their constructors
            yield from (value.from_predictions, value.from_estimator)
        elif callable(value) and name != "mean_absolute_error" and not name.endswith("_scorer"):
            yield value
    yield from (pretrained.load, pretrained.model_file, model.evaluate_model,
                model.has_intervals)
    cls = model.AgeGenderModel
    yield from (getattr(cls, name) for name in
                ("fit", "fit_features", "predict", "predict_details", "predict_features",
                 "predict_faces", "save", "load"))


def test_public_api_has_type_hints():
    missing = []
    for func in _public_callables():
        signature = inspect.signature(func)
        if signature.return_annotation is inspect.Signature.empty:
            missing.append(f"{func.__qualname__} -> ?")
        missing += [f"{func.__qualname__}({name})" for name, p in signature.parameters.items()
                    if name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
    assert missing == []


@pytest.mark.slow
def test_wheel_carries_py_typed_and_the_license(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO),
                           "-w", str(tmp_path)], capture_output=True, text=True, timeout=600,
                          check=False)
    if done.returncode != 0 and "No matching distribution" in done.stderr:
        pytest.skip("no package index to build the wheel with")
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("skagegender-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "skagegender/py.typed" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: BSD-3-Clause" in text
    assert any(n.endswith("licenses/LICENSE") for n in names)
