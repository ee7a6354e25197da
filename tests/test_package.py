import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_generic_package_names_resolve_to_this_tree():
    code = (
        "import delf, index, verify, tools, sys, pathlib;"
        "print('\\n'.join(str(pathlib.Path(m.__file__).resolve().parent) for m in (delf, index, verify, tools)));"
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    lines = out.stdout.split()
    assert [Path(p) for p in lines[:4]] == [REPO / n for n in ("delf", "index", "verify", "tools")]
    # Importing the packages stays cheap: no TensorFlow until an extractor is built.
    assert lines[4] == "False"


def test_console_command_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "tools.cli", "--help"], capture_output=True, text=True,
                         check=True, cwd=REPO)
    for sub in ("extract", "bench", "demo", "pca"):
        assert sub in out.stdout
