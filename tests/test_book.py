"""The book builds with warnings as errors, its pages read cleanly, and they work in a real browser."""
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from book_layout import ROOT, repository, toc_files
from book_pages import page_problems

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def built_book() -> Path:
    """Builds the whole book in the smoke profile (executing every chapter) as `make book` does
    (scripts/build_book.py, which also runs the page check) into _build/smoke, its runs in
    _build/smoke/_build/runs (a chapter whose cached outputs are reused trains nothing)."""
    out = ROOT / "_build" / "smoke"
    runs = out / "_build" / "runs"
    if not runs.is_dir():  # a build without its runs folder starts over, so every chapter trains
        shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "DETRLIB_PROFILE": "smoke", "DETRLIB_STATIC_WIDGETS": "1", "TQDM_DISABLE": "1",
           "DETRLIB_RUNS": str(runs)}
    env.pop("MPLBACKEND", None)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_book.py"), "--out", str(out)],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"the book build failed or warned:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    return out / "_build" / "html"


def test_book_builds_with_warnings_as_errors(built_book):
    for entry in toc_files():
        assert (built_book / f"{entry}.html").exists(), f"{entry}.html missing from the built book"


def test_built_pages_read_cleanly(built_book):
    """The page check, on the built smoke site: what a reader must never see. On every page of the toc:

    1. no unfilled upper-case placeholder token (``SUMMARY_ABLATION``) and no unrendered MyST role
       (``{glue:text}``, ``{cite:p}``) in the prose (code and outputs may name ``DETRLIB_PROFILE``);
    2. no project-tracking words in the prose or in any output: "issue", "pending", a target met or
       missed, "(target: at least ...)";
    3. "the seed" never names the project the book grew from (that is "the reference project");
       random seeds are "seed 0", "each seed", "the same seed";
    4. no Python traceback, no warning or error, and no stderr stream in any cell output;
    5. no raw widget JSON or widget repr (``application/vnd.jupyter.widget-view+json``,
       ``interactive(children=...)``) where an explorer should have drawn its figures;
    6. no broken image: every local ``<img>`` exists in the site and is a readable picture;
    7. every chapter has its Summary, its Exercises and their Solutions folded in ``<details>``;
    8. chapter 0 links the glossary.
    """
    problems = page_problems(built_book)
    assert not problems, "the built pages show what a reader must not see:\n" + "\n".join(problems)


def test_no_configuration_is_trained_twice(built_book):
    """Chapters share a run wherever their configurations agree: a run's folder is named by its
    configuration, so two folders that hold one configuration under different names trained it twice."""
    runs = built_book.parent / "runs"
    folders = {}
    for config in sorted(runs.glob("*/config.json")):
        settings = json.loads(config.read_text())
        settings.pop("profile")
        folders.setdefault(json.dumps(settings, sort_keys=True), []).append(config.parent.name)
    assert len(folders) >= 3, f"the smoke build trained {len(folders)} configurations in {runs}: chapters 4 to 6 train more"
    twice = [names for names in folders.values() if len(names) > 1]
    assert not twice, f"one configuration trained under several run names: {twice}"


def test_the_chapters_reuse_the_runs_trained_ahead(built_book):
    """`make book` trains chapter 4's and 5's runs side by side before the chapters execute
    (scripts/build_book.py): the chapters find them finished and train nothing."""
    logs = built_book.parent / "runs-ahead"
    assert sorted(log.name for log in logs.glob("*.log")) == ["denoising.log", "vanilla.log"]
    for name in ("vanilla", "denoising"):
        assert "stopped by" in (logs / f"{name}.log").read_text(), f"the {name} run did not finish ahead"
    reused = {page: (built_book / "notebooks" / f"{page}.html").read_text().count("nothing more to train")
              for page in ("04_training", "05_denoising")}
    assert reused == {"04_training": 1, "05_denoising": 2}, f"finished runs reused, by page: {reused}"


@pytest.fixture(scope="module")
def site(built_book):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(built_book))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(site):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless Chromium is not installed (Debian packages chromium and chromium-driver; "
                    "`make test` installs them where apt-get and root are available)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1000"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


CHAPTERS = [entry for entry in toc_files() if entry.startswith("notebooks/")]


@pytest.mark.browser
@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_page_renders_with_figures_and_colab_link(browser, site, entry):
    import nbformat

    browser.get(f"{site}/{entry}.html")
    nb = nbformat.read(ROOT / f"{entry}.ipynb", as_version=4)
    heading = nb.cells[0].source.splitlines()[0].removeprefix("# ").strip()
    assert heading in browser.title, f"page title {browser.title!r} lacks the chapter title {heading!r}"
    h1 = browser.execute_script("return Array.from(document.querySelectorAll('article h1'), h => h.textContent)")
    assert any(heading in text for text in h1), f"no <h1> with {heading!r} in the article: {h1}"

    images = browser.execute_script("""
        return Array.from(document.images).map(img => ({src: img.currentSrc || img.src,
            ok: img.complete && img.naturalWidth > 0}));""")
    local = [img for img in images if img["src"].startswith(site)]
    broken = [img["src"] for img in local if not img["ok"]]
    assert not broken, f"broken images on {entry}: {broken}"
    figures = [img for img in local if "/_images/" in img["src"]]
    assert figures, f"{entry} shows no figure from its outputs"

    url, branch = repository()
    slug = url.removeprefix("https://github.com/")
    expected = f"https://colab.research.google.com/github/{slug}/blob/{branch}/{entry}.ipynb"
    links = {a.get_attribute("href") for a in browser.find_elements("css selector", "a[href*='colab.research.google.com/github']")}
    assert expected in links, f"no Colab launch link to {expected} on {entry}: {links}"
