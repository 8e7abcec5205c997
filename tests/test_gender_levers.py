"""benchmarks/gender_levers.py: its measures on made-up numbers, and a smoke run on tiny data.

The smoke run works on a folder of symbolic links to UTKFace and FG-NET images of the
shared data (never copies), with caches, the out-of-fold file, the work folder and
the results in temporary folders.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gender_levers.py"
N_LINKED, LIMIT, N_VARIANTS, N_MIRROR = 220, 200, 20, 10


@pytest.fixture(scope="module")
def levers():
    spec = importlib.util.spec_from_file_location("gender_levers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_machine_paths_and_the_options():
    source = SCRIPT.read_text()
    assert not re.search(r"[\"']/(?:home|root|work|opt|usr|tmp|mnt)/", source)
    assert "--limit" in source and "--out-dir" in source


def test_gray_copy_has_equal_channels_and_the_luminance(levers):
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    gray = levers.gray_copy(bgr)
    assert gray.shape == bgr.shape and gray.dtype == np.uint8
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    luminance = bgr @ np.array([0.114, 0.587, 0.299])
    assert np.abs(gray[..., 0] - luminance).max() <= 1.0
    # a gray image is its own gray copy
    assert (levers.gray_copy(gray) == gray).all()
    mirrored = levers.mirror_copy(bgr)
    assert (mirrored[:, 0] == bgr[:, -1]).all() and (levers.mirror_copy(mirrored) == bgr).all()


def test_accuracy_flip_rate_and_missed_faces(levers):
    female = np.array([1, 0, 1, 0, 1.0])
    p = np.array([0.9, 0.2, 0.4, np.nan, 0.6])
    correct = levers.correct_of(p, female)
    assert correct.tolist() == [True, True, False, False, True]  # NaN (missed) is wrong
    acc = levers.accuracy_by_group(correct, np.array([5, 30, 70, 8, 15.0]))
    assert acc["all"] == pytest.approx(0.6)
    assert acc["0-12"] == pytest.approx(0.5) and acc["60+"] == 0.0
    assert acc["13+"] == pytest.approx(2 / 3)
    rate, n = levers.flip_rate(p, np.array([0.1, 0.3, 0.45, 0.5, np.nan]))
    assert n == 3 and rate == pytest.approx(1 / 3)  # only the first flips


def test_age_aware_stacker_learns_a_slope_per_age_group(levers):
    # the MLP's logit is informative for adults and noise for children, the dlib one the
    # other way round: only the per-group stacker can use each where it is good
    rng = np.random.default_rng(0)
    n = 4000
    female = rng.integers(0, 2, n).astype(float)
    age = np.where(rng.random(n) < 0.5, rng.uniform(1, 12, n), rng.uniform(20, 70, n))
    kid = age < 13
    sign = 2 * female - 1

    def prob(good):
        z = np.where(good, 2 * sign + rng.normal(0, 1, n), rng.normal(0, 4, n))
        return 1 / (1 + np.exp(-z))

    probs = [prob(~kid), prob(kid), np.full(n, 0.5)]
    train, test = np.arange(n) < 3000, np.arange(n) >= 3000
    scores = {}
    for by_age in (False, True):
        stacker = levers.Stacker(by_age).fit([q[train] for q in probs], age[train],
                                             female[train])
        p = stacker.predict([q[test] for q in probs], age[test])
        scores[by_age] = levers.correct_of(p, female[test]).mean()
    assert scores[True] > 0.9 and scores[True] > scores[False] + 0.05
    z = levers.stack_features(*probs, age, True)
    assert z.shape == (n, 3 * 3 + 3 + 1)
    nan_probs = [np.r_[np.nan, probs[0][1:]], probs[1], probs[2]]
    assert np.isnan(stacker.predict(nan_probs, age)[0])
    # a fold without rows of some set (small subsets) predicts nothing, without error
    assert stacker.predict([q[:0] for q in probs], age[:0]).shape == (0,)


@pytest.mark.slow
def test_smoke_run_on_tiny_data(shared_data, tmp_path):
    pytest.importorskip("torch")  # the script re-trains the fold layers (skagegender[train])
    data = tmp_path / "data"
    paths = sorted((shared_data / "UTKFace").glob("*.jpg"))
    (data / "UTKFace").mkdir(parents=True)
    for path in paths[5 :: len(paths) // N_LINKED][:N_LINKED]:
        (data / "UTKFace" / path.name).symlink_to(path)
    # the script does not use FG-NET, but the recipe's loader embeds it: a few images
    (data / "FGNET" / "images").mkdir(parents=True)
    for name in ("001A02.JPG", "002A29.JPG"):
        (data / "FGNET" / "images" / name).symlink_to(shared_data / "FGNET" / "images" / name)
    # made-up out-of-fold layer outputs (the real file comes from the full data): the
    # run replaces the fine-tuned columns with them and re-trains the 5 fold layers
    rng = np.random.default_rng(0)
    n_degraded = round(6000 * LIMIT / 18978)
    oof = np.concatenate([rng.dirichlet(np.ones(101), LIMIT), rng.random((LIMIT, 1))], 1)
    doof = np.concatenate([rng.dirichlet(np.ones(101), n_degraded),
                           rng.random((n_degraded, 1))], 1)
    oof_file = tmp_path / "oof.npz"
    np.savez(oof_file, oof=oof.astype(np.float32), doof=doof.astype(np.float32),
             fold=np.arange(LIMIT) % 5)
    out = tmp_path / "results"
    argv = ["--data", data, "--cache", tmp_path / "emb", "--maps", tmp_path / "maps",
            "--oof", oof_file, "--work-dir", tmp_path / "work", "--limit", LIMIT,
            "--n-variants", N_VARIANTS, "--n-mirror", N_MIRROR, "--out-dir", out]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, SCRIPT, *map(str, argv)], check=False,
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "gender_levers.json").read_text())
    assert result["n_utkface"] == LIMIT and result["n_degraded"] == n_degraded
    assert result["n_subset"] == N_VARIANTS and result["n_mirror"] == N_MIRROR
    assert result["oof_finetuned_columns"]
    assert np.isfinite(result["fold_layer_check_max_abs_diff"])
    lev = result["levers"]
    assert {"mlp", "dlib", "finetuned", "stack", "stack-age", "gray-aug", "child-head",
            "gray-tta", "mirror-tta"} <= set(lev)
    for name, r in lev.items():
        if name != "mirror-tta":
            assert 0 <= r["subset_color"]["all"] <= 1 and 0 <= r["subset_gray"]["all"] <= 1
    assert 0 <= lev["mirror-tta"]["mirror_subset_color"]["all"] <= 1
    # real features: the MLP and the dlib network beat chance; the made-up P(female) does not
    assert lev["mlp"]["utkface"]["all"] > 0.7 and lev["dlib"]["utkface"]["all"] > 0.7
    assert lev["finetuned"]["utkface"]["all"] < 0.7
    assert 0 <= lev["mlp"]["gray_flip_rate"] <= 1 and lev["mlp"]["gray_flip_n"] > 0
    text = (out / "gender_levers.md").read_text()
    assert "benchmarks/gender_levers.py" in text and "| mlp |" in text
    # the work folder caches the copies: a second run reads them back
    assert sorted(p.name for p in (tmp_path / "work").glob("*.npz"))
