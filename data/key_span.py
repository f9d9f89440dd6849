"""The key answer span of a fact: the part of the answer that must disappear after unlearning.

Where a dataset gives one (RWKU's answers are spans, TOFU's utility answers are single options), it
is used as is (``key_span_source = 'dataset'``). Otherwise :func:`derive_key_span` picks the answer
content that the question does not already contain, and the fact is stored with
``key_span_source = 'derived'`` so a user can review and correct it with SQL::

    UPDATE facts SET key_span = 'Kuwait City', key_span_source = 'user' WHERE fact_id = '...';

The derived span is always a verbatim substring of the answer, so the token matcher
(``evaluation.matching.contains_span``) finds it in the answer itself.

Rule (why: TOFU answers restate the question, and only the rest is knowledge):

1. drop the answer's words that occur in the question (case-folded, possessives and plurals merged)
   and function words; a capitalised word in mid-sentence is kept even when the question has it in
   lower case ("city" in the question does not make "Kuwait City" known);
2. join the remaining words into runs, letting a run cross connectors that belong inside names and
   titles ("of", "de", "van", "&", a comma between capitalised words, the dots of initials);
3. pick the most informative run: a quoted title, then a capitalised name, then a number or date,
   then any other word run; ties go to the run with more words, then to the earlier one (answers
   state the new information first and elaborate after it);
4. with nothing left (the answer only restates the question, or is "Yes"), the whole answer.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Words that carry no knowledge of their own. Kept small on purpose: a content word wrongly listed
# here can never be a key span.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "so",
        "yet",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "as",
        "into",
        "onto",
        "upon",
        "about",
        "over",
        "under",
        "after",
        "before",
        "during",
        "between",
        "through",
        "within",
        "without",
        "against",
        "among",
        "than",
        "then",
        "also",
        "too",
        "very",
        "just",
        "is",
        "am",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "has",
        "have",
        "had",
        "having",
        "do",
        "does",
        "did",
        "done",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "i",
        "me",
        "my",
        "mine",
        "we",
        "us",
        "our",
        "ours",
        "you",
        "your",
        "yours",
        "he",
        "him",
        "his",
        "she",
        "her",
        "hers",
        "they",
        "them",
        "their",
        "theirs",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "who",
        "whom",
        "whose",
        "which",
        "what",
        "when",
        "where",
        "why",
        "how",
        "not",
        "no",
        "yes",
        "such",
        "both",
        "each",
        "either",
        "neither",
        "any",
        "some",
        "all",
        "most",
        "more",
        "many",
        "much",
        "other",
        "another",
        "same",
        "own",
        "only",
        "well",
        "known",
        "one's",
        "himself",
        "herself",
        "themselves",
        "itself",
        "often",
        "primarily",
        "typically",
        "mainly",
        "usually",
        "generally",
        "particularly",
        "especially",
        "notably",
        "currently",
        "indeed",
        "however",
        "therefore",
        "thus",
        "always",
        "never",
        "still",
        "even",
        "already",
        "frequently",
        "commonly",
        "largely",
        "mostly",
        "highly",
        "deeply",
        "truly",
    ]
)
# Words allowed inside a run when both neighbours are kept: they belong to names and titles.
CONNECTORS = frozenset(
    {
        "of",
        "the",
        "and",
        "de",
        "del",
        "della",
        "da",
        "di",
        "du",
        "des",
        "van",
        "von",
        "der",
        "den",
        "la",
        "le",
        "el",
        "al",
        "bin",
        "ibn",
        "y",
        "&",
        "-",
        "'s",
        "’s",
    }
)
MONTHS = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ]
)

# A token is a URL, an e-mail address, a word (letters/digits with inner hyphens, apostrophes,
# slashes, dots or commas: "Al-Kuwaiti", "O'Brien", "08/09/1956", "R.R", "1,000"), or one
# punctuation character. Only whitespace lies between tokens.
_TOKEN = re.compile(r"https?://\S+[\w/]|\w+(?:['’\-./,+]\w+)*(?:@[\w-]+(?:\.[\w-]+)+)?|[^\w\s]")
_TOKEN_SPLIT = re.compile(f"({_TOKEN.pattern})")
_QUOTED = re.compile(r"[\"“]([^\"“”]{2,}?)[\"”]|(?<!\w)['‘]([^'‘’]{2,}?)['’](?!\w)")
_SENTENCE_END = frozenset({".", "!", "?", ":", '"', "“"})

# Candidate classes, best first.
_IDENTIFIER, _TITLE, _NAME, _NUMBER, _WORDS = 4, 3, 2, 1, 0
# Fields of a token's info tuple (plain tuples: this is the hot path of ingest).
_WORD, _STOP, _NORM, _CAP, _NUMERIC, _CONNECTOR, _FOLDED = range(7)


@lru_cache(maxsize=1 << 17)
def _info(token: str) -> tuple[bool, bool, str, bool, bool, bool, str]:
    """(is a word, stopword, normalised form, capitalised, numeric, connector, case-folded).

    The normalised form merges possessive and plural endings ("parents" ~ "parent's" ~ "parent");
    numeric means a digit or a month name. Cached: words repeat across facts.
    """
    first = token[0]
    folded = token.casefold()
    norm = folded.replace("’", "'")
    if norm.endswith("'s"):
        norm = norm[:-2]
    elif norm.endswith("s") and len(norm) > 3 and not norm.endswith("ss"):
        norm = norm[:-1]
    return (
        first.isalnum() or first == "_",
        folded in STOPWORDS,
        norm,
        first.isupper(),
        any(c.isdigit() for c in token) or folded in MONTHS,
        folded in CONNECTORS,
        folded,
    )


def derive_key_span(question: str, answer: str) -> str:
    """The part of ``answer`` that ``question`` does not already give away (see the module docstring)."""
    answer = answer.strip()
    if not answer:
        return answer
    q_words = [i for i in map(_info, _TOKEN.findall(question)) if i[_WORD]]
    q_norms = {i[_NORM] for i in q_words}
    q_capitalised = {i[_NORM] for i in q_words if i[_CAP]}

    # Candidates are (class, words, tie-break, first, last): the best is the max. Titles are located
    # by character offsets, the rest by token indices (each compared only within its class).
    candidates: list[tuple[int, int, int, int, int]] = []
    q_text = None
    for match in _QUOTED.finditer(answer):
        if q_text is None:
            q_text = " ".join(i[_FOLDED] for i in q_words)
        group = 1 if match.group(1) else 2
        inner = match.group(group).rstrip(" .,;:!?")
        folded = " ".join(i[_FOLDED] for i in map(_info, _TOKEN.findall(inner)) if i[_WORD])
        if folded and folded not in q_text:
            start = match.start(group)
            candidates.append((_TITLE, len(inner.split()), -start, start, start + len(inner)))

    # Split keeps the separators (whitespace) too: parts = [space, token, space, token, ..., space],
    # so character offsets are sums of part lengths.
    parts = _TOKEN_SPLIT.split(answer)
    texts = parts[1::2]
    n = len(texts)
    infos = list(map(_info, texts))
    if "@" in answer or "://" in answer:  # e-mail addresses and URLs
        candidates.extend((_IDENTIFIER, 1, -i, i, i) for i, t in enumerate(texts) if "@" in t or "://" in t)
    # Kept: a content word the question lacks; or one it has only in lower case, used here as a
    # proper noun ("Kuwait City" against "which city") and not merely capitalised as the first
    # word of a sentence.
    kept = [
        i
        for i, info in enumerate(infos)
        if info[_WORD]
        and not info[_STOP]
        and (
            info[_NORM] not in q_norms
            or (info[_CAP] and i and texts[i - 1] not in _SENTENCE_END and info[_NORM] not in q_capitalised)
        )
    ]

    for first, last in _runs(texts, infos, kept):
        if first == last:
            words = [infos[first]]
        else:
            words = [infos[k] for k in range(first, last + 1) if infos[k][_WORD]]
        if any(w[_NUMERIC] for w in words):
            candidates.append((_NUMBER, len(words), -first, first, last))
        else:
            # Among plain word runs, the longer word is the more specific ("meteorologist", not "father").
            longest = max(len(w[_FOLDED]) for w in words)
            candidates.append((_WORDS, len(words), longest * 1000 - first, first, last))

    # Names: capitalised kept words (a sentence-initial one only when the next word is capitalised
    # too), with a number right before them ("88 Golden Gate Ave").
    names = [
        i
        for i in kept
        if infos[i][_CAP]
        and infos[i][_FOLDED] not in MONTHS
        and ((i and texts[i - 1] not in _SENTENCE_END) or (i + 1 < n and infos[i + 1][_CAP]))
    ]
    if names:
        kept_set, name_set = set(kept), set(names)
        names = sorted(name_set | {i - 1 for i in names if i - 1 in kept_set and texts[i - 1].isdigit()})
        for first, last in _runs(texts, infos, names):
            words = sum(1 for k in range(first, last + 1) if infos[k][_WORD])
            candidates.append((_NAME, words, -first, first, last))

    if not candidates:
        return answer.rstrip(" .!?;:")
    kind, _, _, first, last = max(candidates)
    if kind == _TITLE:
        start, end = first, last
    else:
        start = sum(map(len, parts[: 2 * first + 1]))
        end = start + sum(map(len, parts[2 * first + 1 : 2 * last + 2]))
    return answer[start:end].strip().rstrip(",;:")


def _runs(texts: list[str], infos: list[tuple], kept: list[int]) -> list[tuple[int, int]]:
    """Runs of the ``kept`` token indices (ascending), bridging gaps of one or two connector tokens."""
    runs = []
    first = last = kept[0] if kept else 0
    for index in kept[1:]:
        gap = index - last - 1
        if gap == 0 or (gap <= 2 and all(_bridges(texts, infos, j, last) for j in range(last + 1, index))):
            last = index
            continue
        runs.append((first, last))
        first = last = index
    if kept:
        runs.append((first, last))
    return runs


def _bridges(texts: list[str], infos: list[tuple], j: int, last_kept: int) -> bool:
    """May token ``j`` sit inside a run whose last kept token is ``last_kept``?"""
    if infos[j][_CONNECTOR]:
        return True
    text = texts[j]
    prev = texts[last_kept]
    if text == ",":
        # "Kuwait City, Kuwait" and "September 8, 1956", not "a doctor, and ...".
        if j + 1 >= len(texts):
            return False
        return (infos[last_kept][_CAP] or prev.isdigit()) and (infos[j + 1][_CAP] or texts[j + 1].isdigit())
    if text == ".":
        # Initials: "George R.R. Martin", "John D. Rockefeller".
        return len(prev.replace(".", "")) <= 2 and prev[0].isupper()
    return False


def key_span_for(question: str, answer: str, dataset_span: str | None = None) -> tuple[str, str]:
    """``(key_span, key_span_source)``: the dataset's span when it has one, else the derived span."""
    if dataset_span is not None and dataset_span.strip():
        return dataset_span.strip(), "dataset"
    return derive_key_span(question, answer), "derived"
