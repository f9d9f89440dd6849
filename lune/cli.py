"""lune: make a language model forget chosen facts, and prove it.

One entry point, one sub-command per pipeline stage. Each sub-command lives in
``lune/commands/<name>.py`` and provides ``HELP`` (one line), ``EXAMPLE``, ``add_arguments(parser)``
and ``run(args) -> int``; its heavy imports (torch, vLLM, Prefect) happen inside ``run`` so that
``lune --help`` is instant.

    lune ingest tofu data/sample/tofu --forget forget01
    lune stats
    lune sql "SELECT * FROM v_facts_by_split"
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from lune.data.errors import LuneError

# Sub-command name -> module, in pipeline order.
COMMANDS: dict[str, str] = {
    "ingest": "lune.commands.ingest",
    "generate": "lune.commands.generate",
    "score": "lune.commands.score",
    "curate": "lune.commands.curate",
    "export": "lune.commands.export",
    "teach": "lune.commands.teach",
    "unlearn": "lune.commands.unlearn",
    "evaluate": "lune.commands.evaluate",
    "report": "lune.commands.report",
    "run": "lune.commands.run",
    "sweep": "lune.commands.sweep",
    "sql": "lune.commands.sql",
    "stats": "lune.commands.stats",
}


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--db`` option every store-touching sub-command takes."""
    parser.add_argument(
        "--db",
        default=os.environ.get("LUNE_DB") or "lune.duckdb",
        help="DuckDB store file (default: $LUNE_DB, else ./lune.duckdb)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lune",
        description="Make a language model forget chosen facts with LoRA on negative examples, and prove it.",
        epilog="Run `lune COMMAND --help` for each command's options and an example.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=f"example:\n  {module.EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if getattr(module, "USES_STORE", True):
            add_db_argument(sub_parser)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # Quiet, offline defaults for the libraries lune drives; a user's own settings win.
    for key, value in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    # SIGTERM (a scheduler, `kill`, a container stopping) ends the process the way Ctrl-C does: the
    # running stage is marked failed in `runs`, and Prefect's temporary server, a child process that
    # is stopped at interpreter exit, does not outlive us (with the default handler it did).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if args.command not in ("sql", "stats"):  # the commands that may start a Prefect server
        from lune.leftovers import stop_orphaned_servers

        for server in stop_orphaned_servers():
            print(
                f"lune: stopped a Prefect temporary server left behind by a killed lune process ({server})",
                file=sys.stderr,
            )
    try:
        return int(args._run(args) or 0)
    except LuneError as err:
        print(f"lune {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"lune {args.command}: interrupted; what was stored so far is kept, rerun to resume", file=sys.stderr)
        return 130
    except Exception as err:  # a full disk or a folder that cannot be written is the user's to fix; the rest a bug
        from lune.data.io_errors import storage_error

        problem = storage_error(err)
        if problem is None:
            raise
        print(f"lune {args.command}: error: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
