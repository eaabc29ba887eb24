"""Forget the book's executed chapters when detrlib's code, or a file the chapters read, has changed.

jupyter-cache keys each notebook on its own cells, so after a change to the library `make book` (and a
cached deploy) would go on showing outputs of the old library; the training runs the chapters reuse
were made by it too. The fingerprint is detrlib's code without comments and docstrings, so editing
those rebuilds nothing. The chapters also read the repository's measured results and reference
checkpoints (:data:`INPUTS`): when those change, the executions are forgotten and the runs kept.
Usage: python scripts/book_cache.py BUILD_DIR (scripts/build_book.py calls it first).
"""
from __future__ import annotations

import ast
import hashlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# executed chapters, and Sphinx's record of the pages it has read (else it would not read them again)
EXECUTIONS = (".jupyter_cache", "jupyter_execute", ".doctrees")
INPUTS = ("results", "checkpoints")  # what chapters read through detrlib.data.download.repository_file


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


def files_fingerprint(folders) -> str:
    """A hash of every file's path and bytes under ``folders``, their Markdown (written for people) aside."""
    digest = hashlib.sha256()
    for folder in map(Path, folders):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".md"):
            digest.update(path.relative_to(folder.parent).as_posix().encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def refresh(build: Path, package: Path = ROOT / "detrlib", inputs=tuple(ROOT / name for name in INPUTS)) -> bool:
    """Delete the cached executions in ``build`` if ``package`` or the files under ``inputs`` changed
    since they were made, and the runs too if ``package`` did; True when something was deleted."""
    stamps = {build / ".detrlib-code": fingerprint(package), build / ".book-inputs": files_fingerprint(inputs)}
    code, read = (not stamp.exists() or stamp.read_text().strip() != now for stamp, now in stamps.items())
    names = EXECUTIONS + ("runs",) if code else EXECUTIONS if read else ()
    stale = [build / name for name in names if (build / name).exists()]
    for path in stale:
        shutil.rmtree(path)
    build.mkdir(parents=True, exist_ok=True)
    for stamp, now in stamps.items():
        stamp.write_text(now + "\n")
    if stale:
        print("book: detrlib's code changed since the last build, so every chapter runs again" if code else
              f"book: {' or '.join(f'{Path(p).name}/' for p in inputs)} changed since the last build, so every "
              "chapter runs again (reusing its training runs)")
    return bool(stale)


if __name__ == "__main__":
    refresh(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "_build"))
