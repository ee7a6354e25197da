"""The layers import only downstream, and no modules import each other in a circle.

Layers, lowest first (docs/design.md): common; delf and verify (side by side:
neither imports the other); index; engine; evaluation; tools. A module may
import its own package and any package of a lower layer. Every import counts,
also one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"common": 0, "delf": 1, "verify": 1, "index": 2, "engine": 3, "evaluation": 4, "tools": 5}


def modules(root: Path, packages=LAYERS) -> dict[str, Path]:
    """{dotted module name: file} of every module of ``packages`` under ``root``."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def from_module(name: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` in module ``name`` reads from."""
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path, known: dict) -> set[str]:
    """Project modules that ``name`` imports anywhere in its file."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = from_module(name, is_pkg, node)
            # `from pkg import sub` imports the module pkg.sub when there is one.
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def violations(root: Path = ROOT, layers=LAYERS) -> list[str]:
    """Upward or sideways imports between packages, and import circles between modules."""
    known = modules(root, layers)
    graph = {m: imports(m, p, known) for m, p in known.items()}
    bad = []
    for m, deps in sorted(graph.items()):
        pm = m.split(".")[0]
        for d in sorted(deps):
            pd = d.split(".")[0]
            if pd != pm and layers[pd] >= layers[pm]:
                bad.append(f"{known[m].relative_to(root)}: imports {d} ({pd} is not below {pm})")
    # Circles: depth-first search for a back edge. A package's __init__ that
    # re-exports its submodules is not part of a circle through them.
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if m.startswith(d + ".") and known[d].name == "__init__.py":
                continue  # a submodule importing its own package's __init__
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d] if d in stack else [m, d]
                bad.append("import circle: " + " -> ".join(cycle))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return bad


def test_the_layers_import_only_downstream_and_without_circles():
    assert violations() == []


def _write(root: Path, files: dict) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_check_fails_on_an_upward_import_and_on_a_circle(tmp_path):
    clean = {"common/__init__.py": "", "common/files.py": "import os\n",
             "delf/__init__.py": "from .conf import X\n", "delf/conf.py": "from common.files import os\nX = 1\n",
             "verify/__init__.py": "", "index/__init__.py": "from delf.conf import X\n",
             "engine/__init__.py": "", "evaluation/__init__.py": "", "tools/__init__.py": "import engine\n"}
    _write(tmp_path, clean)
    assert violations(tmp_path) == []
    # An upward import hidden inside a function is caught.
    _write(tmp_path, {"common/files.py": "import os\n\ndef f():\n    from index import X\n"})
    assert any("common/files.py: imports index" in v for v in violations(tmp_path))
    # Sideways: delf and verify share a layer and must not import each other.
    _write(tmp_path, {"common/files.py": "import os\n", "verify/__init__.py": "from delf import conf\n"})
    assert any("verify/__init__.py: imports delf.conf" in v for v in violations(tmp_path))
    # A circle between two modules of one package.
    _write(tmp_path, {"verify/__init__.py": "", "delf/a.py": "from . import b\n", "delf/b.py": "from .a import Y\n"})
    assert any(v.startswith("import circle") and "delf.a" in v and "delf.b" in v for v in violations(tmp_path))


def test_every_package_is_in_a_layer():
    found = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"}
    assert found == set(LAYERS), "a new top-level package needs a layer here and a line in docs/design.md"
    assert all(os.path.isdir(ROOT / p) for p in LAYERS)


def test_every_project_import_resolves():
    """Each `from X import Y` of the packages names something X has: a name
    moved between modules and left behind in a lazy import fails here, not in
    a user's run."""
    import importlib

    known = modules(ROOT)
    bad = []
    for name, path in known.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            mod = from_module(name, is_pkg, node)
            if mod.split(".")[0] not in LAYERS:
                continue
            m = importlib.import_module(mod)
            for a in node.names:
                if not hasattr(m, a.name) and f"{mod}.{a.name}" not in known:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {mod} has no {a.name}")
    assert bad == []
