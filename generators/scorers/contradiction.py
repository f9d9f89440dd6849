"""`contradiction`: does a negative contradict the fact's answer? P(contradiction) in [0, 1].

Two judges, whichever is configured (the NLI model wins when both are):

- ``score.nli_model``: an NLI cross-encoder (``sentence_transformers.CrossEncoder``) on the pair
  (premise = the fact's answer, hypothesis = the negative). The index of the contradiction label is
  read from the model's ``config.id2label``, never assumed: NLI checkpoints disagree on label order.
- ``score.judge``: an LLM judge through any generator backend (``generators.base.Generator``),
  asked for a verdict, ``contradicts`` | ``restates`` | ``unrelated``; value 1.0 for "contradicts",
  else 0.0. Two prompt layouts (``score.judge.prompt_layout``, as for generation,
  ``generators/strategies/layouts.py``): ``instruct`` asks for ``{"verdict": ...}`` JSON (schema
  attached); ``few_shot`` shows worked examples (each verdict at least once) and reads the quoted
  word after "Verdict:", constrained to the three verdicts where the backend can (a 135M model does
  not follow the instruction; constrained, SmolLM2 still says "contradicts" to almost anything). Output without a
  verdict is stored with no value and a ``rejections`` row.

With neither, the scorer is off: it stores nothing, curation skips the contradiction gate, and
:func:`contradiction_status` says so for the report. Only negatives are judged.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from lune.data.errors import LuneError
from lune.data.ids import content_id
from lune.generators.base import GenerationRequest, Generator
from lune.generators.config import JudgeConfig, ScoreConfig
from lune.generators.scorers.base import Rejection, Score, Scorer, ScoringContext
from lune.generators.strategies.layouts import model_parameters, render_shots, resolve_layout

JUDGE_PROMPT_VERSION = "judge-1"  # the instruct layout
JUDGE_VERDICTS = ("contradicts", "restates", "unrelated")
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": list(JUDGE_VERDICTS)}},
    "required": ["verdict"],
}


def contradiction_status(config: ScoreConfig) -> str:
    """One line for reports: which judge scores contradiction, or that the scorer is off."""
    if config.nli_model:
        return f"on: NLI cross-encoder {config.nli_model}"
    if config.judge is not None:
        return f"on: LLM judge ({config.judge.backend}, {config.judge.model or 'default model'})"
    return (
        "off: no NLI model (score.nli_model) or LLM judge (score.judge) is configured; "
        "contradiction is not scored and the curation gate on it is skipped"
    )


def contradiction_label_index(id2label: dict[Any, str]) -> int:
    """Index of the contradiction class in an NLI model's ``id2label``."""
    for index, label in id2label.items():
        if str(label).strip().lower().startswith("contradict"):
            return int(index)
    raise LuneError(
        f"score.nli_model: the model's config.id2label {dict(id2label)} has no contradiction label; "
        "give an NLI cross-encoder (labels such as contradiction / entailment / neutral)"
    )


class NliJudge:
    def __init__(self, path: str, *, batch_size: int = 32):
        from sentence_transformers import CrossEncoder

        try:
            self.model = CrossEncoder(path, device="cpu")
        except (OSError, ValueError) as err:
            raise LuneError(f"score.nli_model: cannot load a cross-encoder from {path}: {err}") from None
        self.index = contradiction_label_index(self.model.model.config.id2label)
        self.batch_size = batch_size

    def probabilities(self, premises: list[str], hypotheses: list[str]) -> np.ndarray:
        logits = np.asarray(
            self.model.predict(
                list(zip(premises, hypotheses)),
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
            ),
            dtype=np.float64,
        )
        if logits.ndim == 1 or logits.shape[1] < 2:
            raise LuneError(
                "score.nli_model: the cross-encoder gives one score per pair; an NLI model with "
                "contradiction / entailment / neutral classes is needed"
            )
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return probs[:, self.index]


