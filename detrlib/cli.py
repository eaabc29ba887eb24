"""The command line: ``python -m detrlib <command> --help``.

A user's mistake (a bad flag or value, damaged data, a damaged checkpoint, a full disk) ends the
command with one line naming the file or field and what to do, and exit code 1; ``--debug`` (or
``DETRLIB_DEBUG=1``) shows the Python traceback instead, for bug reports.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import typing
import warnings
from pathlib import Path

from detrlib.errors import DetrlibError, ExistingFileError


def _rounded(value) -> str:
    """A metric as a line prints it: 3 decimals, or "none" where the run recorded none."""
    return f"{value:.3f}" if isinstance(value, (int, float)) else "none"


def _bench(args: argparse.Namespace) -> int:
    from detrlib.bench import format_table

    entry = args.benchmark
    print(format_table(entry.run(args), title=f"bench {entry.name}: {entry.help}"))
    return 0


def _make_toy(args: argparse.Namespace) -> int:
    import time

    from detrlib.data.toy import YEAR, ToySpec, make_toy_voc

    spec = ToySpec(image_size=args.image_size, max_objects=args.max_objects, clutter=args.clutter)
    _check_new([Path(args.root) / "VOCdevkit" / YEAR], "--root")
    start = time.perf_counter()
    year_dir = make_toy_voc(args.root, args.train, args.val, args.seed, spec)
    print(f"wrote {args.train} train + {args.val} val images to {year_dir} in {time.perf_counter() - start:.1f} s")
    return 0


def _stats(args: argparse.Namespace) -> int:
    import json

    from detrlib.data.stats import dataset_stats, format_stats
    from detrlib.data.voc import VOCDataset, parse_sets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the summary below reports what was skipped
        dataset = VOCDataset(parse_sets(args.data, args.split), strict=False)
    stats = dataset_stats(dataset)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    if dataset.report.skipped and not args.json:
        print("\n" + dataset.report.summary())
    return 0


def _longtail(args: argparse.Namespace) -> int:
    from detrlib.data.longtail import write_longtail
    from detrlib.data.voc import VOCDataset, parse_sets, split_file

    dataset = VOCDataset(parse_sets(args.data, args.split))
    new_sets, before, after = write_longtail(dataset, args.profile, args.seed)
    print(f"{'class':<16} {'before':>7} {'after':>7}")
    for i in sorted(range(len(before)), key=lambda i: -before[i]):
        print(f"{dataset.classes[i]:<16} {before[i]:>7} {after[i]:>7}")
    print("wrote " + ", ".join(str(split_file(y, s)) for y, s in new_sets))
    if args.plot:
        import matplotlib.pyplot as plt

        from detrlib.viz import plot_class_histogram

        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        for ax, counts, title in ((axes[0], before, "before"), (axes[1], after, f"after ({args.profile})")):
            plot_class_histogram(ax, dict(zip(dataset.classes, counts.tolist())), title=title)
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"plot saved to {args.plot}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from detrlib.data.download import archives_for, download_voc

    root = download_voc(args.root, archives_for(args.sets), args.download_dir)
    print(f"VOC is in {root / 'VOCdevkit'}")
    return 0


# the config fields the train command has a flag for; every other field is --set SECTION.FIELD=VALUE
TRAIN_FLAGS = {"--data": "data.root", "--train-sets": "data.train_sets", "--val-sets": "data.val_sets",
               "--epochs": "train.epochs", "--max-steps": "train.max_steps", "--max-minutes": "train.max_minutes",
               "--batch-size": "train.batch_size", "--lr": "train.lr", "--amp": "train.amp", "--seed": "train.seed",
               "--dn-groups": "model.dn_groups", "--dec-layers": "model.dec_layers",
               "--num-queries": "model.num_queries", "--init-checkpoint": "train.init_checkpoint",
               "--checkpoint-every": "train.checkpoint_every"}
TOY_FLAGS = {"--train": "data.toy_train", "--val": "data.toy_val", "--seed": "data.toy_seed",
             "--image-size": "data.toy_image_size", "--max-objects": "data.toy_max_objects",
             "--clutter": "data.toy_clutter"}


def _config_from_args(args: argparse.Namespace):
    """The train command's config, settled in :data:`detrlib.config.ORDER`."""
    from detrlib.config import settle

    flags = {key: (flag, getattr(args, flag[2:].replace("-", "_"))) for flag, key in TRAIN_FLAGS.items()}
    return settle(named=args.profile, sets=args.set or [], flags=flags)


