"""A strategy owns a prompt and its parser: fact -> :class:`GenerationRequest`, output -> candidates.

Both directions are pure functions of the strategy and the fact, tested without a model. The
prompt version stored on every candidate is a hash of everything that shapes the prompt (the
instruction, the template, the cue and the output-format hints), so a changed prompt yields new
candidate ids instead of silently relabelling old ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from lune.data.ids import content_id
from lune.generators.base import GenerationRequest
from lune.generators.rules.spans import span_type
from lune.generators.strategies.parsing import parse_output

JSON_HINT = 'Reply with one JSON object: {{"{field}": "..."}}'
PLAIN_STOP = ["\n\n", "\nQuestion:"]


@dataclass(frozen=True)
class Strategy:
    """One way of turning a fact into candidates of one kind."""

    name: str  # counterfactual / paraphrase / attack / refusal
    kind: str  # the candidate kind it makes: negative / paraphrase / attack / refusal
    field: str  # JSON key of the candidate in structured output
    instruction: str  # the task, as a system message (or the prompt's first paragraph)
    template: str  # the fact, laid out: {question} {answer} {key_span} {span_type} {subject} ...
    cue: str  # the last line of a plain prompt ("False answer:")
    original: str  # the fact field a candidate must differ from: "answer" or "question"
    attack_type: str | None = None
    max_chars: int = 600

    @cached_property
    def prompt_version(self) -> str:
        return content_id(
            "prompt", self.name, self.attack_type, self.instruction, self.template, self.cue, JSON_HINT, PLAIN_STOP
        )[:12]

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {self.field: {"type": "string", "minLength": 1, "maxLength": self.max_chars}},
            "required": [self.field],
            "additionalProperties": False,
        }

    def fields(self, fact: Mapping[str, Any]) -> dict[str, Any]:
        key = fact.get("key_span") or ""
        return {
            "question": fact["question"].strip(),
            "answer": fact["answer"].strip(),
            "key_span": key,
            "span_type": span_type(key, fact["question"], fact["answer"]).replace("other", "phrase"),
            "subject": fact.get("subject") or "the subject",
        }

    def render(self, fact: Mapping[str, Any], *, structured: bool) -> tuple[str, list[dict[str, str]]]:
        """The plain prompt and the chat messages for ``fact``."""
        user = self.template.format(**self.fields(fact))
        if structured:
            user = f"{user}\n{JSON_HINT.format(field=self.field)}"
        prompt = f"{self.instruction}\n\n{user}\n{'JSON:' if structured else self.cue}"
        messages = [{"role": "system", "content": self.instruction}, {"role": "user", "content": user}]
        return prompt, messages

    def build_request(
        self,
        fact: Mapping[str, Any],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int | None,
        structured: bool,
        render: bool = True,
    ) -> GenerationRequest:
        """The request for ``fact``; ``render=False`` leaves the prompt empty (for backends that read
        the fact from the metadata and never look at a prompt: rules, dataset)."""
        prompt, messages = self.render(fact, structured=structured) if render else ("", None)
        return GenerationRequest(
            prompt=prompt,
            messages=messages,
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            seed=seed,
            stop=[] if structured else list(PLAIN_STOP),
            json_schema=self.json_schema() if structured else None,
            metadata={
                "fact": fact,
                "fact_id": fact["fact_id"],
                "strategy": self.name,
                "kind": self.kind,
                "attack_type": self.attack_type,
            },
        )

    def parse(self, fact: Mapping[str, Any], text: str | None, *, structured: bool) -> tuple[list[str], list[str]]:
        """Candidates read from one output, and reasons for what could not be read."""
        return parse_output(
            text, self.field, expect_json=structured, original=fact.get(self.original), max_chars=self.max_chars
        )
