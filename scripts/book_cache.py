"""Forget the book's executed chapters when detrlib's code has changed.

jupyter-cache keys each notebook on its own cells, so after a change to the library `make book` (and a
cached deploy) would go on showing outputs of the old library; the training runs the chapters reuse
were made by it too. The fingerprint is detrlib's code without comments and docstrings, so editing
those rebuilds nothing. Usage: python scripts/book_cache.py BUILD_DIR (the Makefile's book target).
"""
from __future__ import annotations

import ast
import hashlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# executed chapters, Sphinx's record of the pages it has read (else it would not read them again), and the runs
STALE = (".jupyter_cache", "jupyter_execute", ".doctrees", "runs")


def _drop_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def fingerprint(package: Path) -> str:
    """A hash of every module's syntax tree, docstrings left out (comments never reach the tree)."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(ast.dump(_drop_docstrings(ast.parse(path.read_text()))).encode())
    return digest.hexdigest()


def refresh(build: Path, package: Path = ROOT / "detrlib") -> bool:
    """Delete the cached executions in ``build`` if ``package`` changed since they were made; True
    when something was deleted."""
    stamp, now = build / ".detrlib-code", fingerprint(package)
    if stamp.exists() and stamp.read_text().strip() == now:
        return False
    stale = [build / name for name in STALE if (build / name).exists()]
    for path in stale:
        shutil.rmtree(path)
    build.mkdir(parents=True, exist_ok=True)
    stamp.write_text(now + "\n")
    if stale:
        print("book: detrlib's code changed since the last build, so every chapter runs again")
    return bool(stale)


if __name__ == "__main__":
    refresh(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "_build"))
