"""Does a text still state a key answer span? The one normalisation used by USR / APR, by
early stopping during unlearning, and by the ``answer_leak`` scorer.

Matching is token-aware: after normalisation (Unicode NFKC, case-fold, accents kept, punctuation
to spaces, whitespace collapsed), the span's tokens must appear as a contiguous run of whole tokens
in the text, so "Kuwait" is not found in "Kuwaiti" and "1956" is found in "in 1956.".
"""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
# Leading articles carry no knowledge: "The Shining" and "Shining" are the same key.
_ARTICLES = {"the", "a", "an"}


def normalize(text: str) -> list[str]:
    """Tokens of ``text`` after normalisation (see module docstring)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [tok for tok in _NON_WORD.sub(" ", folded).split() if tok]


def span_tokens(span: str) -> list[str]:
    tokens = normalize(span)
    while len(tokens) > 1 and tokens[0] in _ARTICLES:
        tokens = tokens[1:]
    return tokens


def contains_span(text: str, span: str) -> bool:
    """True when ``span`` occurs in ``text`` as whole tokens, after normalisation.

    An empty span (nothing left after normalisation) is never contained.
    """
    needle = span_tokens(span)
    if not needle:
        return False
    haystack = normalize(text)
    width = len(needle)
    return any(haystack[i : i + width] == needle for i in range(len(haystack) - width + 1))


def span_coverage(text: str, reference: str) -> float:
    """Share of the reference's distinct content tokens (longer than 2 characters) present in ``text``:
    the measure for long answers, where an exact span rarely survives a rewording."""
    ref = {t for t in normalize(reference) if len(t) > 2}
    if not ref:
        return 0.0
    got = set(normalize(text))
    return len(ref & got) / len(ref)
