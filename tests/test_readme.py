"""The README's Python example runs as written, from the checkout's root, and says what it shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_example_runs_as_written():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no Python example"
    out = subprocess.run([sys.executable, "-c", blocks[0]], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    # The held-out photo of Lund matches another photo of Lund, never itself.
    match, best, confidence = lines[0].split()
    assert match == "True" and best.startswith("lund_") and best != "lund_10.jpg"
    assert float(confidence) >= 0.9
    # Three result rows, then the pair: two neighbouring photos verify with many inliers.
    assert len(lines) == 5
    inliers, pair_confidence = lines[4].split()
    assert int(inliers) > 50 and float(pair_confidence) > 0.9
