"""The book's closing measurements (chapter 8), written to one JSON file.

- **Ablation**: from vanilla DETR to the seed project's recipe one change at a time: denoising (chapter 5), the
  pruned decoder (4 layers and 50 queries instead of 6 and 100, chapter 6, mapped onto a smaller profile's model by
  :func:`~detrlib.prune.pruning_grid`), mixed precision (chapter 7).
- **Class imbalance remedies**, each against the same baseline (the recipe in fp32): repeat-factor sampling (Gupta et
  al., 2019), the class-balanced loss (Cui et al., 2019) and the focal loss (Lin et al., 2017).

Every variant trains with the profile's budget (the same number of optimizer steps) for each seed. Runs live in
:func:`~detrlib.runfolder.run_dir` folders keyed by their configuration, so a finished run is reused, never trained
twice. The file records where and how the numbers were measured.
"""
from __future__ import annotations

import datetime
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from detrlib import results
from detrlib.config import Config
from detrlib.environment import machine
from detrlib.errors import ConfigError, MissingFileError
from detrlib.results import refresh_index

METRICS = ("AP50", "AP", "head_AP50", "tail_AP50", "train_time_s")
RFS_THRESHOLD = 0.25  # repeat images whose rarest class is in fewer than a quarter of the images


@dataclass
class Variant:
    """One configuration to measure: a name, its group and its changes to the profile's settings."""

    group: str  # "ablation" or "remedies"
    name: str
    changes: dict = field(default_factory=dict)  # dotted config fields -> values

    def config(self, cfg: Config, seed: int) -> Config:
        return cfg.replace(**self.changes, **{"train.seed": seed})

    def command(self, profile: str, seed: int) -> str:
        """The ``python -m detrlib train`` command that trains (or resumes) this variant's run."""
        sets = " ".join(f"--set {k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in self.changes.items())
        return f"python -m detrlib train --profile {profile} --seed {seed} --resume {sets}".strip()


def variants(cfg: Config, steps: int, rfs_threshold: float = RFS_THRESHOLD) -> list[Variant]:
    """The variants of the ablation and of the remedies for the profile ``cfg``.

    ``steps`` is the budget (``cfg.train.total_steps``); repeat-factor sampling makes epochs longer, so its run stops
    after that many steps instead of after the profile's epochs (the learning rate drops at the same step, which
    counts epochs of the unrepeated set).
    """
    from detrlib.prune import pruning_grid

    layers, queries = pruning_grid(cfg)
    groups = cfg.model.dn_groups or 5
    big = {"model.dec_layers": layers[0], "model.num_queries": queries[0]}
    seed_shape = {"model.dec_layers": layers[1], "model.num_queries": queries[1]}
    recipe = {**seed_shape, "model.dn_groups": groups, "train.amp": "off"}  # the baseline of the remedies
    return [
        Variant("ablation", "vanilla", {**big, "model.dn_groups": 0, "train.amp": "off"}),
        Variant("ablation", "+DN", {**big, "model.dn_groups": groups, "train.amp": "off"}),
        Variant("ablation", "+pruning", recipe),
        Variant("ablation", "+AMP", {**recipe, "train.amp": "auto"}),
        Variant("remedies", "baseline", recipe),
        Variant("remedies", "repeat-factor sampling",
                {**recipe, "data.repeat_factor_t": rfs_threshold, "train.max_steps": steps}),
        Variant("remedies", "class-balanced loss", {**recipe, "train.class_loss": "balanced"}),
        Variant("remedies", "focal loss", {**recipe, "train.class_loss": "focal"}),
    ]


def _summary(values: list[float]) -> dict:
    values = [v for v in values if v is not None and math.isfinite(v)]  # a class missing from val has no AP
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def ablate(cfg: Config, seeds: list[int], out: str | Path | None = None, repeats: int = 20,
           rfs_threshold: float = RFS_THRESHOLD, progress: bool = False, note: str = "") -> dict:
    """Train (or reuse) every variant for every seed, time inference, and return (and with ``out``, write) the results.

    Each row holds, per variant: the parameters of the model as trained, the inference seconds per image (batch 1 at
    the validation size, in the variant's precision, median of ``repeats`` calls, the variants taking turns), and for
    each metric of :data:`METRICS` the value of every seed's final evaluation with their mean and standard deviation,
    the same for each class's AP@0.5, and each seed's AP@0.5 curve ``[[step, AP50], ...]``.
    """
    from detrlib.bench import take_turns
    from detrlib.bench.infer import inference_job
    from detrlib.checkpoint import load_trained
    from detrlib.config import pick_device
    from detrlib.data import build_dataset
    from detrlib.data.batching import image_share, training_labels
    from detrlib.engine import train
    from detrlib.precision import precision
    from detrlib.runfolder import read_metrics, to_json
    from detrlib.model import count_parameters

    if not seeds:
        raise ConfigError("ablate needs at least one seed")
    train_set = build_dataset(cfg.data, "train")
    steps = cfg.train.total_steps(len(train_set))
    plan = variants(cfg, steps, rfs_threshold)
    device = pick_device(cfg.train.device)
    rows, jobs = [], {}
    for v in plan:
        folders = [train(v.config(cfg, seed), progress=progress) for seed in seeds]  # finished runs are reused
        histories = [read_metrics(folder) for folder in folders]
        finals = [history[-1] for history in histories]
        model, trained_cfg, _ = load_trained(folders[0])
        jobs[v.name] = inference_job(model.to(device), cfg.data.val_size, 1,
                                     precision(trained_cfg.train.amp, device).dtype, device)
        row = {"group": v.group, "name": v.name, "changes": v.changes,
               "commands": [v.command(cfg.profile, seed) for seed in seeds],
               "runs": [folder.name for folder in folders],
               "parameters": count_parameters(model)[-1]["total"],
               "steps": [f["step"] for f in finals]}
        for metric in METRICS:
            values = [f.get(metric) for f in finals]
            row[metric] = {"seeds": values, **_summary(values)}
        per_class = {c: [f["per_class_AP50"][c] for f in finals] for c in finals[0]["per_class_AP50"]}
        row["per_class_AP50"] = {c: {"seeds": values, **_summary(values)} for c, values in per_class.items()}
        row["curves"] = [[[h["step"], h["AP50"]] for h in history] for history in histories]
        rows.append(row)
    times = take_turns(jobs, repeats, warmup=2, device=device)
    for row in rows:
        row["s_per_image"] = times[row["name"]]

    command = (f"python -m detrlib ablate --profile {cfg.profile} --seeds {' '.join(map(str, seeds))} "
               f"--repeats {repeats} --rfs-threshold {rfs_threshold:g}")
    if out is not None:
        command += f" --out {out}"
    result = {
        "command": command, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "note": note, "profile": cfg.profile, "config": cfg.describe(),
        "seeds": list(seeds), "budget_steps": steps, "rfs_threshold": rfs_threshold,
        "inference": {"batch": 1, "size": cfg.data.val_size, "repeats": repeats, "device": device.type},
        "train_counts": {name: train_set.class_counts()[name] for name in train_set.classes},
        "train_image_share": dict(zip(train_set.classes, image_share(training_labels(train_set),
                                                                    len(train_set.classes)).tolist())), "rows": rows,
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(json.loads(to_json(result)), indent=1) + "\n")
        refresh_index(out)
    return result


def load_results(path: str | Path) -> dict:
    """A results file written by :func:`ablate`."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no results file {path}: write it with python -m detrlib ablate --out {path}")
    return json.loads(path.read_text())


def measured_results(name: str = "quick-ablation.json") -> Path:
    """The results file the repository keeps in ``results/``: from the checkout when there, else fetched from the
    repository (as on Colab, where only the package is installed)."""
    paths, why = results.find(name)
    if not paths:
        raise MissingFileError(f"no {name} in {results.where()}" + (f": {why}" if why else ""))
    return paths[0]


def table(results: dict, group: str) -> list[dict]:
    """Printable rows of one group: mean ± standard deviation over the seeds."""

    def pm(x, digits=3):
        if x["mean"] is None:
            return "n/a"
        return f"{x['mean']:.{digits}f} ± {x['std']:.{digits}f}"

    return [{"variant": r["name"], "AP@0.5": pm(r["AP50"]), "COCO AP": pm(r["AP"]),
             "head AP@0.5": pm(r["head_AP50"]), "tail AP@0.5": pm(r["tail_AP50"]),
             "train s": pm(r["train_time_s"], 0), "ms/image": f"{r['s_per_image'] * 1e3:.2f}",
             "parameters": f"{r['parameters']:,}"} for r in results["rows"] if r["group"] == group]