def _train(args: argparse.Namespace) -> int:
    import torch

    from detrlib.checkpoint import list_checkpoints
    from detrlib.engine import train
    from detrlib.runfolder import check_new_run, read_metrics, run_dir

    cfg = _config_from_args(args)
    out = run_dir(cfg) if args.out is None else Path(args.out)
    check_new_run(out, args.resume)  # a folder that is refused is refused before anything is said about it
    if args.resume and not list_checkpoints(out / "checkpoints"):
        warnings.warn(f"--resume: {out} {'holds no checkpoint' if out.exists() else 'does not exist'}, so there is "
                      "nothing to resume: a new run starts there")
    print(cfg.describe())
    try:
        train(cfg, out, resume=args.resume)
    except torch.cuda.OutOfMemoryError:
        print(f"python -m detrlib train: the GPU ran out of memory at batch size {cfg.train.batch_size}: "
              "lower --batch-size (and raise --set train.grad_accum_steps=N to keep the same effective "
              "batch), or turn on mixed precision with --amp auto", file=sys.stderr)
        return 1
    last = read_metrics(out)[-1:] or [{}]
    print(f"run folder: {out} (AP50 {_rounded(last[0].get('AP50'))}, checkpoints in {out / 'checkpoints'})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from detrlib.checkpoint import load_trained
    from detrlib.config import pick_device
    from detrlib.data import DataError, build_dataset, build_loader, trained_classes
    from detrlib.data.voc import abbreviate
    from detrlib.engine import detect
    from detrlib.evaluate import evaluate_detections, ground_truth, save_results
    from detrlib.model import PostProcess
    from detrlib.runfolder import to_json

    if args.save_results:
        _check_new([args.save_results], "--save-results file")
    model, cfg, state = load_trained(args.checkpoint)
    if args.data is not None:
        cfg = cfg.replace(**{"data.root": args.data, "data.val_sets": tuple(args.split or ("VOC2007:test",))})
    elif args.split:
        cfg = cfg.replace(**{"data.val_sets": tuple(args.split)})
    if args.voc07 or args.split or args.all_images:  # the VOC protocol, and named sets, are whole sets
        cfg = cfg.replace(**{"data.val_subset": 0})
    device = pick_device(args.device)
    dataset = build_dataset(cfg.data, "val")
    classes = trained_classes(cfg, state)
    if tuple(dataset.classes) != classes:
        raise DataError(f"{args.checkpoint} was trained on {len(classes)} classes ({abbreviate(classes)}) but "
                        f"{dataset.describe_sets()} has {len(dataset.classes)} ({abbreviate(dataset.classes)}): "
                        "evaluate on data with the checkpoint's classes (a year folder's classes.txt lists them)")
    loader = build_loader(dataset, cfg.train.batch_size, train=False, num_workers=cfg.data.num_workers)
    predictions = detect(model.to(device), loader, PostProcess(sigmoid=cfg.model.class_head == "sigmoid"), device)
    metrics = evaluate_detections(ground_truth(dataset), predictions, list(dataset.classes), voc07=args.voc07)
    if args.save_results:
        save_results(predictions, args.save_results)
    if args.json:
        print(to_json(metrics))
        return 0
    print(f"{len(dataset)} images of {dataset.describe_sets()}, checkpoint {args.checkpoint}")
    for key in ["AP50", "AP", "AP75", "APs", "APm", "APl", "AR100"] + (["AP50_voc07"] if args.voc07 else []):
        print(f"{key:<11}{metrics[key]:.4f}")
    print("per-class AP50: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics["per_class_AP50"].items()))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from detrlib.checkpoint import load_trained
    from detrlib.data import collate, trained_classes
    from detrlib.data.transforms import build_val_transforms
    from detrlib.data.voc import check_size, image_file, image_header, load_image
    from detrlib.model import PostProcess
    from detrlib.viz import draw_boxes

    model, cfg, state = load_trained(args.checkpoint)
    classes = trained_classes(cfg, state)
    transform = build_val_transforms(cfg.data)
    postprocess = PostProcess(threshold=args.threshold, sigmoid=cfg.model.class_head == "sigmoid")
    inputs = [Path(p) for p in args.images]
    for path in inputs:  # every input usable before any picture is written
        check_size(path, *image_header(image_file(path))[:2], cfg.data.max_size)
    targets = _picture_names(inputs, Path(args.out))
    _check_new(targets, "--out")
    targets[0].parent.mkdir(parents=True, exist_ok=True)
    for path, target in zip(inputs, targets):
        image = load_image(path)
        tensor, _ = transform(image, {})
        images, mask, _ = collate([(tensor.as_subclass(torch.Tensor), {})])
        with torch.no_grad():
            result = postprocess(model(images, mask), [image.size[::-1]])[0]
        fig, ax = plt.subplots(figsize=(6, 6 * image.size[1] / image.size[0]))
        draw_boxes(ax, image, result["boxes"], result["labels"], classes, scores=result["scores"])
        fig.savefig(target, bbox_inches="tight")
        plt.close(fig)
        print(f"{path}: {len(result['scores'])} boxes above {args.threshold} -> {target}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from detrlib.checkpoint import load_trained
    from detrlib.config import pick_device
    from detrlib.data import build_dataset, build_loader
    from detrlib.engine import train
    from detrlib.model import count_parameters
    from detrlib.prune import finetune_config, prune, save_pruned
    from detrlib.runfolder import read_metrics

    source = Path(args.checkpoint)
    run = source if source.is_dir() else source.parent.parent
    out = Path(args.out) if args.out else run / "pruned" / f"dec{args.dec_layers}-q{args.num_queries}-{args.by}.pt"
    _check_new([out], "--out")
    model, cfg, state = load_trained(source)
    model.to(pick_device(cfg.train.device))  # where query usage is measured
    loader = None
    if args.by == "usage":
        dataset = build_dataset(cfg.data, "val")
        loader = build_loader(dataset, cfg.train.batch_size, train=False, num_workers=cfg.data.num_workers)
        print(f"measuring query usage on {len(dataset)} images of {dataset.describe_sets()}")
    pruned = prune(model, args.dec_layers, args.num_queries, args.by, loader, config=cfg)
    save_pruned(pruned, out, classes=state.get("classes"))
    before, after = (count_parameters(m)[-1]["total"] for m in (model, pruned.model))
    print(f"{pruned}\nparameters {before:,} -> {after:,}; wrote {out}")
    if args.finetune_steps:
        ft_cfg = finetune_config(pruned.config, out, args.finetune_steps)
        print(f"fine-tuning for {args.finetune_steps} steps: {ft_cfg.describe()}")
        ft_out = train(ft_cfg)
        print(f"run folder: {ft_out} (AP50 {_rounded(read_metrics(ft_out)[-1].get('AP50'))})")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from detrlib.ablation import ablate, table
    from detrlib.bench import format_table
    from detrlib.config import settle

    cfg = settle(named=args.profile)
    result = ablate(cfg, args.seeds, args.out, repeats=args.repeats, rfs_threshold=args.rfs_threshold,
                    progress=args.progress, note=args.note)
    where = f"{cfg.profile} profile, seeds {args.seeds}, {result['machine']['cpu']}"
    print(format_table(table(result, "ablation"), title=f"ablation ({where})"))
    print(format_table(table(result, "remedies"), title=f"class imbalance remedies ({where})"))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _check_new(paths, option: str) -> None:
    """Refuse to write over what the user has: nothing a command writes may exist already."""
    for path in paths:
        if Path(path).exists():
            raise ExistingFileError(f"{path} already exists: choose another {option}, or move it away first")


def _picture_names(inputs: list[Path], out: Path) -> list[Path]:
    """``out/<stem>_pred.png`` for each input; inputs with the same stem get ``<stem>-2``, ``-3``, ..."""
    names: list[Path] = []
    for path in inputs:
        stem, n = path.stem, 1
        while (target := out / f"{stem if n == 1 else f'{stem}-{n}'}_pred.png") in names:
            n += 1
        names.append(target)
    return names


def _field(key: str):
    """An argparse type: a flag read and checked as the config field ``key`` (one element of a tuple field)."""
    def read(text: str):
        from detrlib.config import ConfigError, check_value, parse_setting

        try:
            value = check_value(key, parse_setting(f"{key}={text}")[1])
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value[0] if isinstance(value, tuple) else value

    return read


def _add_fields(parser: argparse.ArgumentParser, flags: dict[str, str], defaults=None, **kwargs) -> None:
    """A flag for each config field of ``flags`` (``{"--epochs": "train.epochs"}``), with the field's
    type, choices and help text; defaults from the config ``defaults`` when given."""
    from detrlib.config import CHOICES, SECTIONS, field_types

    for flag, key in flags.items():
        section, _, name = key.partition(".")
        several = typing.get_origin(field_types(SECTIONS[section])[name]) is tuple
        default = getattr(getattr(defaults, section), name) if defaults else None
        text = SECTIONS[section].__dataclass_fields__[name].metadata["help"] + (f" (default {default})" if defaults else "")
        parser.add_argument(flag, type=_field(key), choices=CHOICES.get(key), nargs="+" if several else None,
                            default=default, help=text, **kwargs)


def _not_empty(text: str) -> str:
    """A path to write to: an empty one would mean the current folder, which nobody asks for that way."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name a path (. for the current folder)")
    return text


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from detrlib.ablation import RFS_THRESHOLD
    from detrlib.bench import load_all
    from detrlib.config import ORDER, PROFILES, Config, profile_settings

    parser = argparse.ArgumentParser(prog="python -m detrlib", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    toy = commands.add_parser("make-toy", help="write the generated toy VOC (a VOCdevkit tree)")
    toy.add_argument("--root", type=_not_empty, required=True, help="folder to write VOCdevkit/VOCtoy into")
    _add_fields(toy, TOY_FLAGS, defaults=profile_settings("quick"))
    toy.set_defaults(func=_make_toy)

    stats = commands.add_parser("stats", help="images, objects per class and box sizes of a VOC-format tree")
    stats.add_argument("--data", required=True, help="folder holding VOCdevkit (or the VOCdevkit folder)")
    stats.add_argument("--split", required=True, nargs="+",
                       help="YEAR:split sets (VOC2007:test), or a split name for every year folder that has it")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(func=_stats)

    longtail = commands.add_parser("longtail", help="write the split files of a long-tailed subset")
    longtail.add_argument("--data", required=True, help="folder holding VOCdevkit")
    longtail.add_argument("--split", required=True, nargs="+", help="YEAR:split sets to sub-sample")
    longtail.add_argument("--profile", default="exp50", help="exp<R> or step<R>, R the head-to-tail ratio")
    longtail.add_argument("--seed", type=int, default=0)
    longtail.add_argument("--plot", help="save the before/after class histograms to this image file")
    longtail.set_defaults(func=_longtail)

    download = commands.add_parser("download", help="download and extract PASCAL VOC (md5-checked, resumable)")
    download.add_argument("--root", required=True, help="folder to extract VOCdevkit into (e.g. a mounted Drive)")
    download.add_argument("--sets", nargs="+", default=["VOC2007:trainval", "VOC2007:test", "VOC2012:trainval"])
    download.add_argument("--download-dir", help="where the archives go (default: the detrlib work folder)")
    download.set_defaults(func=_download)

    train = commands.add_parser(
        "train", help="train DETR; writes checkpoints and metrics.jsonl into a run folder",
        description="Train DETR in a profile's settings, changed by the options below. " + ORDER + " The run "
                    "folder holds config.json, metrics.jsonl (one JSON object per evaluation) and checkpoints/.")
    train.add_argument("--profile", choices=PROFILES,
                       help="settings to start from (default: gpu on a CUDA GPU, quick otherwise; full is the "
                            "reference project's whole recipe)")
    train.add_argument("--out", type=_not_empty, help="run folder (default: one per configuration under the runs folder)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its newest readable checkpoint")
    _add_fields(train, TRAIN_FLAGS)
    train.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                       help="any other config field, e.g. --set train.lr_drop=30 (repeatable)")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint: AP50, COCO AP, per-class AP")
    evaluate.add_argument("--checkpoint", required=True, help="a run checkpoint, best.pt, or a run folder")
    evaluate.add_argument("--data", help="a VOC-format folder instead of the run's own data")
    evaluate.add_argument("--split", nargs="+", metavar="YEAR:SPLIT", help="sets to evaluate on")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    evaluate.add_argument("--voc07", action="store_true", help="also VOC2007's 11-point AP (on every image of the sets)")
    evaluate.add_argument("--all-images", action="store_true",
                          help="every image of the run's validation sets, not the fixed subset its evaluations used")
    evaluate.add_argument("--save-results", type=_not_empty, metavar="FILE", help="write predictions as COCO results JSON")
    _add_fields(evaluate, {"--device": "train.device"}, defaults=Config())
    evaluate.set_defaults(func=_eval)

    pred = commands.add_parser("predict", help="draw a checkpoint's detections on images")
    pred.add_argument("images", nargs="+", help="image files")
    pred.add_argument("--checkpoint", required=True, help="a run checkpoint, best.pt, or a run folder")
    pred.add_argument("--out", type=_not_empty, default="predictions", help="folder for the pictures (default ./predictions)")
    pred.add_argument("--threshold", type=_probability, default=0.5, help="lowest score drawn (default 0.5)")
    pred.set_defaults(func=_predict)

    prune = commands.add_parser(
        "prune", help="keep the first K decoder layers and N queries of a trained run, then fine-tune",
        description="Prune a trained run (chapter 6): keep its first K decoder layers and N of its object "
                    "queries, the first N or the N most often matched to an object on the run's validation "
                    "set. Writes a checkpoint that eval and predict read, and can fine-tune it.")
    prune.add_argument("--checkpoint", required=True, help="a run folder, run checkpoint or best.pt")
    _add_fields(prune, {"--dec-layers": "model.dec_layers", "--num-queries": "model.num_queries"}, required=True)
    prune.add_argument("--by", choices=["first", "usage"], default="first",
                       help="which queries: the first N, or the N most used on the validation set (default first)")
    prune.add_argument("--out", type=_not_empty, help="pruned checkpoint file (default: RUN/pruned/decK-qN-BY.pt)")
    prune.add_argument("--finetune-steps", type=_field("train.max_steps"), default=0,
                       help="then fine-tune for this many steps at a tenth of the run's learning rates (default 0)")
    prune.set_defaults(func=_prune)

    ablation = commands.add_parser(
        "ablate", help="train the ablation and the class imbalance remedies with several seeds (chapter 8)",
        description="Train every variant of chapter 8 for every seed with the profile's budget: vanilla DETR, "
                    "+ denoising, + the pruned decoder, + mixed precision; and against the recipe in fp32, "
                    "repeat-factor sampling, the class-balanced loss and the focal loss. Finished runs are "
                    "reused. Prints the tables and writes every number, with the machine, date and "
                    "command, as JSON. Takes an hour or more in the quick profile on a CPU.")
    ablation.add_argument("--profile", choices=PROFILES,
                          help="settings to start from (default: gpu on a CUDA GPU, quick otherwise)")
    ablation.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    ablation.add_argument("--out", help="JSON file to write the results to")
    ablation.add_argument("--repeats", type=int, default=20, help="timed inference calls per variant (default 20)")
    ablation.add_argument("--rfs-threshold", type=float, default=RFS_THRESHOLD,
                          help="repeat-factor threshold: classes in fewer than this share of the images are "
                               "repeated (default %(default)s)")
    ablation.add_argument("--note", default="", help="a remark stored with the results (e.g. the machine was shared)")
    ablation.add_argument("--progress", action="store_true", help="show the training progress bars")
    ablation.set_defaults(func=_ablate)

    bench = commands.add_parser("bench", help="run a benchmark and print its table")
    which = bench.add_subparsers(dest="bench_name", required=True, metavar="benchmark")
    for name, entry in sorted(load_all().items()):
        sub = which.add_parser(name, help=entry.help, description=entry.help)
        if entry.add_arguments:
            entry.add_arguments(sub)
        sub.set_defaults(func=_bench, benchmark=entry)
    _add_debug(parser)
    return parser


def _add_debug(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """``--debug`` on the command and on every subcommand (``python -m detrlib train ... --debug``)."""
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show the Python traceback of an error (also DETRLIB_DEBUG=1), for bug reports")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_debug(sub, top=False)


def _describe(err: BaseException) -> str:
    """One line for a user's mistake."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    return str(err)


def _is_user_error(err: Exception) -> bool:
    """Whether ``err`` is meant for the user: a :class:`~detrlib.errors.DetrlibError`, a machine out of
    GPU memory, or a disk or permission the system refuses. Anything else is a bug."""
    torch = sys.modules.get("torch")
    out_of_memory = (torch.cuda.OutOfMemoryError,) if torch else ()
    refused = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM,
                                                         errno.EROFS)
    return isinstance(err, (DetrlibError, *out_of_memory)) or refused


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line, for the results files that record it
    if args.debug or os.environ.get("DETRLIB_DEBUG", "0") not in ("", "0"):
        return args.func(args)
    name = f"python -m detrlib {args.command}"
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_: print(f"{name}: warning: {message}", file=sys.stderr)
        try:
            return args.func(args)
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=sys.stderr)
            return 130
        except Exception as err:
            if _is_user_error(err):
                print(f"{name}: {_describe(err)}", file=sys.stderr)
            else:  # a bug: one line here too, and the traceback on request
                print(f"{name}: unexpected {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
                      "(a bug in detrlib? rerun with --debug and report the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
