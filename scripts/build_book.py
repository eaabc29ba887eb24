"""Build the book, and fail, naming the page, whenever a page is not what a reader should get.

`make book` runs this, and so does the smoke build of tests/test_book.py:
1. scripts/book_cache.py forgets executions made by another detrlib or from other results;
2. the chapters' two long runs (vanilla DETR and denoising) are trained side by side first, each
   process on its share of the cores; the chapters then find them finished and reuse them;
3. `jupyter-book build -W -n --keep-going`, with `--all` when the last build did not end clean:
   jupyter-cache never keeps a failed or timed-out execution, but Sphinx's record of the pages it
   has read would serve the broken page again, and say "build succeeded", without running it;
4. the checks: myst-nb's report of every chapter that did not execute (``reports/*.err.log``),
   Sphinx's warnings (a missing glue key among them), and the page check of tests/book_pages.py
   on every page of the toc.
A problem fails the build with one line per page at the end. Usage:
python scripts/build_book.py [--out DIR]  (the site goes to DIR/_build/html; DIR: the repository)
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import book_cache

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from book_layout import toc_files  # noqa: E402
from book_pages import page_problems  # noqa: E402

# the chapters' runs whose settings are the profile's own (detrlib.budget.run_config), so known before any chapter runs
AHEAD = ("vanilla", "denoising")
CLEAN = ".last-build-clean"  # in the build folder: written only when a build passed every check
ANSI = re.compile(r"\x1b\[[0-9;]*m")
WARNING = re.compile(r"^(?:(?P<path>[^\s:][^:]*?)(?::\d+)?: )?(?:WARNING|ERROR|CRITICAL): (?P<what>.*)$")
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)(: .*)?$")


def page_name(path: str) -> str:
    """A source file as the toc names it (``notebooks/04_training``), or ``path`` when outside the book."""
    try:
        return Path(path).resolve().relative_to(ROOT).with_suffix("").as_posix()
    except ValueError:
        return path


def warnings_by_page(output: list[str]) -> dict[str, list[str]]:
    """Sphinx's warnings and errors in a build's output, by page (``the build`` when they name none)."""
    found = {}
    for line in output:
        if match := WARNING.match(ANSI.sub("", line).rstrip()):
            page = page_name(match["path"]) if match["path"] else "the build"
            found.setdefault(page, []).append(match["what"])
    return found


def failure_reason(report: str) -> str:
    """Why an execution failed, in one line, from myst-nb's report: the cell timeout, else the last
    exception raised (a cell's own error comes after nbclient's)."""
    lines = [ANSI.sub("", line).strip() for line in report.splitlines()]
    for line in lines:
        if line.startswith("nbclient.exceptions.CellTimeoutError: "):
            return "CellTimeoutError: " + line.split(": ", 1)[1]
    raised = [line for line in lines if EXCEPTION.match(line)]
    return (raised or [line for line in lines if line] or ["no report"])[-1]


def problems(html: Path, warnings: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every problem of the site in ``html``, by page: chapters that did not execute first, then
    warnings, then the page check's findings."""
    found = {}
    for report in sorted((html / "reports").rglob("*.err.log")):
        page = report.relative_to(html / "reports").as_posix().removesuffix(".err.log")
        found.setdefault(page, []).append(f"did not execute: {failure_reason(report.read_text())}")
    for page, lines in warnings.items():
        found.setdefault(page, []).extend(f"warning: {line}" for line in lines)
    entries = toc_files()
    built = [entry for entry in entries if (html / f"{entry}.html").exists()]
    for entry in sorted(set(entries) - set(built)):
        found.setdefault(entry, []).append("not built")
    for line in page_problems(html, built) if built else []:
        page, _, what = line.partition(": ")
        found.setdefault(page, []).append(what)
    return found


def run_settings(name: str):
    """The settings of the chapter run ``name``, as its chapter makes them (the profile, DETRLIB_SET)."""
    from detrlib.budget import run_config
    from detrlib.config import get_profile

    return run_config(name, get_profile())


