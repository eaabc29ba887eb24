"""The page check finds each thing a reader must never see, on small pages made to show it, and
passes a clean page (the real check runs on the built smoke site in tests/test_book.py); the notebook
check finds MyST markup in a small notebook's markdown, and none in the book's notebooks."""
import io

import nbformat
import pytest
from PIL import Image

from book_layout import notebooks
from book_pages import notebook_problems, page_problems

CLEAN_CHAPTER = """
<html><body><nav>Open an issue</nav><article>
<h1>4. Training</h1>
<p>Vanilla DETR reaches an AP@0.5 of 0.31 here, with the same seed as chapter 5: seed 0.
Read about <a href="../book/glossary.html">the glossary</a>.</p>
<div class="cell"><div class="cell_input"><pre>os.environ["DETRLIB_PROFILE"]  # IntSlider(0, 0, 9)</pre></div>
<div class="cell_output"><div class="output stream"><pre>AP@0.5 0.310 (quick profile)</pre></div>
<img src="../_images/figure.png"></div></div>
<img src="https://colab.research.google.com/assets/colab-badge.svg">
<section><h2>Summary<a class="headerlink">#</a></h2><p>It learns.</p></section>
<section><h2>Exercises<a class="headerlink">#</a></h2><ol><li>Train it.</li></ol>
<details><summary>Solutions</summary><ol><li>Like this.</li></ol></details></section>
</article></body></html>
"""


def site(tmp_path, chapter: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_images").mkdir()
    picture = io.BytesIO()
    Image.new("RGB", (4, 4)).save(picture, format="PNG")
    (tmp_path / "_images" / "figure.png").write_bytes(picture.getvalue())
    (tmp_path / "notebooks" / "00_intro.html").write_text(chapter)
    return page_problems(tmp_path, ["notebooks/00_intro"])


def test_a_clean_chapter_passes_and_the_theme_is_not_read(tmp_path):
    assert site(tmp_path, CLEAN_CHAPTER) == []


def test_each_rule_finds_its_breach(tmp_path):
    breaches = {
        "unfilled placeholder 'SUMMARY_ABLATION'": ("It learns.", "It learns: SUMMARY_ABLATION."),
        "unrendered MyST role": ("It learns.", "It learns {glue:text}`ap50:.3f`."),
        "project-tracking words ('issue')": ("It learns.", "The issue behind this chapter asks for more."),
        "project-tracking words ('pending')": ("Like this.", "The GPU table is pending."),
        "project-tracking words (a target to reach)": ("AP@0.5 0.310 (quick profile)", "1.05x as fast (target: at least 1.2x)"),
        "project-tracking words (a target met or missed)": ("AP@0.5 0.310 (quick profile)", "B=32 16.4 >=4x met"),
        "say 'the reference project'": ("It learns.", "The seed's recipe reached 0.608."),
        "an output on stderr": ('<div class="output stream">', '<div class="output stderr">'),
        "a traceback, warning or error in an output": ("AP@0.5 0.310 (quick profile)", "UserWarning: slow"),
        "raw widget output": ("AP@0.5 0.310 (quick profile)", "interactive(children=(IntSlider(value=0),))"),
        "broken image ../_images/missing.png": ("../_images/figure.png", "../_images/missing.png"),
        "no 'Summary' section": ("<h2>Summary", "<h2>Recap"),
        "solutions are not folded": ("<summary>Solutions</summary>", "<summary>Answers</summary>"),
        "chapter 0 does not link the glossary": ("glossary.html", "references.html"),
    }
    for expected, (old, new) in breaches.items():
        assert old in CLEAN_CHAPTER, old
        found = site(tmp_path / expected.replace(" ", "_").replace("'", ""), CLEAN_CHAPTER.replace(old, new, 1))
        assert any(expected in problem for problem in found), f"{expected!r} not reported: {found}"


CLEAN_MARKDOWN = """The warm-up lasts the first steps ([Carion et al., 2020](https://arxiv.org/abs/2005.12872)).

```python
x = {"a": 1}  # a code block is not a directive
```

<details>
<summary>Solutions</summary>

1. `{glue:text}` is how the site used to quote numbers.

</details>"""


def notebook(tmp_path, markdown: str):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 4. Training"),
                                         nbformat.v4.new_code_cell('say(f"{steps} steps")'),
                                         nbformat.v4.new_markdown_cell(markdown)])
    path = tmp_path / "04_training.ipynb"
    nbformat.write(nb, path)
    return notebook_problems([path])


@pytest.mark.parametrize("breach, expected", [
    ("The warm-up lasts {glue:text}`warmup_steps` steps.", "MyST role: 'The warm-up lasts {glue:text}"),
    ("DETR {cite:p}`carion2020detr` predicts a set.", "MyST role"),
    ("See {doc}`glossary`.", "MyST role"),
    (":::{note}\nA note.\n:::", "MyST directive: ':::{note}'"),
    ("```{admonition} Solutions\n1. Like this.\n```", "MyST directive"),
    ("(warm-up)=\n## Warm-up", "MyST label"),
])
def test_the_notebook_check_finds_myst_markup(tmp_path, breach, expected):
    assert notebook(tmp_path, CLEAN_MARKDOWN) == []
    found = notebook(tmp_path, CLEAN_MARKDOWN + "\n\n" + breach)
    assert any(expected in problem for problem in found), found


def test_the_book_notebooks_are_plain_markdown():
    problems = notebook_problems(notebooks())
    assert not problems, "MyST markup that Jupyter and Colab show as raw text:\n" + "\n".join(problems)
