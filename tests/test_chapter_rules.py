"""The book's rules for chapter code: a chapter that writes its own version of a detrlib function
checks it against the library's answer, and no chapter imports a private name."""
import ast
import re

import nbformat
import pytest

from book_layout import ROOT, notebooks

NOTEBOOKS = notebooks()
IDS = [nb.stem for nb in NOTEBOOKS]
# the by-hand teaching versions, each asserted equal to the library's answer on its page
BY_HAND = {"02_vanilla_detr": ["MinimalDETR"], "03_matching": ["detr_cost", "brute_force_match"],
           "06_pruning": ["prune_by_hand"], "08_results": ["balanced_by_hand"]}


def public_names() -> set[str]:
    """Every top-level function and class of detrlib whose name has no leading underscore."""
    names = set()
    for path in (ROOT / "detrlib").rglob("*.py"):
        names |= {node.name for node in ast.parse(path.read_text()).body
                  if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_")}
    return names


def chapter_code(path) -> ast.Module:
    """A chapter's code cells as one module; shell and magic lines (``!pip``, ``%matplotlib``) become ``pass``."""
    cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    source = "\n".join(re.sub(r"(?m)^(\s*)[!%].*$", r"\1pass", cell) for cell in cells)
    return ast.parse(source, filename=str(path))


def names_in(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def is_check(node) -> bool:
    """An ``assert`` statement, or a call of ``assert_close`` / ``assert_equal`` and the like."""
    if isinstance(node, ast.Assert):
        return True
    func = node.func if isinstance(node, ast.Call) else None
    return getattr(func, "attr", getattr(func, "id", "")).startswith("assert_")


def checked(tree: ast.Module, name: str) -> bool:
    """Whether a check of the chapter uses ``name``, directly or through a variable assigned from it."""
    derived, grew = {name}, True
    while grew:
        grew = False
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and names_in(node.value) & derived:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                new = set().union(*(names_in(t) for t in targets)) - derived
                derived |= new
                grew |= bool(new)
    return any(is_check(node) and names_in(node) & derived for node in ast.walk(tree))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_a_chapter_shadows_no_detrlib_name_unchecked(path):
    tree = chapter_code(path)
    public = public_names()
    own = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    unchecked = [name for name in own if name in public and not checked(tree, name)]
    assert not unchecked, (f"{path.name} defines its own {', '.join(unchecked)}, a name detrlib has: import "
                           "detrlib's, or assert that the chapter's version gives the library's answer")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_a_chapter_imports_no_private_name(path):
    private = []
    for node in ast.walk(chapter_code(path)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("detrlib"):
            private += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names if a.name.startswith("detrlib")]
        else:
            continue
        private += [m for m in modules if any(part.startswith("_") for part in m.split("."))]
    assert not private, f"{path.name} imports private names: {', '.join(private)} (make them public, or do without)"


@pytest.mark.parametrize("chapter", sorted(BY_HAND))
def test_every_by_hand_version_is_asserted_equal_to_the_library(chapter):
    tree = chapter_code(ROOT / "notebooks" / f"{chapter}.ipynb")
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    for name in BY_HAND[chapter]:
        assert name in defined, f"{chapter} no longer defines {name}: update BY_HAND"
        assert checked(tree, name), f"{chapter}: no assert compares {name} with the library's answer"


def test_the_rules_see_a_shadowing_function_and_its_check():
    tree = ast.parse("def collate(b):\n    return b\n\nout = collate([1])\nassert out == lib([1])\n")
    assert checked(tree, "collate") and "collate" in public_names()
    assert not checked(ast.parse("def collate(b):\n    return b\n\nprint(collate([1]))\n"), "collate")
