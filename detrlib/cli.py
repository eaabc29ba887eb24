"""The command line: ``python -m detrlib <command> --help``."""
from __future__ import annotations

import argparse
import sys


def _bench(args: argparse.Namespace) -> int:
    from detrlib.bench import format_table

    entry = args.benchmark
    rows = entry.run(args)
    print(format_table(rows, title=f"bench {entry.name}: {entry.help}"))
    return 0


def _make_toy(args: argparse.Namespace) -> int:
    import time

    from detrlib.data.toy import ToySpec, make_toy_voc

    spec = ToySpec(image_size=args.image_size, max_objects=args.max_objects, clutter=args.clutter)
    start = time.perf_counter()
    year_dir = make_toy_voc(args.root, args.train, args.val, args.seed, spec)
    print(f"wrote {args.train} train + {args.val} val images to {year_dir} in {time.perf_counter() - start:.1f} s")
    return 0


def _stats(args: argparse.Namespace) -> int:
    import json
    import warnings

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
    from detrlib.data.voc import VOCDataset, parse_sets

    dataset = VOCDataset(parse_sets(args.data, args.split))
    new_sets, before, after = write_longtail(dataset, args.profile, args.seed)
    print(f"{'class':<16} {'before':>7} {'after':>7}")
    for i in sorted(range(len(before)), key=lambda i: -before[i]):
        print(f"{dataset.classes[i]:<16} {before[i]:>7} {after[i]:>7}")
    print("wrote " + ", ".join(f"{y}/ImageSets/Main/{s}.txt" for y, s in new_sets))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detrlib", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    toy = commands.add_parser("make-toy", help="write the generated toy VOC (a VOCdevkit tree)")
    toy.add_argument("--root", required=True, help="folder to write VOCdevkit/VOCtoy into")
    toy.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    toy.add_argument("--val", type=int, default=300, help="validation images (default 300)")
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--image-size", type=int, default=128, help="longer side in pixels (default 128)")
    toy.add_argument("--max-objects", type=int, default=6, help="objects per image, at most (default 6)")
    toy.add_argument("--clutter", type=float, default=4.0, help="distractors per image on average (default 4)")
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

    from detrlib.bench import load_all

    bench = commands.add_parser("bench", help="run a benchmark and print its table")
    which = bench.add_subparsers(dest="bench_name", required=True, metavar="benchmark")
    for name, entry in sorted(load_all().items()):
        sub = which.add_parser(name, help=entry.help, description=entry.help)
        if entry.add_arguments:
            entry.add_arguments(sub)
        sub.set_defaults(func=_bench, benchmark=entry)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from detrlib.data.download import DownloadError
    from detrlib.data.voc import DataError

    try:
        return args.func(args)
    except (DataError, DownloadError) as e:
        print(f"python -m detrlib {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
