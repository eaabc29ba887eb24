"""`make book` never fails silently and never serves a page that did not execute: a run ends by its own
wall-clock cap inside the book's limit on a cell and says so on the page, stale executions are
forgotten, and a build that leaves a chapter unexecuted, a warning or a page problem fails, naming
the page (scripts/build_book.py)."""
import re
import sys
from types import SimpleNamespace

import pytest

from book_layout import ROOT, book_config
from tiny_book import make_book, tiny_book, write_page

sys.path.insert(0, str(ROOT / "scripts"))
import book_cache  # noqa: E402
import book_execution  # noqa: E402
import build_book  # noqa: E402

from detrlib.budget import cap_note  # noqa: E402
from detrlib.config import BOOK_CELL_SECONDS, QUICK_MAX_MINUTES, profile_settings  # noqa: E402

# What a run needs after its cap: its last step, a final evaluation of the 300 validation images and a
# checkpoint. The evaluation took 20 to 37 s on a 2-core CPU shared with other work; 5 minutes leave
# room for a machine several times slower.
ROOM_AFTER_CAP_S = 300


def test_the_quick_cap_ends_a_run_inside_one_book_cell():
    assert profile_settings("quick").train.max_minutes == QUICK_MAX_MINUTES > 0
    assert QUICK_MAX_MINUTES * 60 + ROOM_AFTER_CAP_S <= BOOK_CELL_SECONDS
    config = SimpleNamespace(nb_execution_timeout=30)  # jupyter-book's default
    book_execution.set_cell_timeout(None, config)
    assert config.nb_execution_timeout == BOOK_CELL_SECONDS
    book = book_config()
    assert book["sphinx"]["local_extensions"] == {"book_execution": "scripts"}
    assert "timeout" not in book["execute"], "_config.yml must not write a second cell timeout: the extension overrides it"


def test_a_run_stopped_by_its_cap_says_so():
    cfg = profile_settings("quick")
    whole = [{"step": 125, "wall_time_s": 100.0}, {"step": 1125, "wall_time_s": 900.0, "stopped": "epochs"}]
    capped = [{"step": 125, "wall_time_s": 300.0}, {"step": 812, "wall_time_s": 909.0, "stopped": "max_minutes"}]
    assert cap_note({"vanilla": whole}, cfg) == ""
    note = cap_note({"vanilla": capped}, cfg)
    assert "(`train.max_minutes` = 15)" in note and "the vanilla run after 15.2 minutes, at step 812" in note
    assert "before the 9 epochs of the recipe" in note and "same number of steps" not in note
    both = cap_note({"vanilla": whole, "denoising": capped}, cfg)
    assert "the denoising run after" in both and "vanilla run" not in both
    assert "did not train the same number of steps" in both


def test_results_forget_the_executions_and_code_forgets_the_runs_too(tmp_path):
    package, results, build = tmp_path / "pkg", tmp_path / "results", tmp_path / "_build"
    package.mkdir(), results.mkdir()
    (package / "m.py").write_text("X = 1\n")
    (results / "table.json").write_text("{}")

    def rebuilt() -> set[str]:
        for name in (".jupyter_cache", ".doctrees", "runs"):
            (build / name).mkdir(parents=True, exist_ok=True)
        book_cache.refresh(build, package, [results])
        return {name for name in (".jupyter_cache", ".doctrees", "runs") if not (build / name).exists()}

    rebuilt()
    assert rebuilt() == set()
    (results / "table.json").write_text('{"AP50": 0.5}')
    assert rebuilt() == {".jupyter_cache", ".doctrees"}
    (package / "m.py").write_text("X = 2\n")
    assert rebuilt() == {".jupyter_cache", ".doctrees", "runs"}


TIMEOUT_REPORT = """Traceback (most recent call last):
  File "nbclient/client.py", line 782, in _async_poll_for_reply
_queue.Empty

During handling of the above exception, another exception occurred:

nbclient.exceptions.CellTimeoutError: A cell timed out while it was being executed, after 1200 seconds.
The message was: Cell execution timed out.
"""
ERROR_REPORT = """nbclient.exceptions.CellExecutionError: An error occurred while executing the following cell:
------------------
raise ValueError("no data")
------------------
\x1b[31mValueError\x1b[39m                              Traceback (most recent call last)
\x1b[31mValueError\x1b[39m: no data
"""


