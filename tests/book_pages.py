"""The page check: what a reader of the built book must never see (tests/test_book.py runs it on the
built smoke site, tests/test_page_check.py on pages made to break each rule), and what a reader of a
notebook, in Jupyter or Colab, must never see in its markdown (:func:`notebook_problems`)."""
import re
from pathlib import Path

from book_layout import toc_files

PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")  # SUMMARY_ABLATION, TODO_NUMBER
UNRENDERED_ROLE = re.compile(r"\{(glue|cite|ref|numref|doc)[:}]")
TRACKING = [  # (pattern, what it is): words about the project's own work, not about DETR
    (re.compile(r"\bissues?\b", re.I), "'issue'"),
    (re.compile(r"\bpending\b", re.I), "'pending'"),
    (re.compile(r"\btargets?\b[^.\n]{0,40}?\b(met|missed)\b", re.I), "a target met or missed"),
    (re.compile(r"\(target:|\btarget:?\s*(at least|>=)", re.I), "a target to reach"),
    (re.compile(r">=\s*[\d.]+\s*x\s+(met|missed)\b", re.I), "a target met or missed"),
]
THE_SEED = re.compile(r"\bthe seed\b|\bseed's\b|\bseed (project|recipe|configuration|shape)\b", re.I)
RAW_WIDGET = re.compile(r"application/vnd\.jupyter\.widget|\"model_id\"|\b(interactive|IntSlider|FloatSlider|Dropdown)\(")
PROBLEM_OUTPUT = re.compile(r"Traceback \(most recent call last\)|\b[A-Z]\w*(Warning|Error)\b")
MYST_DIRECTIVE = re.compile(r"^[ \t]*(:::+|```+[ \t]*\{)", re.M)  # :::{note}, ```{admonition}
CODE_BLOCK = re.compile(r"^[ \t]*```.*?^[ \t]*```", re.M | re.S)
ROLE_OR_CODE = re.compile(r"(\{[a-z][\w:-]*\})?`[^`\n]*`")  # {cite:p}`key` is a role, `{x}` is code
MYST_LABEL = re.compile(r"^[ \t]*\([\w-]+\)=[ \t]*$", re.M)  # (label)=


def notebook_problems(paths) -> list[str]:
    """Every piece of MyST markup in the markdown cells of the notebooks ``paths``, one line each:
    Jupyter and Colab render plain Markdown only, so a role (``{cite:p}`key```), a directive
    (``:::`` or a ```` ```{name} ```` fence) or a label target would show as raw text there. Code,
    in backticks or in a fenced block, may show any of them."""
    import nbformat

    problems = []
    for path in paths:
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type != "markdown":
                continue
            found = [("MyST directive", m.start()) for m in MYST_DIRECTIVE.finditer(cell.source)]
            prose = CODE_BLOCK.sub(lambda m: "\n" * m.group().count("\n"), cell.source)  # keeps line numbers
            found += [("MyST role", m.start()) for m in ROLE_OR_CODE.finditer(prose) if m.group(1)]
            found += [("MyST label", m.start()) for m in MYST_LABEL.finditer(prose)]
            for what, at in sorted(found, key=lambda f: f[1]):
                line = cell.source[:at].count("\n") + 1 if what == "MyST directive" else prose[:at].count("\n") + 1
                text = cell.source.splitlines()[line - 1].strip()
                problems.append(f"{Path(path).name}: markdown cell {i}, line {line}: {what}: {text[:100]!r}")
    return problems


def page_problems(html_dir: Path, entries: list[str] | None = None) -> list[str]:
    """Every breach of the page check's rules (the docstring of
    ``tests/test_book.py::test_built_pages_read_cleanly`` lists them), one line each, for the pages
    ``entries`` (the toc's by default) of the site built into ``html_dir``. Only the article is read:
    the theme's own buttons and menus are not the book's words."""
    from bs4 import BeautifulSoup
    from PIL import Image

    def words(tag) -> str:
        return re.sub(r"\s+", " ", tag.get_text(" "))

    def around(text: str, found: re.Match, width: int = 60) -> str:
        return text[max(0, found.start() - width):found.end() + width]

    problems = []
    for entry in entries or toc_files():
        html = html_dir / f"{entry}.html"
        article = BeautifulSoup(html.read_text(encoding="utf-8"), "html.parser").find("article")
        if article is None:
            problems.append(f"{entry}: no <article> in {html}")
            continue
        for tag in article.find_all(["script", "style"]):
            tag.decompose()
        outputs = [words(o) for o in article.select("div.cell_output")]
        prose_tree = BeautifulSoup(str(article), "html.parser")
        for tag in prose_tree.select("div.cell, pre, code, kbd, .math, div.highlight"):
            tag.decompose()
        prose = words(prose_tree)
        for token in sorted(set(PLACEHOLDER.findall(prose))):
            problems.append(f"{entry}: unfilled placeholder {token!r} in the text")
        for found in UNRENDERED_ROLE.finditer(prose):
            problems.append(f"{entry}: unrendered MyST role: {around(prose, found)!r}")
        for found in THE_SEED.finditer(prose):
            problems.append(f"{entry}: {around(prose, found)!r}: say 'the reference project', or name the random seed")
        for text in [prose, *outputs]:
            for pattern, what in TRACKING:
                for found in pattern.finditer(text):
                    problems.append(f"{entry}: project-tracking words ({what}): {around(text, found)!r}")
        for text in [prose, *outputs]:
            for found in RAW_WIDGET.finditer(text):
                problems.append(f"{entry}: raw widget output: {around(text, found)!r}")
        for block in article.select("div.cell_output div.stderr, div.cell_output div.traceback"):
            problems.append(f"{entry}: an output on stderr or a traceback: {words(block)[:200]!r}")
        for text in outputs:
            for found in PROBLEM_OUTPUT.finditer(text):
                problems.append(f"{entry}: a traceback, warning or error in an output: {around(text, found)!r}")
        for img in article.find_all("img"):
            src = img.get("src", "")
            if re.match(r"[a-z]+:", src):  # the Colab badge and other remote pictures
                continue
            try:
                with Image.open(html.parent / src.split("#")[0]) as picture:
                    picture.verify()
            except Exception as err:  # missing, empty or not a picture
                problems.append(f"{entry}: broken image {src} ({type(err).__name__}: {err})")
        if entry.startswith("notebooks/"):
            headings = [words(h).replace("#", "").strip() for h in article.find_all("h2")]
            for needed in ("Summary", "Exercises"):
                if needed not in headings:
                    problems.append(f"{entry}: no '{needed}' section (h2 headings: {headings})")
            if not any(d.summary and words(d.summary).strip() == "Solutions" for d in article.find_all("details")):
                problems.append(f"{entry}: the exercises' solutions are not folded in <details><summary>Solutions")
        if entry.startswith("notebooks/00_") and not article.select("a[href$='glossary.html']"):
            problems.append(f"{entry}: chapter 0 does not link the glossary")
    return problems
