"""Progress of a generate run: batches done, candidates/s and ETA, to a logger and a tqdm bar."""

from __future__ import annotations

import logging
import time
from typing import Any


class Progress:
    """Reports each finished batch; a context manager that closes its bar.

    >>> with Progress(total_batches=6, total_facts=43, logger=logger) as progress:
    ...     progress.update(facts=8, candidates=120)
    """

    def __init__(self, total_batches: int, total_facts: int, logger: logging.Logger | Any):
        from tqdm import tqdm

        self.total_batches, self.total_facts, self.logger = total_batches, total_facts, logger
        self.batches = self.facts = self.candidates = 0
        self.started = time.perf_counter()
        self.bar = tqdm(total=total_facts, unit="fact", desc="generate", disable=None, leave=False)

    def update(self, facts: int, candidates: int) -> None:
        """One more batch done, of ``facts`` facts that made ``candidates`` candidates."""
        self.batches += 1
        self.facts += facts
        self.candidates += candidates
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.candidates / elapsed
        eta = elapsed / self.facts * (self.total_facts - self.facts) if self.facts else float("nan")
        self.bar.update(facts)
        self.bar.set_postfix(candidates=self.candidates, rows_per_s=f"{rate:,.0f}")
        self.logger.info(
            "batch %d/%d done: %d facts, %d candidates so far, %.0f rows/s, ETA %.0f s",
            self.batches,
            self.total_batches,
            self.facts,
            self.candidates,
            rate,
            eta,
        )

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
