"""The house's two floors: the detector library below, the book's helpers above. Every import
counts, at module level or inside a function (``if TYPE_CHECKING:`` blocks aside), so that an
import moved into a function cannot hide a cycle."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from book_layout import ROOT

PACKAGE = ROOT / "detrlib"
LIBRARY = {"config", "data", "model", "targets", "matcher", "criterion", "engine", "train_state", "runfolder",
           "checkpoint", "evaluate", "prune", "precision", "memory", "instability", "errors"}
BOOK = {"budget", "viz", "widgets", "ablation", "bench", "colab", "environment", "results"}
TOP = {"cli", "__main__", "__init__"}  # the command line over both floors, and the package's lazy exports
HEAVY = ("torch", "torchvision", "numpy", "scipy", "matplotlib")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The detrlib modules ``path`` imports anywhere, resolved to modules (``from detrlib import x``
    names the module ``detrlib.x`` when there is one)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "detrlib"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "detrlib":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                is_module = (ROOT / (full.replace(".", "/") + ".py")).exists() or (ROOT / full.replace(".", "/")).is_dir()
                found.add(full if is_module else node.module)
    return found - ({module_name(path)} if path.is_relative_to(ROOT) else set())


def graph() -> dict[str, set[str]]:
    return {module_name(p): imported(p) for p in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    """A module's place in the house: its top-level name (a subpackage counts as one)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle's nodes, one list per strongly connected component of more than one node."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_its_floor():
    assert {unit(m) for m in graph()} == LIBRARY | BOOK | TOP


def test_no_module_imports_one_that_imports_it_back():
    edges = graph()
    assert cycles(edges) == []
    between_floors = {unit(m): set() for m in edges}
    for m, deps in edges.items():
        between_floors[unit(m)] |= {unit(d) for d in deps} - {unit(m)}
    assert cycles(between_floors) == []  # nor through a subpackage (data, model, bench)


def test_the_library_never_imports_the_books_helpers():
    upward = sorted(f"{m} imports {d}" for m, deps in graph().items() if unit(m) in LIBRARY
                    for d in deps if unit(d) in BOOK | TOP)
    assert upward == []


def test_the_rule_catches_an_upward_import(tmp_path):
    engine = tmp_path / "engine.py"
    engine.write_text("def progress():\n    from detrlib.budget import step_seconds\n")
    assert imported(engine) == {"detrlib.budget"}
    typed = tmp_path / "typed.py"
    typed.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from detrlib.config import Config\n")
    assert imported(typed) == set()
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["predict"], ["stats"], ["make-toy"], ["bench"],
                                     ["bench", "infer"], ["ablate"], ["download"], ["longtail"], ["prune"]])
def test_help_imports_no_torch(command):
    code = ("import runpy, sys\nsys.argv = ['detrlib', *sys.argv[1:], '--help']\n"
            "try:\n    runpy.run_module('detrlib', run_name='__main__')\nexcept SystemExit as done:\n"
            "    assert done.code == 0, done.code\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", command
