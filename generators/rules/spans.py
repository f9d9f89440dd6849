"""Key-span types, the corpus span bank, and the span swap behind rule-based counterfactuals.

A counterfactual negative keeps the true answer's wording and subject and replaces only its key span
(``facts.key_span``) with a span *of the same type* taken from another fact of the corpus: a person
for a person, a year for a year, a title for a title. The type comes from :func:`span_type`, a small
pure classifier (shape of the span first, then the question's cue word, then a gazetteer); it is
deliberately simple and predictable rather than clever, so a user can see why a swap was chosen.

    >>> span_type("1956")
    'year'
    >>> swap_span("He was born in 1956.", "1956", "1962")
    'He was born in 1962.'
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from lune.core.matching import contains_span, normalize, span_tokens
from lune.data.ids import content_id

SPAN_TYPES: tuple[str, ...] = ("person", "place", "date", "year", "number", "title", "name", "other")

MONTHS = (
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
)
_MONTHS_FOLDED = {m.casefold() for m in MONTHS} | {m[:3].casefold() for m in MONTHS}
_NUMBER_WORDS = set(
    [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "sixty",
        "seventy",
        "eighty",
        "ninety",
        "hundred",
        "thousand",
        "million",
        "billion",
        "trillion",
        "dozen",
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "sixth",
        "seventh",
        "eighth",
        "ninth",
        "tenth",
    ]
)
_NUMBER_UNITS = {"percent", "%", "years", "year", "times", "million", "billion", "thousand", "hundred"}
# Lower-case words allowed inside a capitalised name or title ("Leonardo da Vinci", "Rita Hayworth
# and Shawshank Redemption", "Prix de ...").
_NAME_CONNECTORS = {
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
    "in",
    "on",
    "a",
    "an",
    "for",
    "to",
    "at",
}
_PLACE_WORDS = {
    "city",
    "town",
    "village",
    "island",
    "islands",
    "county",
    "province",
    "state",
    "states",
    "republic",
    "kingdom",
    "river",
    "lake",
    "mountains",
    "mountain",
    "valley",
    "bay",
    "coast",
    "district",
    "region",
    "street",
    "avenue",
    "ave",
    "road",
    "square",
    "park",
    "heights",
    "beach",
    "peninsula",
    "desert",
    "sea",
    "ocean",
    "harbor",
    "harbour",
    "port",
    "springs",
    "falls",
}
_TITLE_WORDS = {
    "book",
    "books",
    "novel",
    "novels",
    "film",
    "films",
    "movie",
    "movies",
    "title",
    "titled",
    "work",
    "works",
    "song",
    "songs",
    "album",
    "albums",
    "series",
    "collection",
    "play",
    "poem",
    "story",
    "stories",
    "memoir",
    "publication",
    "magazine",
    "show",
    "episode",
    "debut",
    "award",
    "awards",
    "prize",
    "honor",
    "honour",
    "recognition",
}
_PERSON_CUES = (
    "who ",
    "whom ",
    "whose ",
    "full name",
    "name of the author",
    "author's name",
    "pseudonym",
    "pen name",
    "nom de plume",
    "father",
    "mother",
    "husband",
    "wife",
    "spouse",
    "partner",
    "friend",
    "co-wrote",
    "co-author",
    "mentor",
    "married",
    "son",
    "daughter",
    "brother",
    "sister",
)
_PLACE_CUES = (
    "where",
    "which city",
    "what city",
    "which country",
    "what country",
    "city and country",
    "birthplace",
    "born in which",
    "located",
    "hometown",
    "which state",
    "what state",
    "place",
)
_DATE_CUES = ("when ", "what date", "which date", "date of birth", "birthday")
_YEAR_CUES = ("what year", "which year", "in what year")
_NUMBER_CUES = ("how many", "how much", "how old", "what age", "number of")

# A small gazetteer: countries, large cities and US states (enough to tell "Kuwait" from "Carrie").
_GAZETTEER = {
    p.casefold()
    for p in [
        "Afghanistan",
        "Albania",
        "Algeria",
        "Andorra",
        "Angola",
        "Argentina",
        "Armenia",
        "Australia",
        "Austria",
        "Azerbaijan",
        "Bahamas",
        "Bahrain",
        "Bangladesh",
        "Barbados",
        "Belarus",
        "Belgium",
        "Belize",
        "Benin",
        "Bhutan",
        "Bolivia",
        "Bosnia",
        "Botswana",
        "Brazil",
        "Brunei",
        "Bulgaria",
        "Burundi",
        "Cambodia",
        "Cameroon",
        "Canada",
        "Chad",
        "Chile",
        "China",
        "Colombia",
        "Comoros",
        "Congo",
        "Croatia",
        "Cuba",
        "Cyprus",
        "Czechia",
        "Denmark",
        "Djibouti",
        "Dominica",
        "Ecuador",
        "Egypt",
        "Eritrea",
        "Estonia",
        "Eswatini",
        "Ethiopia",
        "Fiji",
        "Finland",
        "France",
        "Gabon",
        "Gambia",
        "Georgia",
        "Germany",
        "Ghana",
        "Greece",
        "Grenada",
        "Guatemala",
        "Guinea",
        "Guyana",
        "Haiti",
        "Honduras",
        "Hungary",
        "Iceland",
        "India",
        "Indonesia",
        "Iran",
        "Iraq",
        "Ireland",
        "Israel",
        "Italy",
        "Jamaica",
        "Japan",
        "Jordan",
        "Kazakhstan",
        "Kenya",
        "Kiribati",
        "Kosovo",
        "Kuwait",
        "Kyrgyzstan",
        "Laos",
        "Latvia",
        "Lebanon",
        "Lesotho",
        "Liberia",
        "Libya",
        "Liechtenstein",
        "Lithuania",
        "Luxembourg",
        "Madagascar",
        "Malawi",
        "Malaysia",
        "Maldives",
        "Mali",
        "Malta",
        "Mauritania",
        "Mauritius",
        "Mexico",
        "Micronesia",
        "Moldova",
        "Monaco",
        "Mongolia",
        "Montenegro",
        "Morocco",
        "Mozambique",
        "Myanmar",
        "Namibia",
        "Nauru",
        "Nepal",
        "Netherlands",
        "Nicaragua",
        "Niger",
        "Nigeria",
        "Norway",
        "Oman",
        "Pakistan",
        "Palau",
        "Palestine",
        "Panama",
        "Paraguay",
        "Peru",
        "Philippines",
        "Poland",
        "Portugal",
        "Qatar",
        "Romania",
        "Russia",
        "Rwanda",
        "Samoa",
        "Senegal",
        "Serbia",
        "Seychelles",
        "Singapore",
        "Slovakia",
        "Slovenia",
        "Somalia",
        "Spain",
        "Sudan",
        "Suriname",
        "Sweden",
        "Switzerland",
        "Syria",
        "Taiwan",
        "Tajikistan",
        "Tanzania",
        "Thailand",
        "Togo",
        "Tonga",
        "Tunisia",
        "Turkey",
        "Turkmenistan",
        "Tuvalu",
        "Uganda",
        "Ukraine",
        "Uruguay",
        "Uzbekistan",
        "Vanuatu",
        "Venezuela",
        "Vietnam",
        "Yemen",
        "Zambia",
        "Zimbabwe",
        "England",
        "Scotland",
        "Wales",
        "Britain",
        "Europe",
        "Asia",
        "Africa",
        "America",
        "Antarctica",
        "Oceania",
        "Korea",
        "London",
        "Paris",
        "Berlin",
        "Madrid",
        "Rome",
        "Lisbon",
        "Vienna",
        "Prague",
        "Warsaw",
        "Budapest",
        "Athens",
        "Istanbul",
        "Moscow",
        "Kyiv",
        "Kiev",
        "Dublin",
        "Edinburgh",
        "Amsterdam",
        "Brussels",
        "Copenhagen",
        "Stockholm",
        "Oslo",
        "Helsinki",
        "Zurich",
        "Geneva",
        "Munich",
        "Hamburg",
        "Milan",
        "Naples",
        "Venice",
        "Florence",
        "Barcelona",
        "Seville",
        "Marseille",
        "Lyon",
        "Tokyo",
        "Kyoto",
        "Osaka",
        "Seoul",
        "Beijing",
        "Shanghai",
        "Hong",
        "Kong",
        "Singapore",
        "Bangkok",
        "Hanoi",
        "Manila",
        "Jakarta",
        "Delhi",
        "Mumbai",
        "Kolkata",
        "Chennai",
        "Bangalore",
        "Karachi",
        "Lahore",
        "Dhaka",
        "Tehran",
        "Baghdad",
        "Riyadh",
        "Dubai",
        "Doha",
        "Cairo",
        "Alexandria",
        "Lagos",
        "Nairobi",
        "Johannesburg",
        "Cape",
        "Town",
        "Casablanca",
        "Algiers",
        "Tunis",
        "Accra",
        "Addis",
        "Ababa",
        "Havana",
        "Mexico",
        "City",
        "Bogota",
        "Lima",
        "Santiago",
        "Buenos",
        "Aires",
        "Caracas",
        "Montevideo",
        "Sydney",
        "Melbourne",
        "Brisbane",
        "Perth",
        "Auckland",
        "Wellington",
        "Toronto",
        "Montreal",
        "Vancouver",
        "Ottawa",
        "Chicago",
        "Boston",
        "Seattle",
        "Houston",
        "Dallas",
        "Miami",
        "Atlanta",
        "Denver",
        "Phoenix",
        "Detroit",
        "Philadelphia",
        "Baltimore",
        "Portland",
        "Nashville",
        "Hollywood",
        "Manhattan",
        "Brooklyn",
        "Los",
        "Angeles",
        "San",
        "Francisco",
        "New",
        "York",
        "Washington",
        "Tel",
        "Aviv",
        "Jerusalem",
        "Beirut",
        "Damascus",
        "Amman",
        "Ankara",
        "Baku",
        "Tbilisi",
        "Yerevan",
        "Tashkent",
        "Kabul",
        "Kathmandu",
        "Colombo",
        "Taipei",
        "Harare",
        "Kampala",
        "Alabama",
        "Alaska",
        "Arizona",
        "Arkansas",
        "California",
        "Colorado",
        "Connecticut",
        "Delaware",
        "Florida",
        "Hawaii",
        "Idaho",
        "Illinois",
        "Indiana",
        "Iowa",
        "Kansas",
        "Kentucky",
        "Louisiana",
        "Maine",
        "Maryland",
        "Massachusetts",
        "Michigan",
        "Minnesota",
        "Mississippi",
        "Missouri",
        "Montana",
        "Nebraska",
        "Nevada",
        "Ohio",
        "Oklahoma",
        "Oregon",
        "Pennsylvania",
        "Tennessee",
        "Texas",
        "Utah",
        "Vermont",
        "Virginia",
        "Wisconsin",
        "Wyoming",
    ]
}
_GAZETTEER_PHRASES = {
    p.casefold()
    for p in (
        "Hong Kong",
        "Cape Town",
        "Addis Ababa",
        "Mexico City",
        "Buenos Aires",
        "Los Angeles",
        "San Francisco",
        "New York",
        "Tel Aviv",
        "New Zealand",
        "South Africa",
        "United States",
        "United Kingdom",
        "Sri Lanka",
        "Saudi Arabia",
        "South Korea",
        "North Korea",
        "Costa Rica",
        "El Salvador",
        "Puerto Rico",
        "New Jersey",
        "New Mexico",
    )
}

_YEAR = re.compile(r"^(?:1[0-9]{3}|20[0-9]{2})s?$")
_NUMERIC_DATE = re.compile(r"^\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}$")
_NUMBER = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?$")
_WORD = re.compile(r"[\w'’.-]+|[^\w\s]", re.UNICODE)


def _words(span: str) -> list[str]:
    return [w for w in _WORD.findall(span) if w[0].isalnum()]


def _is_capitalised_name(words: list[str]) -> bool:
    """Every word capitalised, except connectors inside it; the first word capitalised."""
    if not words or not words[0][0].isupper():
        return False
    return all(w[0].isupper() or w[0].isdigit() or w.casefold() in _NAME_CONNECTORS for w in words)


def _looks_like_place(span: str, words: list[str]) -> bool:
    folded = span.casefold()
    if any(phrase in folded for phrase in _GAZETTEER_PHRASES):
        return True
    if any(w.casefold().rstrip(".") in _GAZETTEER for w in words):
        return True
    if words and words[-1].casefold().rstrip(".") in _PLACE_WORDS:
        return True
    parts = [p.strip() for p in span.split(",")]
    return len(parts) >= 2 and all(p and p[0].isupper() for p in parts)


_DEMONYM_ENDINGS = ("ern", "ean", "ian", "can", "ese", "ish", "ani", "iti", "ic", "ch", "ot", "ss")
_DEMONYMS = {
    "french",
    "dutch",
    "greek",
    "thai",
    "swiss",
    "irish",
    "welsh",
    "scottish",
    "british",
    "english",
    "spanish",
    "polish",
    "danish",
    "swedish",
    "finnish",
    "turkish",
    "lgbtq",
    "lgbtq+",
    "arab",
    "jewish",
    "latino",
    "latina",
    "creole",
    "middle",
    "latin",
    "north",
    "south",
    "east",
    "west",
    "central",
    "western",
    "eastern",
    "northern",
    "southern",
}


def _is_demonym(words: list[str]) -> bool:
    """ "French", "Middle Eastern", "Kazakhstani and African American": nationality-like adjectives."""
    content = [w.casefold() for w in words if w.casefold() not in _NAME_CONNECTORS]
    return bool(content) and all(
        w in _DEMONYMS or (len(w) > 4 and w.endswith(_DEMONYM_ENDINGS) and w not in _GAZETTEER) for w in content
    )


def _looks_like_person(words: list[str]) -> bool:
    """2-5 name-shaped words: capitalised, letters with inner hyphens/apostrophes/dots (initials)."""
    content = [w for w in words if w.casefold() not in _NAME_CONNECTORS]
    if not 2 <= len(content) <= 5 or words[0].casefold() in {"the", "a", "an"}:
        return False
    return all(re.fullmatch(r"[A-Z][\w'’.-]*", w) and not any(c.isdigit() for c in w) for w in content)


def span_type(span: str, question: str | None = None, answer: str | None = None) -> str:
    """The type of a key span: person, place, date, year, number, title, name (other capitalised) or other.

    The span's own shape decides first (years, dates, numbers, a span quoted in ``answer``); for a
    capitalised span, the question's cue words ("who", "where", "which book") decide, then a
    gazetteer and name shape. Pure and deterministic.
    """
    text = span.strip().strip("\"“”'‘’").strip()
    if not text:
        return "other"
    words = _words(text)
    folded_words = [w.casefold().rstrip(".,") for w in words]
    if _YEAR.match(text):
        return "year"
    if _NUMERIC_DATE.match(text) or (
        any(w in _MONTHS_FOLDED for w in folded_words) and (any(c.isdigit() for c in text) or len(words) <= 2)
    ):
        return "date"
    if _NUMBER.match(text) or (
        folded_words
        and all(
            _NUMBER.match(w) or w in _NUMBER_WORDS or w in _NUMBER_UNITS or w in {"and", "-", "a"} for w in folded_words
        )
        and any(_NUMBER.match(w) or w in _NUMBER_WORDS for w in folded_words)
    ):
        return "number"
    if answer and any(f"{q1}{text}{q2}" in answer for q1, q2 in (('"', '"'), ("“", "”"), ("'", "'"), ("‘", "’"))):
        return "title"
    if not _is_capitalised_name(words):
        return "other"
    if _is_demonym(words):
        return "name"
    q = f" {question.casefold()} " if question else ""
    q_words = set(re.findall(r"[a-z]+", q))
    if q:
        if any(cue in q for cue in _YEAR_CUES):
            return "name"
        if q_words & _TITLE_WORDS and not q_words & {"who", "whom", "whose"}:
            return "title"
        if any(cue in q for cue in _PLACE_CUES):
            return "place"
        if any(cue in q for cue in _PERSON_CUES) and _looks_like_person(words):
            return "person"
    if _looks_like_place(text, words):
        return "place"
    if words[0].casefold() in {"the", "a", "an"} and len(words) > 1:
        return "title"
    return "name"


def _bucket(span: str) -> int:
    """Word-count bucket used to prefer replacements of a similar length within a type."""
    return min(len(_words(span)), 4)


def swap_span(answer: str, key_span: str, replacement: str) -> str | None:
    """``answer`` with every occurrence of ``key_span`` replaced by ``replacement``; None if not found.

    Exact (case-insensitive) occurrences first; otherwise the span's normalised tokens separated by
    any punctuation or spacing ("Kuwait City , Kuwait"), as :func:`evaluation.matching.contains_span`
    would find them.
    """
    if not key_span.strip():
        return None
    pattern = re.compile(re.escape(key_span.strip()), re.IGNORECASE)
    if not pattern.search(answer):
        tokens = span_tokens(key_span)
        if not tokens:
            return None
        pattern = re.compile(r"(?<!\w)" + r"[\W_]+".join(re.escape(t) for t in tokens) + r"(?!\w)", re.IGNORECASE)
        if not pattern.search(answer):
            return None
    return pattern.sub(lambda _m: replacement, answer)


def synthetic_span(span: str, kind: str, rng: random.Random) -> str | None:
    """A made-up span of the same type for years, numbers and dates (when the corpus has too few)."""
    text = span.strip()
    if kind == "year" and _YEAR.match(text):
        year, suffix = int(text[:4]), text[4:]
        shift = rng.choice([d for d in range(-40, 41) if abs(d) >= 2])
        return f"{min(max(year + shift, 1000), 2099)}{suffix}"
    if kind == "number":
        match = re.search(r"\d[\d,]*(?:\.\d+)?", text)
        if not match:
            return None
        value = float(match.group(0).replace(",", ""))
        factor = rng.choice([0.25, 0.5, 0.6, 1.5, 2, 3, 4])
        new = value * factor if value else rng.randint(2, 20)
        rendered = f"{new:,.0f}" if "," in match.group(0) else (f"{new:.1f}" if "." in match.group(0) else f"{new:.0f}")
        if rendered == match.group(0):
            rendered = str(int(new) + rng.randint(1, 9))
        return text[: match.start()] + rendered + text[match.end() :]
    if kind == "date":
        for month in MONTHS:
            if re.search(rf"\b{month}\b", text):
                other = rng.choice([m for m in MONTHS if m != month])
                return re.sub(rf"\b{month}\b", other, text)
        match = re.search(r"\d+", text)
        if match:
            value = int(match.group(0))
            new = value + rng.choice([d for d in range(-5, 6) if d]) if value > 12 else (value % 12) + 1
            return text[: match.start()] + str(new).zfill(len(match.group(0))) + text[match.end() :]
    return None


@dataclass
class SpanBank:
    """What the rules generator borrows from the rest of the corpus.

    ``spans`` maps a span type to the distinct key spans of that type (sorted, so a bank built from
    the same facts is the same bank); ``qa`` holds (fact id, subject, question, answer) rows for
    in-context and context-hint attacks. Plain data: it travels to task workers as a dict. One bank
    serves every thread of a worker: its lookup index is built once, under a lock.
    """

    spans: dict[str, list[str]] = field(default_factory=dict)
    qa: list[tuple[str, str | None, str, str]] = field(default_factory=list)
    _by_bucket: dict[tuple[str, int], list[str]] = field(default_factory=dict, init=False, repr=False)
    _by_subject: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)
    _index_ready: bool = field(default=False, init=False, repr=False)
    _index_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @classmethod
    def from_facts(cls, facts: Iterable[Mapping[str, Any]], *, max_qa: int = 20000) -> SpanBank:
        """Build the bank from fact rows (``fact_id``, ``question``, ``answer``, ``key_span``, ``subject``)."""
        spans: dict[str, set[str]] = {}
        qa = []
        for fact in facts:
            span = (fact.get("key_span") or "").strip()
            if span and len(span) <= 120:
                spans.setdefault(span_type(span, fact.get("question"), fact.get("answer")), set()).add(span)
            qa.append((fact["fact_id"], fact.get("subject"), fact["question"], fact["answer"]))
        qa.sort()
        if len(qa) > max_qa:  # an even, deterministic thinning keeps every subject represented
            step = len(qa) / max_qa
            qa = [qa[int(i * step)] for i in range(max_qa)]
        return cls(spans={k: sorted(v) for k, v in sorted(spans.items())}, qa=qa)

    def to_dict(self) -> dict[str, Any]:
        return {"spans": self.spans, "qa": [list(row) for row in self.qa]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpanBank:
        return cls(
            spans={k: list(v) for k, v in data.get("spans", {}).items()}, qa=[tuple(row) for row in data.get("qa", [])]
        )

    def bank_id(self) -> str:
        return content_id("span-bank", self.to_dict())

    def _index(self) -> None:
        """Build the lookup index once. Threads of one worker share the bank: without the lock two
        of them both appended to the lists and the index doubled, which changed the drawn spans."""
        if self._index_ready:
            return
        with self._index_lock:
            if self._index_ready:
                return
            by_bucket: dict[tuple[str, int], list[str]] = {}
            by_subject: dict[str, list[int]] = {}
            for kind, spans in self.spans.items():
                for span in spans:
                    by_bucket.setdefault((kind, _bucket(span)), []).append(span)
            for i, (_fid, subject, question, _a) in enumerate(self.qa):
                if subject:
                    by_subject.setdefault(f"subject:{subject}", []).append(i)
                name = name_key(question)
                if name:
                    by_subject.setdefault(f"name:{name}", []).append(i)
            self._by_bucket, self._by_subject = by_bucket, by_subject
            self._index_ready = True

    def pool(self, kind: str, like: str | None = None) -> list[str]:
        """Spans of type ``kind``; of a similar length to ``like`` where the bank has at least a few."""
        self._index()
        if like is not None:
            near = self._by_bucket.get((kind, _bucket(like)), [])
            if len(near) >= 3:
                return near
        return self.spans.get(kind, [])

    def related_rows(self, subject: str | None, question: str) -> list[tuple[str, str | None, str, str]]:
        """Other (fact id, subject, question, answer) rows about the same subject: by the subject
        column, else by the first multi-word name in the question ("Basil Mahfouz Al-Kuwaiti")."""
        self._index()
        keys = [("subject", subject)] if subject else []
        name = name_key(question)
        if name:
            keys.append(("name", name))
        for key in keys:
            found = self._by_subject.get(f"{key[0]}:{key[1]}")
            if found:
                return [self.qa[i] for i in found]
        return []


_NAME_RUN = re.compile(r"(?<!^)(?<![.?!] )\b([A-Z][\w'’-]+(?:\s+(?:[A-Z][\w’-]+|al|bin|van|de|da|von)){1,4})")


def name_key(question: str) -> str | None:
    """The first run of two or more capitalised words that does not start the sentence, without a
    possessive: the question's named subject ("Basil Mahfouz Al-Kuwaiti's books" -> the name)."""
    match = _NAME_RUN.search(question)
    if not match:
        return None
    return re.sub(r"['’]s$", "", match.group(1))