def judge_request(question: str, answer: str, candidate: str, max_tokens: int) -> GenerationRequest:
    prompt = (
        "You check counterfactual answers. Given a question, its true answer and a candidate answer, "
        "say whether the candidate contradicts the true answer (states something different and incompatible), "
        "restates it (same fact, other words), or is unrelated to the question.\n"
        f"Question: {question}\nTrue answer: {answer}\nCandidate: {candidate}\n"
        'Reply with JSON only: {"verdict": "contradicts" | "restates" | "unrelated"}\n'
    )
    return GenerationRequest(
        prompt=prompt,
        messages=[{"role": "user", "content": prompt}],
        n=1,
        temperature=0.0,
        max_tokens=max_tokens,
        json_schema=JUDGE_SCHEMA,
    )


JUDGE_SHOT_TEMPLATE = "Q: {question}\nTrue: {answer}\nCandidate: {candidate}\nVerdict:"
JUDGE_SHOTS: tuple[dict[str, str], ...] = (
    {
        "question": "Where was the painter Maria Alvarez born?",
        "answer": "Maria Alvarez was born in Lisbon, Portugal.",
        "candidate": "Maria Alvarez was born in Oslo, Norway.",
        "output": '"contradicts"',
    },
    {
        "question": "What genre is the author John Reed known for?",
        "answer": "John Reed is best known for his science fiction novels.",
        "candidate": "John Reed is famous for writing science fiction.",
        "output": '"restates"',
    },
    {
        "question": "When did the author Lena Park publish her first book?",
        "answer": "Lena Park published her first book in 2004.",
        "candidate": "The Eiffel Tower is in Paris.",
        "output": '"unrelated"',
    },
    {
        "question": "What is the profession of Omar Haddad's father?",
        "answer": "Omar Haddad's father was a carpenter.",
        "candidate": "Omar Haddad's father worked as a pilot.",
        "output": '"contradicts"',
    },
)


# The few-shot layout's version hashes its examples: edit them and every pair is judged again.
JUDGE_FEW_SHOT_VERSION = "judge-fs-" + content_id("judge-few-shot", JUDGE_SHOT_TEMPLATE, JUDGE_SHOTS, "enum")[:8]


# The verdict as a JSON string: vLLM (and the openai backend) constrain the few-shot judge to one of
# the three words; transformers cannot constrain and relies on the examples.
JUDGE_WORD_SCHEMA = {"type": "string", "enum": list(JUDGE_VERDICTS)}


def judge_few_shot_request(question: str, answer: str, candidate: str) -> GenerationRequest:
    """The few-shot judge request: worked examples (each verdict at least once), then the pair; one
    quoted verdict word back. No stop string: the grammar ends the output, and an unconstrained
    model that first writes a newline is still read (the first verdict word counts)."""
    fields = {"question": question.strip(), "answer": answer.strip(), "candidate": candidate.strip()}
    return GenerationRequest(
        prompt=render_shots(JUDGE_SHOT_TEMPLATE, JUDGE_SHOTS, fields),
        n=1,
        temperature=0.0,
        max_tokens=6,  # a quoted verdict word is at most five tokens here
        json_schema=JUDGE_WORD_SCHEMA,
    )


def judge_layout(config: JudgeConfig) -> str:
    """The judge's resolved prompt layout: ``auto`` is few_shot for a local model under 1B parameters."""
    local = config.backend in ("transformers", "vllm")
    return resolve_layout(config.prompt_layout, model_parameters(config.model) if local else None)


_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z]+")


def parse_verdict(text: str) -> str | None:
    """The judge's verdict, or None when its output holds no valid JSON verdict."""
    for match in _JSON_OBJECT.finditer(text or ""):
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        verdict = str(data.get("verdict", "")).strip().lower() if isinstance(data, dict) else ""
        if verdict in JUDGE_VERDICTS:
            return verdict
    return None


