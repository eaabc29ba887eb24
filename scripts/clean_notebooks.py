"""Strip what must not reach git from notebooks: outputs, execution counts, widget state and
cell metadata other than tags. The notebook metadata Colab reads (``accelerator``, ``colab``: the
GPU runtime a chapter opens on) stays. Usage: python scripts/clean_notebooks.py notebooks/*.ipynb"""
import sys

import nbformat

KEPT_METADATA = ("kernelspec", "language_info", "jupytext", "accelerator", "colab")


def clean(path: str) -> bool:
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in KEPT_METADATA}
    nb.metadata.get("language_info", {}).pop("version", None)
    if "colab" in nb.metadata:  # what Colab adds on a save (the notebook's name, its history) is not the chapter's
        nb.metadata["colab"] = {k: v for k, v in nb.metadata["colab"].items() if k == "gpuType"} | {"provenance": []}
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.pop("id", None)
    nb.nbformat_minor = 4  # no cell ids: they churn on every save
    after = nbformat.writes(nb)
    if after != before:
        with open(path, "w") as f:
            f.write(after)
    return after != before


if __name__ == "__main__":
    changed = [p for p in sys.argv[1:] if clean(p)]
    print(f"cleaned {len(changed)} of {len(sys.argv) - 1} notebooks")
