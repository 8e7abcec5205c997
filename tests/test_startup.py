"""Start-up of the command line (issue 15): what each step imports, hashes and builds.

Behaviour, not timings: each check runs in a fresh Python process and looks at
``sys.modules``, at the files Python opens (hashing a file opens it; onnxruntime
reads models without Python) and at the onnxruntime sessions created.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Never needed to predict with a shipped model whose conversions are cached.
NEVER = ("lightgbm", "matplotlib", "onnx", "optuna", "skops", "torch", "tqdm")
#: Not needed until a model is loaded.
FOR_THE_MODEL = ("joblib", "numpy", "onnxruntime", "pandas", "scipy", "sklearn")
#: Not needed until an image is read.
FOR_IMAGES = ("PIL", "cv2")

PREAMBLE = r"""
import json, os, sys

opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0]))
                 if event == "open" and args and str(args[0]).endswith(".onnx") else None)

def loaded(names):
    return sorted(name for name in names if name in sys.modules)

def report(**extra):
    print(json.dumps({"opened": opened, **extra}))
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The model cache (the tests' own SKAGEGENDER_HOME when set), warm: every shipped model
    converted and its files on the record of verified files.

    A process that converts a model does not hash its own conversion; the next process
    hashes it once and records it. So two processes load every shipped model here,
    whatever ran before in this cache (a fresh one, or tests in another order).
    """
    home = os.environ.get("SKAGEGENDER_HOME") or str(tmp_path_factory.mktemp("home"))
    for _ in range(2):
        run_python("from skagegender.pretrained import MODELS, load\n"
                   "for name in MODELS:\n    load(name)\nreport()\n", home)
    return home


def run_python(code, home, *, timeout=300):
    """Run ``code`` after PREAMBLE in a fresh interpreter; the JSON it printed last."""
    env = {**os.environ, "SKAGEGENDER_HOME": home}
    done = subprocess.run([sys.executable, "-c", PREAMBLE + code], capture_output=True,
                          text=True, env=env, cwd=REPO, check=False, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["skagegender", "skagegender.cli", "skagegender.pretrained",
                                    "skagegender.__main__"])
def test_importing_loads_no_heavy_dependency(module, home):
    if module == "skagegender.__main__":  # runs the command: ask only for its version
        code = ("sys.argv = ['skagegender', '--version']\n"
                "try:\n    import skagegender.__main__\nexcept SystemExit:\n    pass\n")
        heavy = NEVER + FOR_IMAGES + ("onnxruntime",)
    else:
        code = f"import {module}\n"
        heavy = NEVER + FOR_THE_MODEL + FOR_IMAGES
    result = run_python(code + f"report(heavy=loaded({list(heavy)!r}))", home)
    assert result["heavy"] == []


@pytest.mark.parametrize("name", ["default", "fast"])
def test_loading_a_shipped_model_builds_sessions_once_and_imports_what_it_uses(name, home):
    warm = f"from skagegender.pretrained import load\nload({name!r})\nreport()\n"
    run_python(warm, home)  # converts (once) and records the verified files
    code = (
        "import onnxruntime as ort\n"
        "built = []\n"
        "original = ort.InferenceSession.__init__\n"
        "def counted(self, path_or_bytes, *args, **kwargs):\n"
        "    built.append(os.path.basename(str(path_or_bytes)))\n"
        "    original(self, path_or_bytes, *args, **kwargs)\n"
        "ort.InferenceSession.__init__ = counted\n"
        "from skagegender.pretrained import load\n"
        f"model = load({name!r})\n"
        f"heavy = loaded({list(NEVER + FOR_IMAGES)!r})\n"
        f"again = load({name!r})\n"
        "report(built=built, heavy=heavy, dim=model.embedder_.backbone_info().embedding_dim)\n"
    )
    result = run_python(code, home)
    assert result["heavy"] == []  # no skops, onnx, torch ...; cv2 and PIL wait for images
    assert result["built"], "no onnxruntime session was built"
    assert len(result["built"]) == len(set(result["built"]))  # each network once per process
    assert result["opened"] == []  # nothing hashed: the record of verified files holds


def test_predict_one_image_hashes_nothing_and_builds_each_session_once(home, shared_data):
    images = shared_data / "FGNET" / "images"
    paths = [str(images / "001A02.JPG"), str(images / "002A29.JPG")]
    code = (
        "import onnxruntime as ort\n"
        "built = []\n"
        "original = ort.InferenceSession.__init__\n"
        "def counted(self, path_or_bytes, *args, **kwargs):\n"
        "    built.append(os.path.basename(str(path_or_bytes)))\n"
        "    original(self, path_or_bytes, *args, **kwargs)\n"
        "ort.InferenceSession.__init__ = counted\n"
        "from skagegender.cli import main\n"
        f"code = main(['predict', '--jsonl', *{paths!r}])\n"
        f"report(code=code, built=built, heavy=loaded({list(NEVER)!r}))\n"
    )
    run_python(code, home)  # warms the conversion cache and the record
    result = run_python(code, home)
    assert result["code"] == 0
    assert result["heavy"] == []
    assert len(result["built"]) == len(set(result["built"])) >= 2  # YuNet, SFace, ...: once
    assert result["opened"] == []


@pytest.mark.slow
def test_startup_benchmark_runs_and_writes_its_results(tmp_path, shared_data, home):
    out = tmp_path / "results"
    image = shared_data / "FGNET" / "images" / "001A02.JPG"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "startup.py"), "--runs", "2", "--warmup", "0",
         "--image", str(image), "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "SKAGEGENDER_HOME": home},
        check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "startup.json").read_text())
    (result,) = report["models"].values()
    assert len(result["runs"]) == 2
    for run in result["runs"]:
        assert "001A02.JPG face 1: age" in run["stdout"]
        for kind in ("wall", "cpu"):
            times = run[kind]
            assert all(times[stage] >= 0 for stage in ("interpreter", "import", "parser",
                                                       "load_model", "first_image", "exit"))
            assert 0 < times["before_first_image"] < times["total"] < 300
            assert times["before_first_image"] == pytest.approx(
                times["interpreter"] + times["import"] + times["parser"] + times["load_model"])
        assert "onnxruntime" in run["loaded"]["load_end"]
        assert "onnxruntime" not in run["loaded"]["imported"]
    summary = result["summary"]["wall"]
    assert summary["min"]["total"] <= summary["median"]["total"]
    text = (out / "startup.md").read_text()
    assert "before_first_image" in text and "--model default" in text