@lru_cache(maxsize=1 << 16)
def _joined_tokens(text: str) -> str:
    return " " + " ".join(normalize(text)) + " "


@lru_cache(maxsize=1 << 16)
def _joined_needle(span: str) -> str | None:
    tokens = span_tokens(span)
    return " " + " ".join(tokens) + " " if tokens else None


def fast_contains(text: str, span: str) -> bool:
    """:func:`evaluation.matching.contains_span` with both normalisations cached (bank texts repeat
    thousands of times); same answer: a contiguous run of whole normalised tokens."""
    needle = _joined_needle(span)
    return needle is not None and needle in _joined_tokens(text)


def _same_span(a: str, b: str) -> bool:
    """Do the spans overlap as whole tokens (one contains the other)?"""
    return fast_contains(a, b) or fast_contains(b, a)


def pick_replacements(
    key_span: str, kind: str, bank: SpanBank, rng: random.Random, n: int, *, exclude_text: str = ""
) -> list[str]:
    """Up to ``n`` distinct same-type replacements for ``key_span``: from the bank, then synthetic
    (years, numbers, dates). Never one that shares the key span's tokens, nor one already in
    ``exclude_text`` (the answer), which would leave the sentence unchanged in meaning."""
    pool = bank.pool(kind, key_span)
    chosen: list[str] = []
    seen: set[str] = set()
    attempts = 0
    limit = 6 * n + 10
    while pool and len(chosen) < n and attempts < limit and len(seen) < len(pool):
        attempts += 1
        span = pool[rng.randrange(len(pool))]
        if span in seen:
            continue
        seen.add(span)
        if _same_span(span, key_span) or (exclude_text and fast_contains(exclude_text, span)):
            continue
        chosen.append(span)
    attempts = 0
    while len(chosen) < n and attempts < 3 * n and kind in ("year", "number", "date"):
        attempts += 1
        span = synthetic_span(key_span, kind, rng)
        if span and span not in chosen and not _same_span(span, key_span):
            chosen.append(span)
    return chosen


def counterfactuals(
    answer: str, key_span: str, kind: str, bank: SpanBank, rng: random.Random, n: int
) -> tuple[list[str], list[str]]:
    """Up to ``n`` answers with the key span swapped for a same-type span, each checked to no
    longer contain the key span; returns (texts, reasons for what could not be made)."""
    if not key_span.strip():
        return [], ["the fact has an empty key span"]
    if swap_span(answer, key_span, "\x00") is None:
        return [], [f"key span {key_span!r} not found in the answer"]
    texts: list[str] = []
    reasons: list[str] = []
    for replacement in pick_replacements(key_span, kind, bank, rng, n + 2, exclude_text=answer):
        text = swap_span(answer, key_span, replacement)
        if text is None or contains_span(text, key_span) or text == answer or text in texts:
            continue
        texts.append(text)
        if len(texts) == n:
            break
    if not texts:
        reasons.append(f"no same-type ({kind}) replacement for key span {key_span!r} in the corpus")
    return texts, reasons