def runs_to_train() -> list[str]:
    """The runs of :data:`AHEAD` that a chapter of the toc trains and that are not finished yet."""
    from detrlib.budget import CHAPTERS

    chapters = [CHAPTERS[name] for name in (Path(entry).name for entry in toc_files()) if name in CHAPTERS]
    wanted = [name for name in AHEAD if any(name in chapter.runs for chapter in chapters)]
    if not wanted:  # a book without those chapters (the tests' tiny books): no torch to import
        return []
    from detrlib.checkpoint import load_latest
    from detrlib.runfolder import run_dir
    from detrlib.train_state import finished_reason

    def finished(name: str) -> bool:
        cfg = run_settings(name)
        return bool(finished_reason(load_latest(run_dir(cfg) / "checkpoints"), cfg.train))

    return [name for name in wanted if not finished(name)]


def train_ahead(build: Path) -> None:
    """Train the chapters' long runs before the chapters execute, side by side, each process with its share of
    the cores as threads (one each on two cores). On two cores two one-thread runs side by side take about 0.7 of
    the time of the same runs one after the other on two threads (torch's two threads wait on each other), and
    next to a busy neighbour far less. A run that fails here is left to its chapter, which resumes it."""
    from detrlib.errors import DetrlibError

    try:
        names = runs_to_train()
    except DetrlibError as err:
        print(f"book: no run trained ahead of the chapters ({err}); the chapters say it again")
        return
    if not names:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // len(names))
    logs = build / "runs-ahead"
    logs.mkdir(parents=True, exist_ok=True)
    how = "runs side by side" if len(names) > 1 else "run"
    print(f"book: training the {' and '.join(names)} {how} before the chapters, {threads} "
          f"thread{'s' * (threads > 1)} each (logs: {logs})", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    running, start = {}, time.perf_counter()
    try:
        for name in names:
            with open(logs / f"{name}.log", "w") as log:
                running[name] = subprocess.Popen([sys.executable, __file__, "--train", name], stdout=log,
                                                 stderr=subprocess.STDOUT, env=env)
        for name, process in running.items():
            process.wait()
            lines = [line for line in (logs / f"{name}.log").read_text().splitlines() if line.strip()]
            last = lines[-1] if lines else "no output"
            if process.returncode:
                print(f"book: the {name} run ended with exit status {process.returncode} ({last}); its chapter "
                      f"trains it (log: {logs / f'{name}.log'})")
            else:
                print(f"book: the {name} run, {time.perf_counter() - start:.0f} s: {last}")
    finally:
        for process in running.values():
            if process.poll() is None:
                process.terminate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="the site goes to OUT/_build/html")
    parser.add_argument("--train", choices=AHEAD, help=argparse.SUPPRESS)  # one run of train_ahead, in its process
    args = parser.parse_args(argv)
    if args.train:
        from detrlib.engine import train

        train(run_settings(args.train))
        return 0
    out = args.out.resolve()
    build = out / "_build"
    book_cache.refresh(build)
    train_ahead(build)
    clean = build / CLEAN
    fresh = not clean.exists()
    if fresh and (build / ".doctrees").exists():
        print("book: the last build did not end clean, so every page is read again")
    clean.unlink(missing_ok=True)
    shutil.rmtree(build / "html" / "reports", ignore_errors=True)  # an earlier build's reports

    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(ROOT), "-W", "-n", "--keep-going"]
    command += ["--all"] * fresh + (["--path-output", str(out)] if out != ROOT else [])
    output = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as run:
        for line in run.stdout:
            sys.stdout.write(line)
            output.append(line)
    # with -W a warning ends the build non-zero: after a zero exit, "WARNING:" lines came from elsewhere (a kernel)
    found = problems(build / "html", warnings_by_page(output) if run.returncode else {})
    if not found and run.returncode == 0:
        clean.touch()
        print(f"book: every page built and checked; the book is in {build / 'html' / 'index.html'}")
        return 0
    print("\nbook: the build failed; what it found, page by page:")
    for page, lines in found.items():
        print("\n".join(f"  {page}: {line}" for line in lines))
    for page, lines in found.items():
        more = f" (and {len(lines) - 1} more, listed above)" if len(lines) > 1 else ""
        print(f"book: {page}: {lines[0]}{more}")
    if not found:
        print(f"book: jupyter-book build ended with exit status {run.returncode}; its output above says why")
    if any(lines[0].startswith("did not execute") for lines in found.values()):
        print("book: a chapter that did not execute is not cached: the next build runs it again")
    return 1


if __name__ == "__main__":
    sys.exit(main())
