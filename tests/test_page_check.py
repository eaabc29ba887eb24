"""The page check finds each thing a reader must never see, on small pages made to show it, and
passes a clean page (the real check runs on the built smoke site in tests/test_book.py)."""
import io

from PIL import Image

from book_pages import page_problems

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
