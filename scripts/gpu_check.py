"""The GPU checks, in one command and under 10 minutes on one GPU, without network: the tests marked
``gpu``, ``bench gpu`` (written to ``results/gpu-<gpu>-<date>.json``, which the book then shows), and
a 300-step run of the ``gpu`` profile on a generated VOC-format tree from an official-format COCO
checkpoint with random values. Prints one summary and exits non-zero when anything failed; without
CUDA it says so and exits 0. Run it as ``bash scripts/gpu_check.sh`` from a plain checkout: it
installs nothing, and names any missing package with the command that installs it."""
from __future__ import annotations

import datetime
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "scipy": "scipy",
            "matplotlib": "matplotlib", "PIL": "pillow", "tqdm": "tqdm", "defusedxml": "defusedxml",
            "pycocotools": "pycocotools", "pytest": "pytest"}
RUN_STEPS = 300


def missing_packages() -> list[str]:
    return [name for module, name in PACKAGES.items() if importlib.util.find_spec(module) is None]


def run(name: str, command: list[str], results: list, timeout: float) -> bool:
    """Run one check, print its output, and record (name, ok, seconds, note)."""
    print(f"\n=== {name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, text=True, capture_output=True, timeout=timeout)
        output, ok = done.stdout + done.stderr, done.returncode == 0
    except subprocess.TimeoutExpired as err:
        output, ok = f"{err.stdout or ''}{err.stderr or ''}\n(stopped after {timeout:.0f} s)", False
    print(output[-6000:], flush=True)
    lines = [line for line in output.strip().splitlines() if line.strip()]
    results.append((name, ok, time.perf_counter() - start, lines[-1] if lines else ""))
    return ok


def results_name(gpu: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    path = ROOT / "results" / f"gpu-{slug}-{datetime.date.today().isoformat()}.json"
    return path.with_name(f"{path.stem}-{datetime.datetime.now():%H%M%S}.json") if path.exists() else path


def prepare_run(work: Path) -> list[str]:
    """Generated VOC 2007 and an official-format checkpoint, and the command training on them."""
    sys.path.insert(0, str(ROOT / "tests"))
    from official import write_official_checkpoint

    from detrlib.data.toy import make_voc_like

    make_voc_like(work / "voc", {"VOC2007": {"trainval": 400, "test": 150}})
    checkpoint = write_official_checkpoint(work / "detr-r50-e632da11.pth")
    return [sys.executable, "-m", "detrlib", "train", "--profile", "gpu", "--data", str(work / "voc"),
            "--out", str(work / "run"), "--max-steps", str(RUN_STEPS), "--init-checkpoint", str(checkpoint),
            "--set", "data.download=false", "--set", "data.val_subset=100"]


def main() -> int:
    gone = missing_packages()
    if "torch" not in gone:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: skipped: this machine has no CUDA GPU (torch.cuda.is_available() is False), so "
                  "nothing was run. Run it on a GPU machine: bash scripts/gpu_check.sh")
            return 0
    if gone:
        print(f"gpu_check: missing Python packages: {', '.join(gone)}. Install them with: "
              f"python3 -m pip install {' '.join(gone)}  (without network: pip download the wheels on another "
              "machine, copy them over and pip install them from there)")
        return 2
    gpu = torch.cuda.get_device_name(0)
    out = results_name(gpu)
    results = []
    run("tests marked gpu", [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q",
                             "-p", "no:cacheprovider"], results, timeout=180)
    run("bench gpu", [sys.executable, "-m", "detrlib", "bench", "gpu", "--out", str(out)], results, timeout=300)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:
        import os

        os.environ["DETRLIB_HOME"] = work  # the run downloads nothing and leaves nothing behind
        command = prepare_run(Path(work))
        if run(f"gpu profile, {RUN_STEPS} steps", command, results, timeout=300):
            from detrlib.engine import read_metrics, read_steps

            seconds = sorted(read_steps(Path(work) / "run")["seconds"][20:])
            last = read_metrics(Path(work) / "run")[-1]
            note = (f"median {seconds[len(seconds) // 2]:.3f} s per step of 4 images; AP50 {last['AP50']:.3f} on "
                    f"generated data with random weights; stopped by {last.get('stopped')}")
            results[-1] = (*results[-1][:3], note)

    print(f"\n=== gpu_check summary ({gpu}, torch {torch.__version__})")
    for name, ok, seconds, note in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<24} {seconds:6.0f} s  {note[:160]}")
    failed = [name for name, ok, _, _ in results if not ok]
    print(f"{len(results) - len(failed)} of {len(results)} checks passed"
          + (f"; failed: {', '.join(failed)}" if failed else f"; bench table in {out.relative_to(ROOT)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
