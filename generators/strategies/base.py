"""A strategy owns a prompt and its parser: fact -> :class:`GenerationRequest`, output -> candidates.

Both directions are pure functions of the strategy and the fact, tested without a model. The
prompt version stored on every candidate is a hash of everything that shapes the prompt (the
instruction, the template, the cue and the output-format hints), so a changed prompt yields new
candidate ids instead of silently relabelling old ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lune.core.matching import normalize
from lune.data.ids import content_id
from lune.generators.base import GenerationRequest
from lune.generators.rules.spans import span_type
from lune.generators.strategies.layouts import FEW_SHOT_STOP, SHOT_SEPARATOR, render_shots
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
    # The few-shot layout (``layouts.py``): one example's line(s), ending in a cue the output follows
    # ("Q: {question}\nTrue: {answer}\nFalse:"), and worked examples (its fields plus ``output``).
    # A strategy without them is laid out as ``instruct`` whatever the config asks.
    few_shot_template: str | None = None
    few_shot_examples: tuple[Mapping[str, str], ...] = field(default=(), hash=False)

    @cached_property
    def prompt_version(self) -> str:
        """The version of the instruct layout (the only one before layouts existed: ids unchanged)."""
        return content_id(
            "prompt", self.name, self.attack_type, self.instruction, self.template, self.cue, JSON_HINT, PLAIN_STOP
        )[:12]

    @cached_property
    def few_shot_version(self) -> str | None:
        if not self.few_shot_template:
            return None
        examples = [dict(sorted(e.items())) for e in self.few_shot_examples]
        return content_id(
            "prompt-few-shot",
            self.name,
            self.attack_type,
            self.few_shot_template,
            examples,
            FEW_SHOT_STOP,
            SHOT_SEPARATOR,
        )[:12]

    def layout_used(self, layout: str) -> str:
        """The layout a request under ``layout`` (``instruct`` / ``few_shot``) really gets."""
        return "few_shot" if layout == "few_shot" and self.few_shot_template else "instruct"

    def prompt_version_for(self, layout: str) -> str:
        """The prompt version stored on candidates made under ``layout``."""
        return self.few_shot_version if self.layout_used(layout) == "few_shot" else self.prompt_version  # type: ignore[return-value]

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

    def render_few_shot(self, fact: Mapping[str, Any]) -> str:
        """The few-shot prompt for ``fact`` (needs ``few_shot_template``)."""
        assert self.few_shot_template, f"strategy {self.name} has no few-shot layout"
        return render_shots(self.few_shot_template, self.few_shot_examples, self.fields(fact))

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
        layout: str = "instruct",
    ) -> GenerationRequest:
        """The request for ``fact`` under ``layout`` (``instruct`` or ``few_shot``, already resolved:
        ``layouts.resolve_layout``); ``render=False`` leaves the prompt empty (for backends that read
        the fact from the metadata and never look at a prompt: rules, dataset). A few-shot request is
        plain text, stops at the end of the line and never carries a JSON schema."""
        layout = self.layout_used(layout)
        few_shot = layout == "few_shot"
        structured = structured and not few_shot
        if not render:
            prompt, messages = "", None
        elif few_shot:
            prompt, messages = self.render_few_shot(fact), None
        else:
            prompt, messages = self.render(fact, structured=structured)
        return GenerationRequest(
            prompt=prompt,
            messages=messages,
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            seed=seed,
            stop=list(FEW_SHOT_STOP) if few_shot else [] if structured else list(PLAIN_STOP),
            json_schema=self.json_schema() if structured else None,
            metadata={
                "fact": fact,
                "fact_id": fact["fact_id"],
                "strategy": self.name,
                "kind": self.kind,
                "attack_type": self.attack_type,
                "layout": layout,
                "prompt_version": self.prompt_version_for(layout),
            },
        )

    def parse(self, fact: Mapping[str, Any], text: str | None, *, structured: bool) -> tuple[list[str], list[str]]:
        """Candidates read from one output, and reasons for what could not be read. A copy of one of
        the worked examples' outputs (a small model repeats the prompt) is refused too."""
        texts, reasons = parse_output(
            text, self.field, expect_json=structured, original=fact.get(self.original), max_chars=self.max_chars
        )
        copies = self._example_outputs
        kept = [t for t in texts if " ".join(normalize(t)) not in copies]
        reasons.extend("copies a worked example" for _ in range(len(texts) - len(kept)))
        return kept, reasons

    @cached_property
    def _example_outputs(self) -> frozenset[str]:
        return frozenset(" ".join(normalize(e["output"])) for e in self.few_shot_examples)
