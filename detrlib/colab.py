"""Colab, for the chapters: the banner a runtime without a GPU prints, and Google Drive for the runs and downloads
(the library itself reads only ``DETRLIB_RUNS`` and ``DETRLIB_DOWNLOADS``). Both do nothing beyond printing outside
Colab, so a chapter calls them unconditionally."""
from __future__ import annotations

import os
import sys
from pathlib import Path

DRIVE = "/content/drive"
COLAB_DRIVE = Path(DRIVE) / "MyDrive"  # where Colab mounts the reader's Drive
GPU_RUNTIME = "Runtime > Change runtime type > T4 GPU > Save"


def on_colab() -> bool:
    return "google.colab" in sys.modules


def gpu_runtime_banner(profile: str | None = None) -> None:
    """On Colab without a CUDA GPU, print how to switch to a GPU runtime and what runs instead
    (the profile a chapter's ``PROFILE`` and ``DETRLIB_PROFILE`` choose); elsewhere nothing."""
    from detrlib.config import GPU_PROFILES, has_cuda, resolve_profile

    if not on_colab() or has_cuda():
        return
    chosen = resolve_profile(profile)
    if chosen in GPU_PROFILES:
        instead = (f"The {chosen} profile you chose needs a GPU: its training cells will stop with an error. "
                   'Switch the runtime, or set PROFILE = "quick" to run the small model on the CPU.')
    else:
        instead = (f"Until you do, this chapter runs the {chosen} profile on the CPU: a small DETR trained from "
                   "scratch on generated toy data, not DETR-R50 fine-tuned on PASCAL VOC.")
    rule = "=" * 78
    print(f"{rule}\nThis Colab runtime has no GPU.\nFor the GPU chapter: {GPU_RUNTIME}, then Runtime > Run all."
          f"\n{instead}\n{rule}")


def mount_drive() -> None:
    """On Colab, mount Google Drive so that runs go to ``MyDrive/detrlib/runs``, where a disconnect does not erase
    them and a rerun resumes or reuses them; elsewhere mount nothing. Prints where this chapter's runs live."""
    from detrlib.config import runs_dir

    note = ""
    if on_colab():
        try:
            from google.colab import drive

            drive.mount(DRIVE)
        except Exception as err:  # permission refused, or no Drive in this runtime
            note = (f" (Google Drive is not mounted: {err}; these runs live on the Colab VM's own disk, "
                    "which a disconnect erases)")
    use_drive()
    print(f"runs live in {shown_path(runs_dir())}{note}")


def use_drive() -> None:
    """When Google Drive is mounted, keep runs and downloads in ``MyDrive/detrlib`` (unless
    ``DETRLIB_RUNS`` or ``DETRLIB_DOWNLOADS`` already name a folder): a disconnect then erases
    neither, and a new session fetches nothing again."""
    if not COLAB_DRIVE.is_dir():
        return
    for variable, folder in (("DETRLIB_RUNS", "runs"), ("DETRLIB_DOWNLOADS", "downloads")):
        if not os.environ.get(variable):
            os.environ[variable] = str(COLAB_DRIVE / "detrlib" / folder)


def shown_path(path: str | Path) -> str:
    """``path`` as a page shows it: relative to the checkout detrlib runs from, or with ``~`` for
    the home folder, so that no page prints the folder it happened to be built in."""
    path = Path(path).resolve()
    checkout = Path(__file__).resolve().parents[1]
    for base, prefix in ((checkout, ""), (Path.home().resolve(), "~/")):
        if path.is_relative_to(base) and path != base:
            return prefix + str(path.relative_to(base))
    return str(path)
