"""`lune report`: render a stored evaluation run again (Markdown, JSON, PNG plots) from
``eval_results`` and ``eval_items`` alone: no model is loaded."""

from __future__ import annotations

import argparse

HELP = "render the report of a stored evaluation run again (report.md, report.json, plots) from the store"
EXAMPLE = "lune report --run 3f2a9c1d0b7e4a55 --out reports/3f2a"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run",
        dest="run_id",
        metavar="RUN_ID",
        help="evaluation run id (default: the latest completed `lune evaluate` run)",
    )
    parser.add_argument("--out", metavar="DIR", help="report folder (default: reports/RUN_ID)")
    parser.add_argument("--no-plots", action="store_true", help="write the Markdown and JSON only")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lune.commands.evaluate import print_headline
    from lune.data import evaluation_queries as q
    from lune.data.errors import LuneError
    from lune.data.store import Store
    from lune.evaluation.report import headline, render_run

    with Store.open(args.db) as store:
        run_id = args.run_id or q.latest_evaluate_run(store)
        if not run_id:
            raise LuneError(f"{store.path}: no completed evaluation run; run `lune evaluate` first")
        q.run_row(store, run_id)  # a clear error for an unknown id
        out = Path(args.out) if args.out else Path("reports") / run_id
        files = render_run(store, run_id, out, plots=not args.no_plots)
        print_headline(headline(q.run_results(store, run_id)))
    print(f"run {run_id}: report in {files['report_md']}")
    return 0
