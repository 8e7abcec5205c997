"""Every ```python block of README.md runs as written, from the repository root.

Each block runs alone in a fresh interpreter (``python -c``) with the repository root
as working directory, as a reader pasting it would, with ``../shared`` beside the
clone. A block followed by a ```text block must print that text; its numbers may
differ by a little (another CPU rounds differently), its words not at all.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```\n(?:\s*```text\n(.*?)^```)?", re.MULTILINE | re.DOTALL)
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def readme_blocks():
    """(code, expected output or None) of every python block, in README order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return [(code, expected or None) for code, expected in BLOCK.findall(text)]


def same_output(expected, actual):
    """Same words; every number within max(1, 5 %) of the README's."""
    expected, actual = expected.strip(), actual.strip()
    if NUMBER.split(expected) != NUMBER.split(actual):
        return False
    pairs = zip(map(float, NUMBER.findall(expected)), map(float, NUMBER.findall(actual)))
    return all(abs(a - e) <= max(1.0, 0.05 * e) for e, a in pairs)


def test_output_comparison():
    assert same_output("MAE 7.9 years, one-class-off 61 %", "MAE 8.3 years, one-class-off 63 %\n")
    assert not same_output("MAE 7.9 years", "MAE 12.0 years")
    assert not same_output("age 25, female (99 %)", "age 25, male (99 %)")
    assert not same_output("2 faces", "2 faces\nTraceback")


def test_readme_blocks_are_found():
    blocks = readme_blocks()
    assert len(blocks) >= 2
    assert all("../shared/data" in code for code, _ in blocks)  # nothing made-up to open


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(readme_blocks())),
                         ids=lambda i: f"block{i + 1}")
def test_readme_python_block_runs(index, shared_data):
    code, expected = readme_blocks()[index]
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"README python block {index + 1} failed:\n{code}\n{proc.stderr}"
    assert proc.stdout.strip(), "a README block must print something a reader can check"
    if expected is not None:
        assert same_output(expected, proc.stdout), (
            f"README block {index + 1} prints\n{proc.stdout}\nbut the README shows\n{expected}")