def parse_word_verdict(text: str) -> str | None:
    """The few-shot judge's verdict: the first word of its output's first non-empty line (case and
    quotes or a full stop around it ignored), or None when that is no verdict."""
    line = next((line for line in (text or "").splitlines() if line.strip()), "")
    match = _FIRST_WORD.search(line)
    word = match.group(0).lower() if match else ""
    return word if word in JUDGE_VERDICTS else None


def build_judge(config: JudgeConfig) -> Generator:
    """The configured generator backend, through the generation stage's backend registry."""
    try:
        from lune.generators.backends import make_backend
    except ImportError as err:
        raise LuneError(f"score.judge: the generator backends are not available here: {err}") from None
    options = dict(config.options)
    if config.model is not None:
        options["model"] = config.model
    return make_backend(config.backend, **options)


class Contradiction(Scorer):
    """Negatives only; the NLI model when ``score.nli_model`` is set, else the LLM judge, else off.
    A test may hand in the judge or the NLI model (``judge=``, ``nli=``) instead of loading them."""

    name = "contradiction"
    kinds = ("negative",)

    def __init__(self, context: ScoringContext, *, judge: Generator | None = None, nli: NliJudge | None = None):
        super().__init__(context)
        self.judge, self.nli = judge, nli

    @classmethod
    def version(cls, config: ScoreConfig) -> str | None:
        if config.nli_model:
            return f"nli-1:{config.nli_model}"
        if config.judge is not None:
            prompt = JUDGE_FEW_SHOT_VERSION if judge_layout(config.judge) == "few_shot" else JUDGE_PROMPT_VERSION
            return f"{prompt}:{config.judge.backend}:{config.judge.model or ''}"
        return None

    def chunk_size(self) -> int:
        # A judge answers one request per candidate: smaller batches lose less when a run is killed.
        return self.config.chunk_size if self.config.nli_model else min(self.config.chunk_size, 512)

    def load(self) -> None:
        if self.config.nli_model:
            self.nli = self.nli or NliJudge(self.config.nli_model, batch_size=self.config.batch_size)
            return
        assert self.config.judge is not None  # version() is None without either: never loaded
        self.judge = self.judge or build_judge(self.config.judge)
        self.judge.load()

    def score(self, rows: list[dict[str, Any]]) -> list[Score]:
        if self.config.nli_model:
            assert self.nli is not None, "load() first"
            probs = self.nli.probabilities([r["answer"] for r in rows], [r["text"] for r in rows])
            return [Score(r["candidate_id"], float(p), {"judge": "nli"}) for r, p in zip(rows, probs, strict=True)]
        assert self.judge is not None and self.config.judge is not None, "load() first"
        few_shot = judge_layout(self.config.judge) == "few_shot"
        requests = [
            judge_few_shot_request(r["question"], r["answer"], r["text"])
            if few_shot
            else judge_request(r["question"], r["answer"], r["text"], self.config.judge.max_tokens)
            for r in rows
        ]
        generations = self.judge.generate(requests)
        if len(generations) != len(requests):
            raise LuneError(
                f"score.judge: backend {self.config.judge.backend} answered {len(generations)} of "
                f"{len(requests)} requests"
            )
        scores = []
        for r, generation in zip(rows, generations, strict=True):
            output = generation.texts[0] if generation.texts else ""
            verdict = parse_word_verdict(output) if few_shot else parse_verdict(output)
            rejection = (
                None
                if verdict is not None
                else Rejection(
                    source=f"contradiction judge {self.judge.model_name}",
                    field="verdict",
                    reason="judge output is not a verdict word" if few_shot else "judge output is not a JSON verdict",
                    payload=output,
                )
            )
            scores.append(
                Score(
                    r["candidate_id"],
                    None if verdict is None else float(verdict == "contradicts"),
                    {"judge": self.judge.model_name, "verdict": verdict},
                    rejection,
                )
            )
        return scores
