"""examples/ run for real, on a tiny UTKFace subset, so that they cannot rot."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "train_and_evaluate.py"

# Runs the example as `python examples/train_and_evaluate.py ...` would (the script's
# folder first on sys.path), with matplotlib made unimportable (None in sys.modules
# makes `import matplotlib` raise).
WITHOUT_MATPLOTLIB = (
    "import os, runpy, sys\n"
    "sys.modules['matplotlib'] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "sys.path[0] = os.path.dirname(sys.argv[0])\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _run(args, tmp_path, *, prelude=None):
    command = [sys.executable, str(EXAMPLE)] if prelude is None else [
        sys.executable, "-c", prelude, str(EXAMPLE)]
    return subprocess.run(
        [*command, "--root", str(REPO.parent / "shared" / "data" / "UTKFace"),
         "--cache", str(tmp_path / "cache"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )


@pytest.mark.slow
def test_missing_matplotlib_stops_before_any_embedding(shared_data, tmp_path):
    proc = _run(["--limit", "40", "--out", str(tmp_path / "fig.png")], tmp_path,
                prelude=WITHOUT_MATPLOTLIB)
    assert proc.returncode == 1, proc.stderr
    assert 'pip install "skagegender[plot]"' in proc.stderr
    assert "--no-plot" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists()  # nothing was embedded
    assert not (tmp_path / "fig.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("plot", [True, False], ids=["figure", "no-plot"])
def test_trains_evaluates_and_draws_on_a_tiny_subset(shared_data, tmp_path, plot):
    figure = tmp_path / "fig.png"
    args = ["--limit", "40", "--n-jobs", "2", "--out", str(figure)]
    if not plot:
        args.append("--no-plot")
    elif importlib.util.find_spec("matplotlib") is None:
        pytest.skip('matplotlib is not installed (pip install "skagegender[plot]")')
    proc = _run(args, tmp_path, prelude=None if plot else WITHOUT_MATPLOTLIB)
    assert proc.returncode == 0, proc.stderr
    # the default heads fit 32 faces without sklearn's small-data noise (a face
    # that is not found is still named: that warning is information)
    assert "batch_size" not in proc.stderr, proc.stderr
    assert "ConvergenceWarning" not in proc.stderr, proc.stderr
    scores = re.search(r"held-out faces: (\d+)  MAE ([\d.]+)  one-class-off ([\d.]+)%  "
                       r"CS@5 ([\d.]+)%  gender ([\d.]+)%", proc.stdout)
    assert scores, proc.stdout
    n_test, mae = int(scores[1]), float(scores[2])
    assert n_test == 8  # 20 % of 40
    assert 0 < mae < 40  # 32 training faces: far from the headline, but a real fit
    assert (tmp_path / "cache").is_dir()
    if not plot:
        assert not figure.exists()
        return
    from PIL import Image

    with Image.open(figure) as image:
        assert image.format == "PNG"
        assert image.size == (1320, 540)  # 11 x 4.5 inches at 120 dpi
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # bars, points and axes, not a blank canvas
    assert f"figure -> {figure}" in proc.stdout
