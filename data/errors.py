"""User-facing errors: each says what is wrong, where (file, line, field, setting), and what to do.

The CLI prints these as one line and exits with status 2; anything else is a bug and keeps its
traceback.
"""


class LuneError(Exception):
    """An error caused by input or settings, with a message meant for the user."""


class InputError(LuneError):
    """Bad input data: the message starts with ``file:line: field: problem``."""

    def __init__(self, source: str, line: int | None, field: str | None, problem: str):
        self.source, self.line, self.field, self.problem = source, line, field, problem
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")
