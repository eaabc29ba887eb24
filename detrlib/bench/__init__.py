"""Benchmarks that print a table: ``python -m detrlib bench <name> [options]``.

Each module here registers one with :func:`benchmark`; it measures, prints a table and returns its rows for scripts
and tests. Every benchmark takes ``--busy N`` to run next to N processes spinning on the CPU (:func:`busy_neighbours`),
as on a laptop, on Colab's two vCPUs with DataLoader workers, or on a shared CI machine.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import pkgutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch


@dataclass
class Benchmark:
    name: str
    help: str
    run: Callable[[argparse.Namespace], list[dict]]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


BENCHMARKS: dict[str, Benchmark] = {}


def benchmark(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
              measures_busy: bool = False):
    """Register ``fn(args) -> rows`` as ``python -m detrlib bench <name>``, ``add_arguments`` adding its options.

    A ``--threads N`` option (0: keep torch's setting) sets torch's CPU threads for the run only, so a notebook kernel
    keeps its own. ``--busy N`` (added to every benchmark) runs ``fn`` next to N spinning processes; with
    ``measures_busy=True`` the benchmark reads ``args.busy`` itself, to time quiet and busy side by side
    (:func:`take_turns_quiet_and_busy`)."""

    def arguments(parser: argparse.ArgumentParser) -> None:
        if add_arguments:
            add_arguments(parser)
        parser.add_argument("--busy", type=int, default=0, metavar="N",
                            help="processes spinning on the CPU next to the measurement (default 0)")

    def register(fn):
        @functools.wraps(fn)
        def run(args: argparse.Namespace) -> list[dict]:
            import torch

            threads = torch.get_num_threads()
            if getattr(args, "threads", 0):
                torch.set_num_threads(args.threads)
            try:
                with busy_neighbours(0 if measures_busy else getattr(args, "busy", 0)):
                    return fn(args)
            finally:
                torch.set_num_threads(threads)

        BENCHMARKS[name] = Benchmark(name, help, run, arguments)
        return run

    return register


# A busy neighbour: a tight loop that also ends by itself when its parent has gone (its parent id changes), so a
# benchmark killed without cleaning up leaves nothing spinning. Ctrl-C reaches the whole process group: the
# neighbours ignore it and the benchmark stops them.
_SPIN = """import os, signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
parent = os.getppid()
print(flush=True)
while os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


@contextmanager
def busy_neighbours(n: int):
    """``n`` processes spinning on the CPU while the block runs, stopped however it ends (normally, by an error or
    by Ctrl-C). Yields their process ids."""
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE))
        for proc in procs:
            proc.stdout.readline()  # it is spinning
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
            proc.stdout.close()


def load_all() -> dict:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return BENCHMARKS


def format_table(rows: list[dict], title: str = "") -> str:
    """Rows of dicts as a plain-text table (floats to 4 significant digits)."""
    if not rows:
        return f"{title}\n(no rows)"
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    widths = {c: max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns}
    lines = [title] if title else []
    lines.append("  ".join(c.ljust(widths[c]) for c in columns))
    lines.append("  ".join("-" * widths[c] for c in columns))
    lines += ["  ".join(cell(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def seconds(fn, device=None) -> float:
    """Wall time of one ``fn()``. On a CUDA ``device`` it is timed between two CUDA events and waited for: kernels
    run asynchronously, so a clock read right after the call would time the kernel launches, not the work."""
    import torch

    if device is not None and torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def take_turns(jobs: dict, repeats: int, warmup: int = 1, device=None, every: bool = False) -> dict:
    """Median seconds of each job in ``{name: callable}``: ``warmup`` untimed calls each (memory, kernel choice,
    compilation), then the jobs take turns, so a busy moment on a shared machine hurts them alike. ``every=True``
    returns each job's seconds of every turn instead."""
    return take_turns_quiet_and_busy(jobs, repeats, 0, warmup, device, every)[0]


def speedup(turns: dict, base: str, other: str) -> dict:
    """How many times as fast ``other`` ran as ``base``, turn by turn (:func:`take_turns` with ``every=True``): the
    median ratio, its quartiles, and a verdict that says "faster" or "slower" only when the quartiles agree."""
    ratios = [b / o for b, o in zip(turns[base], turns[other])]
    low, median, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    verdict = "faster than" if low > 1 else "slower than" if high < 1 else "as fast as, within the turns' spread,"
    return {"median": median, "low": low, "high": high, "verdict": verdict}


def take_turns_quiet_and_busy(jobs: dict, repeats: int, busy: int, warmup: int = 1,
                              device=None, every: bool = False) -> tuple[dict, dict]:
    """:func:`take_turns`, and with ``busy`` = N > 0 each turn also times every job again next to N spinning
    processes, so quiet and busy see the same machine: ``({name: quiet median}, {name: busy median})``, the second
    empty when ``busy`` is 0."""
    import torch

    for job in jobs.values():
        for _ in range(warmup):
            job()
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    quiet, loaded = {name: [] for name in jobs}, {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            quiet[name].append(seconds(job, device))
        if busy:
            with busy_neighbours(busy):
                for name, job in jobs.items():
                    loaded[name].append(seconds(job, device))
    if every:
        return quiet, {name: t for name, t in loaded.items() if t}
    return _medians(quiet), _medians(loaded)


def _medians(times: dict) -> dict:
    return {name: statistics.median(t) for name, t in times.items() if t}


def random_boxes(shape, generator: torch.Generator) -> torch.Tensor:
    """Random boxes ``[*shape, 4]`` (normalized ``cx, cy, w, h``) inside the image, each side 5-50% of the image's:
    the objects of the benchmarks' and tests' random batches."""
    import torch

    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    wh = 0.05 + 0.45 * torch.rand(*shape, 2, generator=generator)
    return torch.cat([wh / 2 + (1 - wh) * torch.rand(*shape, 2, generator=generator), wh], -1)


def random_batch(batch: int, size: int, num_classes: int, objects=(5,), seed: int = 0):
    """A training batch ``(images, mask, targets)`` of ``size``² random pixels; image ``i`` holds
    ``objects[i % len(objects)]`` objects of :func:`random_boxes` and random classes."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g)
    counts = [objects[i % len(objects)] for i in range(batch)]
    targets = [{"boxes": random_boxes(n, g), "labels": torch.randint(0, num_classes, (n,), generator=g)}
               for n in counts]
    return images, torch.zeros(batch, size, size, dtype=torch.bool), targets


def hf_detr(**config):
    """Hugging Face's DetrForObjectDetection with random weights (91 classes unless ``config`` says ``num_labels``),
    or ``(None, why it is missing)``. The benchmarks compare against it; detrlib itself never imports transformers."""
    try:
        import timm  # noqa: F401  (DetrConfig's default ResNet-50 backbone comes from timm)
        from transformers import DetrConfig, DetrForObjectDetection
    except ImportError as err:
        return None, f"Hugging Face rows skipped: {err.name} is not installed (pip install transformers timm)"
    return DetrForObjectDetection(DetrConfig(**{"num_labels": 91, **config})), ""
