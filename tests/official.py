"""An official-format DETR-R50 COCO checkpoint with random values, from the layout the official code
writes (tests/data/detr_r50_coco_state_dict.json: every name and shape of detr-r50-e632da11.pth)."""
import json
from pathlib import Path

import torch

LAYOUT = Path(__file__).resolve().parent / "data" / "detr_r50_coco_state_dict.json"


def official_state_dict(seed: int = 0) -> dict:
    """Every tensor of the official checkpoint, in its order and shape: norms at weight 1, bias 0,
    mean 0 and variance 1, other weights small and random, so that a forward pass stays finite."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in json.loads(LAYOUT.read_text())["keys"].items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0)
        elif name.endswith(("running_var", "weight")) and len(shape) == 1:
            state[name] = torch.ones(shape)
        elif name.endswith(("running_mean", "bias")):
            state[name] = torch.zeros(shape)
        else:
            state[name] = torch.randn(shape, generator=g) * 0.02
    return state


def write_official_checkpoint(path, seed: int = 0) -> Path:
    """``{"model": state_dict}``, as ``detr-r50-e632da11.pth`` is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": official_state_dict(seed)}, path)
    return path
