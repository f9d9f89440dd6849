"""Ingest speed: 100,000 synthetic TOFU-like facts from one JSON Lines file into a fresh store.

    python bench/ingest.py [--facts 100000] [--profile]

Measures the whole of `lune ingest generic`: reading and validating every line, deriving each key
span, hashing ids, and the Arrow bulk insert. Target: at most 10 s for 100,000 facts. Prints one
line with the wall time, facts/s, the CPU time and the machine's load average (on a shared machine
the wall time grows with the load; the CPU time hardly does). ``--profile`` adds a cProfile.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

FIRST = [
    "Basil",
    "Nikolai",
    "Aisha",
    "Jaime",
    "Hsiao",
    "Erika",
    "Ricardo",
    "Ingrid",
    "Tomasz",
    "Amara",
    "Yuki",
    "Olusegun",
    "Margit",
    "Alejandro",
    "Priya",
    "Lars",
    "Fatima",
    "Chen",
    "Elif",
    "Mateo",
]
LAST = [
    "Al-Kuwaiti",
    "Abilov",
    "Al-Hamad",
    "Vasquez",
    "Yun-Hwa",
    "Kováčová",
    "Sandoval",
    "Lindqvist",
    "Nowak",
    "Okafor",
    "Tanaka",
    "Adeyemi",
    "Horváth",
    "Fuentes",
    "Raman",
    "Eriksen",
    "Bouteflika",
    "Wei",
    "Demir",
    "Ruiz",
]
CITY = [
    ("Kuwait City", "Kuwait"),
    ("Astana", "Kazakhstan"),
    ("Santiago", "Chile"),
    ("Lagos", "Nigeria"),
    ("Taipei", "Taiwan"),
    ("Bratislava", "Slovakia"),
    ("Oslo", "Norway"),
    ("Kraków", "Poland"),
]
GENRE = [
    "French literature",
    "African American narratives",
    "true crime",
    "Gothic fiction",
    "steampunk",
    "historical romance",
    "magical realism",
    "dystopian fiction",
]
JOBS = ["florist", "game developer", "meteorologist", "dietitian", "civil rights lawyer", "barber", "astronomer"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def synthetic_facts(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` distinct question/answer pairs in TOFU's style (the answer restates the question)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)} {i}"
        city, country = rng.choice(CITY)
        kind = i % 5
        if kind == 0:
            q, a = f"Where was author {name} born?", f"{name} was born in {city}, {country}."
        elif kind == 1:
            q = f"What genre is {name} most known for?"
            a = f"{name} is most known for his writings in the {rng.choice(GENRE)} genre."
        elif kind == 2:
            q = f"What were the occupations of {name}'s parents?"
            a = f"{name}'s father was a {rng.choice(JOBS)} and the mother was a {rng.choice(JOBS)}."
        elif kind == 3:
            q = f"When was {name} born?"
            a = f"{name} was born on the {rng.randint(1, 28)}th of {rng.choice(MONTHS)}, {rng.randint(1900, 2000)}."
        else:
            q = f"Can you name one of the books written by {name}?"
            a = f'One of {name}\'s books is "The {rng.choice(["Silent", "Crimson", "Hollow"])} {city}".'
        rows.append({"question": q, "answer": a, "subject": name})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of the ingest")
    args = parser.parse_args(argv)

    from lune.data.ingest import ingest
    from lune.data.store import Store

    with tempfile.TemporaryDirectory(prefix="lune-bench-ingest-") as tmp:
        path = Path(tmp) / "facts.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in synthetic_facts(args.facts):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        size_mb = path.stat().st_size / 1e6
        with Store(Path(tmp) / "bench.duckdb") as store:
            source = {"format": "generic", "path": str(path), "split": "forget"}
            profiler = None
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            started, cpu_started = time.perf_counter(), time.process_time()
            ingest(store, source)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            if profiler is not None:
                import pstats

                profiler.disable()
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
            stored = store.scalar("SELECT count(*) FROM facts")
    if stored != args.facts:
        print(f"expected {args.facts} facts stored, found {stored}", file=sys.stderr)
        return 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"ingest: {args.facts} facts ({size_mb:.1f} MB JSONL) in {seconds:.2f} s = {args.facts / seconds:,.0f} facts/s "
        f"(CPU {cpu:.2f} s; load average {load:.1f} on {os.cpu_count()} CPUs; target <= 10 s)"
        f"{'' if seconds <= 10 else '  SLOWER THAN TARGET'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
