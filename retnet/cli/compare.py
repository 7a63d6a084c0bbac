"""``retnet compare``: the paper's architecture comparison (Tables 5 and 6) on one harness.

A comparison config is a ``retnet train`` config (same keys, same ``--key=value`` overrides) plus the
``compare`` and ``baseline`` sections; see docs/compare.md.

Examples::

    retnet compare --preset tiny                                  # CPU, all eleven models
    retnet compare --preset small --archs transformer,retnet      # a subset
    retnet compare --config configs/compare/small.yaml --prepare-only
    retnet compare --preset tiny --steps=500 --data.corpus=shakespeare --compare.out_of_domain=[sotu,linux]
    retnet compare --preset tiny --optim.lr=1e-3 --baseline.num_heads=4
    retnet compare --preset medium --only retnet --seeds 0,1   # part of a study; finished runs are skipped
    retnet compare --preset medium --report-only --merge gpu/entries.json   # fold in runs finished elsewhere
    retnet compare --preset tiny --ood ~/texts/novels ~/texts/mail.txt   # extra out-of-domain corpora
    retnet compare --preset medium --probes mqar,extrapolation
    retnet compare --preset scaling-tiny --scaling            # size scaling (Figure 5): scaling.json/.md/.png
    retnet compare --preset scaling-gpu --scaling --only retnet --sizes 2,3,4   # a part of it per command
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``compare`` subcommand."""
    p = subparsers.add_parser(
        "compare",
        help="train and evaluate RetNet against Transformer, Linear Transformer, RWKV, H3 and Hyena",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset", default="tiny", help="tiny (CPU), small or medium (one H200), 200m (paper Table 5), scaling-*"
    )
    p.add_argument("--config", default=None, help="YAML file (configs/compare/*.yaml) applied over the preset")
    p.add_argument("--archs", default=None, help="comma-separated subset of architectures (--compare.archs)")
    p.add_argument("--out", default=None, help="run folder (--compare.out_dir; default runs/compare-<preset>)")
    p.add_argument("--prepare-only", action="store_true", help="only fetch and tokenise the corpora")
    p.add_argument("--only", default=None, help="comma-separated architectures of compare.archs to train this time")
    p.add_argument("--seeds", default=None, help="comma-separated seeds of every architecture (--compare.seeds)")
    p.add_argument("--ood", nargs="+", default=[], metavar="PATH",
                   help="local text files or folders evaluated as extra out-of-domain corpora")  # fmt: skip
    p.add_argument("--sweep-only", action="store_true", help="run only the learning-rate sweeps of the selection")
    p.add_argument("--probes", default=None, help="comma-separated probes to run: mqar, passkey, extrapolation")
    p.add_argument(
        "--scaling",
        action="store_true",
        help="run the size-scaling study of the config's scaling section instead of the comparison",
    )
    p.add_argument("--sizes", default=None, help="with --scaling: comma-separated depths of scaling.sizes to train")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rebuild the report (or the scaling report) from the results file")  # fmt: skip
    p.add_argument("--merge", nargs="+", default=[], metavar="FILE",
                   help="first add the finished runs of these results files to this comparison's")  # fmt: skip
    p.set_defaults(func=run, accepts_overrides=True, overrides=[])


def run(args: argparse.Namespace) -> int:
    """Build the config from the arguments and run the comparison."""
    from ..compare import load_compare_config, run_comparison

    overrides = list(args.overrides)
    if args.archs:
        overrides.append(f"--compare.archs={args.archs}")
    if args.out:
        overrides.append(f"--compare.out_dir={args.out}")
    if args.seeds:
        overrides.append(f"--compare.seeds=[{args.seeds}]")
    if args.probes:
        overrides.append(f"--probes.run=[{args.probes}]")
    config = load_compare_config(args.preset, args.config, overrides)
    if args.ood:
        missing = [path for path in args.ood if not Path(path).expanduser().exists()]
        if missing:
            raise FileNotFoundError(f"--ood: no such file or folder: {', '.join(missing)}")
        extra = [str(Path(path).expanduser()) for path in args.ood]
        config.compare.out_of_domain = list(dict.fromkeys([*config.compare.out_of_domain, *extra]))
    if args.merge:
        _merge_results(config, args.merge)
    only = args.only.split(",") if args.only else None
    if args.sizes and not args.scaling:
        raise ValueError("--sizes needs --scaling")
    if args.scaling:
        return _run_scaling(args, config, only)
    if args.report_only:
        from ..compare import rebuild_report

        rebuild_report(config, command=shlex.join(["retnet", *sys.argv[1:]]))
        print(f"results: {config.compare.out_dir}/results.md")
        return 0
    doc = run_comparison(config, prepare_only=args.prepare_only, command=shlex.join(["retnet", *sys.argv[1:]]),
                         only=only, sweep_only=args.sweep_only)  # fmt: skip
    if not args.prepare_only:
        print(f"results: {config.compare.out_dir}/results.md")
    return 0 if doc is not None else 1


def _merge_results(config, paths: list[str]) -> None:
    """``--merge``: add the runs of other results files (a study spread over machines) to this one's."""
    from ..compare.entries import ResultsFile

    target = ResultsFile(config.compare.results_file or Path(config.compare.out_dir) / "entries.json")
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--merge: no such results file: {path}")
        added, differing = target.merge(ResultsFile(path))
        print(f"{path}: {len(added)} runs added to {target.path}")
        if differing:
            print(
                f"{path}: {len(differing)} runs already held with other numbers, kept as held: {', '.join(differing)}"
            )


def _run_scaling(args: argparse.Namespace, config, only: list[str] | None) -> int:
    """``--scaling``: the size-scaling study (retnet.compare.scaling)."""
    from ..compare.scaling import run_scaling

    sizes = [int(depth) for depth in args.sizes.split(",")] if args.sizes else None
    run_scaling(config, only=only, only_sizes=sizes, command=shlex.join(["retnet", *sys.argv[1:]]),
                prepare_only=args.prepare_only, report_only=args.report_only)  # fmt: skip
    if not args.prepare_only:
        print(f"scaling report: {config.compare.out_dir}/scaling.md")
    return 0
