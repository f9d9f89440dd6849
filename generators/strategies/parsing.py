"""Reading candidates out of raw model output: the one parser every strategy uses.

Models answer in many shapes: clean JSON, JSON wrapped in a code fence or chatter, a JSON list,
a numbered list, a line with a label ("False answer: ..."), or nothing usable. :func:`parse_output`
returns the texts it could read and one reason per thing it could not, so the caller writes a
``rejections`` row instead of crashing or dropping output silently.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lune.core.matching import normalize

MAX_CHARS = 1000

_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_LIST_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+")
_LABEL = re.compile(
    r"^\s*(?:(?:false|wrong|incorrect|counterfactual|negative|new|alternative|paraphrased|rewritten|adversarial)\s+)?"
    r"(?:answer|question|query|paraphrase|reply|response|output|text|prompt|attack)\s*[:\-–]\s*",
    re.IGNORECASE,
)
_LOOKS_JSON = re.compile(r"^(?:```(?:json)?\s*)?[\[{]", re.IGNORECASE)
_QUOTES = ('""', "“”", "''", "‘’", "``")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(text: str) -> str:
    text = _LIST_ITEM.sub("", _CONTROL.sub("", text).strip())
    text = _LABEL.sub("", text).strip()
    for pair in _QUOTES:
        if len(text) >= 2 and text[0] == pair[0] and text[-1] == pair[1]:
            text = text[1:-1].strip()
    return re.sub(r"\s+", " ", text)


def _balanced(text: str, start: int) -> str | None:
    """The JSON object or array starting at ``text[start]``, by bracket matching outside strings."""
    opening = text[start]
    closing = "}" if opening == "{" else "]"
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == opening:
            depth += 1
        elif ch == closing:
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def load_json(text: str) -> tuple[Any, str | None]:
    """Parse JSON from ``text``: the whole text, else the first balanced object or array in it.
    Control characters inside strings are tolerated (small models emit them; cleaning drops them)."""
    stripped = _FENCE.sub("", text.strip())
    try:
        return json.loads(stripped, strict=False), None
    except json.JSONDecodeError as err:
        first_error = f"{err.msg} at character {err.pos}"
    for match in re.finditer(r"[{\[]", stripped):
        chunk = _balanced(stripped, match.start())
        if chunk is None:
            continue
        try:
            return json.loads(chunk, strict=False), None
        except json.JSONDecodeError:
            continue
    return None, first_error


def _json_values(obj: Any, field: str) -> list[Any]:
    """The candidate values in a parsed JSON value: ``{field: str}``, ``{field: [..]}``,
    ``{field + "s": [..]}``, a list of strings or of such objects, or a dict with one string value."""
    if isinstance(obj, list):
        out: list[Any] = []
        for item in obj:
            out.extend([item] if isinstance(item, str) else _json_values(item, field))
        return out
    if not isinstance(obj, dict):
        return []
    for key in (field, field + "s", "answers", "questions", "queries", "candidates", "text", "texts"):
        if key in obj:
            value = obj[key]
            return list(value) if isinstance(value, list) else [value]
    strings = [v for v in obj.values() if isinstance(v, str)]
    return strings if len(strings) == 1 else []


def parse_output(
    text: str | None, field: str, *, expect_json: bool, original: str | None = None, max_chars: int = MAX_CHARS
) -> tuple[list[str], list[str]]:
    """Candidates in one model output, and the reasons for what could not be read.

    ``field`` is the JSON key the strategy asked for (``answer``, ``question``, ``query``);
    ``expect_json`` means the request carried a JSON schema, so plain text is malformed;
    ``original`` is the text the candidate must differ from (the true answer, the question).
    """
    if text is None or not text.strip():
        return [], ["empty output"]
    raw = text.strip()
    values: list[Any]
    reasons: list[str] = []
    looks_json = _LOOKS_JSON.match(raw) is not None
    if expect_json or looks_json:
        obj, error = load_json(raw)
        if obj is None:
            if expect_json:
                return [], [f"malformed JSON ({error})"]
            values = _plain_values(raw)
        else:
            values = _json_values(obj, field)
            if not values:
                return [], [f"JSON without a {field!r} string"]
    else:
        values = _plain_values(raw)

    original_key = " ".join(normalize(original)) if original else None
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            reasons.append(f"{field!r} is not a string ({type(value).__name__})")
            continue
        cleaned = _clean(value)
        if not cleaned or not normalize(cleaned):
            reasons.append("empty after cleaning")
        elif len(cleaned) > max_chars:
            reasons.append(f"longer than {max_chars} characters")
        elif original_key is not None and " ".join(normalize(cleaned)) == original_key:
            reasons.append("repeats the original text")
        elif cleaned not in out:
            out.append(cleaned)
    return out, reasons


def _plain_values(raw: str) -> list[str]:
    """A numbered or bulleted list gives one candidate per item; otherwise the first non-empty line
    (a model that keeps writing after its answer adds new questions, not more answer)."""
    lines = [line for line in raw.splitlines() if line.strip()]
    items = [line for line in lines if _LIST_ITEM.match(line)]
    if len(items) >= 2:
        return items
    first = lines[0] if lines else ""
    return [first] if not _LABEL.fullmatch(first.strip() + " ") else [" ".join(lines[:2])]
