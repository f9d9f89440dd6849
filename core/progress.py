"""Progress lines on stderr: ``lune: [stage] ...``, which a user and a supervising script both read."""

from __future__ import annotations

import sys


def announce(message: str) -> None:
    """One progress line on stderr, whatever Prefect's log level (``[unlearn:lune] started``,
    ``[evaluate] attack relearning: model 3/7 (npo), 412 s``)."""
    # Not print(): inside a flow with log_prints, Prefect turns prints to stdout and stderr into
    # log records, which its log level may hide.
    sys.stderr.write(f"lune: {message}\n")
    sys.stderr.flush()
