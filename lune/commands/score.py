"""`lune score`: score every candidate not scored yet (similarity, answer leak, contradiction,
fluency, quality, duplicates), then write the preview verdicts of the curation policy."""

from __future__ import annotations

import argparse

HELP = "score the candidates (similarity, answer leak, contradiction, fluency, duplicates, quality)"
EXAMPLE = (
    "lune score\n"
    "  lune score --config my.yaml --only similarity,answer_leak\n"
    '  lune sql "SELECT reason, count(*) FROM v_candidate_quality GROUP BY ALL"'
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lune.cli_options import add_model_options
    from lune.generators.config import ScoreConfig

    parser.add_argument(
        "--config",
        help="pipeline config file whose `score` and `curate` sections apply "
        "(default: the embedded one); the options below override `score`",
    )
    parser.add_argument("--only", metavar="SCORER,...", help="run only these scorers (names as in score.scorers)")
    parser.add_argument(
        "--rescore", metavar="SCORER,...", help="forget these scorers' stored values first, so they are computed again"
    )
    add_model_options(parser, ScoreConfig, exclude=("scorers",))  # --only sets the scorers


def run(args: argparse.Namespace) -> int:
    from lune.cli_options import apply_options
    from lune.data.errors import LuneError
    from lune.data.scoring_queries import delete_scores
    from lune.data.store import Store
    from lune.flows.config import load_config
    from lune.generators.config import ScoreConfig
    from lune.generators.scorers import ScorerProgress, score_stage, scorer_names

    config = load_config(args.config)
    score = apply_options(args, ScoreConfig, config.score, source=args.config or "lune score options")
    names, known = {"--only": args.only, "--rescore": args.rescore}, scorer_names()
    for flag, value in names.items():
        for name in filter(None, (value or "").split(",")):
            if name not in known:
                raise LuneError(f"{flag}: unknown scorer {name!r}; known: {', '.join(known)}")
    if args.only:
        score = score.model_copy(update={"scorers": [n for n in args.only.split(",") if n]})

    def progress(report: ScorerProgress) -> None:
        if report.done:
            print(f"  {report.scorer:<14} {report.written:>8} new scores  ({report.seconds:.1f} s)", flush=True)
        elif report.judged < report.pending:  # a batch of a scorer with more to do: scores so far are stored
            print(
                f"  {report.scorer:<14} {report.judged:>8} of {report.pending} candidates, {report.written} new "
                f"scores stored  ({report.seconds:.1f} s)",
                flush=True,
            )

    with Store.open(args.db) as store:
        for name in filter(None, (args.rescore or "").split(",")):
            delete_scores(store, name)
        print(f"scoring candidates in {args.db}")
        result = score_stage(store, score, config.curate, progress=progress)
    preview = result["preview"]
    print(f"contradiction: {result['contradiction']}")
    print(
        "preview verdicts of the curation policy: kept "
        + ", ".join(f"{k} {v}" for k, v in preview["kept"].items())
        + "; dropped "
        + (", ".join(f"{k} {v}" for k, v in preview["dropped"].items()) or "none")
    )
    if result["below_minimum"]:
        print(
            f"{result['below_minimum']} fact(s) have fewer kept negatives than curate.min_per_fact: "
            'lune sql "SELECT * FROM v_fact_coverage ORDER BY kept_negatives LIMIT 20"'
        )
    return 0
