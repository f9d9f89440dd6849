"""`lune sweep`: run every point of a sweep file (a pipeline config with a `sweep:` section), reusing
the stages points share, and write the comparison report (docs/sweep.md)."""

from __future__ import annotations

import argparse

HELP = "run a sweep over config keys (negatives, curation, rank, layers, method) and report the trade-offs"
EXAMPLE = "lune sweep configs/sweep-quality.yaml --db sweep.duckdb"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="sweep file: a pipeline config with a `sweep:` section (docs/sweep.md)")
    parser.add_argument(
        "--check", action="store_true", help="expand and validate every point, print them, and run nothing"
    )


def run(args: argparse.Namespace) -> int:
    from lune.flows.sweep_config import load_sweep

    _, points = load_sweep(args.config)  # every point validated before anything runs
    if args.check:
        for point in points:
            print(f"{point.point_id}  seed {point.seed}  {point.values}")
        print(f"{len(points)} points; nothing run (--check)")
        return 0
    from lune.flows.sweep import sweep_flow

    summary = sweep_flow(args.db, args.config)
    print(f"sweep {summary['sweep_id']}: {len(summary['points'])} points in {summary['wall_seconds']:.0f} s")
    report = summary["report_files"].get("report_md")
    if report:
        print(f"report: {report}")
    print(f"results: lune sql \"SELECT * FROM sweep_points WHERE sweep_id = '{summary['sweep_id']}'\" --db {args.db}")
    return 0 if not summary["failures"] else 1