def test_a_run_that_fails_ahead_of_the_chapters_is_left_to_its_chapter(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build_book, "runs_to_train", lambda: ["vanilla"])
    monkeypatch.setenv("DETRLIB_SET", '{"train.max_steps": -1}')  # the run's own process refuses it
    build_book.train_ahead(tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("book: training the vanilla run before the chapters")
    assert re.fullmatch(r"book: the vanilla run ended with exit status 1 \(.*ConfigError: .*max_steps.*\); its "
                        r"chapter trains it \(log: .*vanilla\.log\)", lines[1]), lines[1]


def test_a_run_is_trained_ahead_unless_it_finished_within_its_budget(tmp_path, monkeypatch):
    """The build reuses a run by train()'s rule: a run the time cap stopped trains on once the cap is raised."""
    from detrlib.checkpoint import save_checkpoint
    from detrlib.runfolder import run_dir

    monkeypatch.setenv("DETRLIB_RUNS", str(tmp_path))
    monkeypatch.setenv("DETRLIB_SET", '{"train.max_minutes": 1}')
    assert build_book.runs_to_train() == ["vanilla", "denoising"]
    folder = run_dir(build_book.run_settings("vanilla")) / "checkpoints"
    save_checkpoint({"model": {}, "step": 1, "epoch": 0, "finished": True, "wall_time": 60.0}, folder, 1)
    assert build_book.runs_to_train() == ["denoising"]  # stopped by its one-minute cap
    monkeypatch.setenv("DETRLIB_SET", '{"train.max_minutes": 2}')  # the same run, with a larger cap
    assert build_book.runs_to_train() == ["vanilla", "denoising"]


def test_settings_that_do_not_resolve_train_nothing_ahead(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETRLIB_SET", "not json")
    build_book.train_ahead(tmp_path)
    assert capsys.readouterr().out.startswith("book: no run trained ahead of the chapters (DETRLIB_SET is not a JSON")
    assert not (tmp_path / "runs-ahead").exists()


def test_a_failed_execution_is_named_with_its_reason(tmp_path, monkeypatch):
    assert build_book.failure_reason(TIMEOUT_REPORT) == \
        "CellTimeoutError: A cell timed out while it was being executed, after 1200 seconds."
    assert build_book.failure_reason(ERROR_REPORT) == "ValueError: no data"
    output = [f"\x1b[91m{ROOT}/notebooks/04_training.ipynb: WARNING: Executing notebook failed: CellTimeoutError "
              "[mystnb.exec]\x1b[39;49;00m\n",
              f"{ROOT}/book/intro.md:19: WARNING: No key 'x' found in glue data for this document. [mystnb.glue]\n",
              "[IPKernelApp] WARNING | Kernel is running over TCP without encryption.\n",
              "WARNING: the config value `x` is unknown\n"]
    warnings = build_book.warnings_by_page(output)
    assert warnings == {"notebooks/04_training": ["Executing notebook failed: CellTimeoutError [mystnb.exec]"],
                        "book/intro": ["No key 'x' found in glue data for this document. [mystnb.glue]"],
                        "the build": ["the config value `x` is unknown"]}

    html = tmp_path / "html"
    (html / "reports" / "notebooks").mkdir(parents=True)
    (html / "reports" / "notebooks" / "04_training.err.log").write_text(TIMEOUT_REPORT)
    (html / "notebooks").mkdir()
    (html / "notebooks" / "04_training.html").write_text("<article><h1>4</h1><p>Made half of their fall: (</p>"
                                                         "<div class='cell_output'><pre>KeyboardInterrupt: "
                                                         "Traceback (most recent call last)</pre></div></article>")
    monkeypatch.setattr(build_book, "toc_files", lambda: ["book/intro", "notebooks/04_training"])
    found = build_book.problems(html, warnings)
    assert found["notebooks/04_training"][0].startswith("did not execute: CellTimeoutError: A cell timed out")
    assert any("traceback" in line for line in found["notebooks/04_training"])  # the page check read it too
    assert found["book/intro"] == ["warning: No key 'x' found in glue data for this document. [mystnb.glue]",
                                   "not built"]
    assert found["the build"] == ["warning: the config value `x` is unknown"]


def executions(log) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.slow
def test_make_book_fails_naming_each_broken_chapter_and_builds_it_once_fixed(tmp_path):
    """A chapter made to raise, one made to hang past the cell timeout and one that quotes a glue key
    it never glues: `make book` fails naming all three. Once they are fixed the next `make book`
    executes them again (nothing of the failed executions was kept) and passes; later builds take
    the pages from the cache after a docstring change in detrlib, and execute them after a code change."""
    broken, log = tmp_path / "broken", tmp_path / "executions.log"
    run = f"from pathlib import Path\nwith open({str(log)!r}, 'a') as f:\n    f.write('ran\\n')\nbroken = Path({str(broken)!r}).exists()\n"
    broken.touch()
    tiny_book(tmp_path, {"pages/raises": run + "if broken:\n    raise RuntimeError('made to fail')",
                         "pages/hangs": run + "import time\nif broken:\n    time.sleep(120)",
                         "pages/glues": "x = 3"}, timeout=15)
    write_page(tmp_path, "pages/glues", "x = 3", "The value is {glue:text}`x`.")
    first = make_book(tmp_path)
    assert first.returncode != 0, first.stdout[-3000:]
    summary = first.stdout.strip().splitlines()
    assert any(line.startswith("book: pages/raises: did not execute: RuntimeError: made to fail") for line in summary)
    assert any(line.startswith("book: pages/hangs: did not execute: CellTimeoutError: A cell timed out while it "
                               "was being executed, after 15 seconds.") for line in summary), summary[-8:]
    assert any(re.match(r"book: pages/glues: warning: No key 'x' found in glue data", line) for line in summary)
    assert summary[-1] == "book: a chapter that did not execute is not cached: the next build runs it again"

    broken.unlink()
    write_page(tmp_path, "pages/glues", "from myst_nb import glue\nglue('x', 3)", "The value is {glue:text}`x`.")
    second = make_book(tmp_path)
    assert second.returncode == 0, second.stdout[-3000:]
    assert executions(log) == 4  # both failed chapters ran again, though their text did not change
    assert second.stdout.strip().splitlines()[-1].startswith("book: every page built and checked")

    config = tmp_path / "detrlib" / "config.py"
    config.write_text(config.read_text().replace('"""Every knob', '"""Each knob', 1))
    third = make_book(tmp_path)
    assert third.returncode == 0 and executions(log) == 4, third.stdout[-3000:]  # a docstring is not code: cached
    config.write_text(config.read_text() + "\nCHANGED = True\n")
    fourth = make_book(tmp_path)
    assert fourth.returncode == 0 and executions(log) == 6, fourth.stdout[-3000:]  # another detrlib: executed again
