"""`fluency`: does a candidate read as text rather than a degenerate loop? In [0, 1], by one of two measures.

- **Character-trigram entropy** (the default, no model): the entropy of the text's character
  trigrams normalised by its maximum, H / log2(N) over the N trigrams, mapped so that 0.9
  (ordinary prose: 0.91 to 0.99 on TOFU) is 1.0 and 0.6 is 0. It measures repetition, not grammar:
  loops ("the the the", a sentence said three times) score 0 to 0.4, word salad scores high. Texts
  under 12 characters (answer spans such as "2014") are not judged: 1.0; an empty text is 0.
- **Language-model likelihood** (``score.fluency_model`` set): the mean token log-likelihood under
  that causal LM (``detail`` keeps it, in nats), mapped linearly so that 0 nats is 1.0 and
  ``score.fluency_logprob_floor`` is 0.

The stored scorer id stays ``fluency`` for both: it names the curation axis (the ``min_fluency``
gate, the ``fluency_weight`` of quality, the views' ``fluency`` column, the ``disfluent`` drop
reason), of which the two measures are estimates; the version (``entropy-2`` / ``lm-1:...``) and
the detail (``trigram_entropy`` / ``mean_logprob``) say which one a stored value comes from.
Renaming the id would change stored rows, five config keys and the curation SQL for no change of
meaning. (The evaluation's word n-gram entropy of model answers is a different measure, stored as
``word_ngram_entropy``.)
"""

from __future__ import annotations

import collections
import math
from typing import Any

from lune.core.model_refs import resolve_model
from lune.data.errors import LuneError
from lune.generators.config import ScoreConfig
from lune.generators.scorers.base import Score, Scorer

ENTROPY_LOW, ENTROPY_HIGH = 0.6, 0.9
SHORT_TEXT = 12  # characters under which entropy is not judged (value 1.0)


def trigram_entropy(text: str) -> float:
    """Normalised character-trigram entropy of ``text`` (case-folded, whitespace collapsed)."""
    folded = " ".join(text.casefold().split())
    grams = [folded[i : i + 3] for i in range(len(folded) - 2)]
    n = len(grams)
    if n < 2:
        return 1.0 if n == 1 else 0.0
    counts = collections.Counter(grams)
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    return entropy / math.log2(n)


def trigram_entropy_score(text: str) -> tuple[float, dict[str, Any]]:
    """(value, detail) by character-trigram entropy: clip((H / log2 N - 0.6) / (0.9 - 0.6), 0, 1)."""
    folded = " ".join(text.split())
    if not folded:
        return 0.0, {"trigram_entropy": 0.0, "note": "empty"}
    if len(folded) < SHORT_TEXT:
        # A span ("2014", "Paris") has too few trigrams for entropy to say anything.
        return 1.0, {"trigram_entropy": None, "note": "too short to judge"}
    ratio = trigram_entropy(text)
    value = min(1.0, max(0.0, (ratio - ENTROPY_LOW) / (ENTROPY_HIGH - ENTROPY_LOW)))
    return value, {"trigram_entropy": round(ratio, 4)}


def logprob_score(mean_logprob: float, floor: float) -> float:
    """Mean token log-likelihood mapped to [0, 1]: clip(1 - mean_logprob / floor, 0, 1)."""
    return min(1.0, max(0.0, 1.0 - mean_logprob / floor))


class ReferenceLM:
    """Mean token log-likelihood of texts under a causal LM (CPU, right-padded batches)."""

    def __init__(self, path: str, *, batch_size: int = 16, max_length: int = 256):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = str(resolve_model(path, "score.fluency_model"))  # a folder, a GGUF file or a known name
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError) as err:
            raise LuneError(f"score.fluency_model: cannot load a causal LM from {path}: {err}") from None
        self.model.eval()
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.batch_size = batch_size
        self.max_length = max_length
        self.torch = torch

    def mean_logprobs(self, texts: list[str]) -> list[float | None]:
        torch = self.torch
        out: list[float | None] = []
        bos = self.tokenizer.bos_token or ""
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            # Prepend BOS (when the tokenizer does not) so that the first word is scored too.
            enc = self.tokenizer(
                [t if t.startswith(bos) else bos + t for t in batch],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,
            )
            with torch.no_grad():
                logits = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            targets = enc["input_ids"][:, 1:]
            mask = enc["attention_mask"][:, 1:].float()
            token_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask
            counts = mask.sum(dim=1)
            for total, count in zip(token_lp.sum(dim=1).tolist(), counts.tolist()):
                out.append(total / count if count > 0 else None)
        return out


class Fluency(Scorer):
    name = "fluency"

    lm: ReferenceLM | None = None  # with score.fluency_model, loaded by load()

    @classmethod
    def version(cls, config: ScoreConfig) -> str:
        if config.fluency_model:
            return f"lm-1:{config.fluency_model}:{config.fluency_logprob_floor}"
        return "entropy-2"

    def load(self) -> None:
        if self.config.fluency_model:
            self.lm = ReferenceLM(self.config.fluency_model, batch_size=min(self.config.batch_size, 32))

    def score(self, rows: list[dict[str, Any]]) -> list[Score]:
        if not self.config.fluency_model:
            return [Score(row["candidate_id"], *trigram_entropy_score(row["text"])) for row in rows]
        assert self.lm is not None, "load() first"
        scores = []
        for row, mean in zip(rows, self.lm.mean_logprobs([row["text"] for row in rows]), strict=True):
            if mean is None:
                scores.append(Score(row["candidate_id"], 0.0, {"mean_logprob": None, "note": "no token to score"}))
            else:
                scores.append(
                    Score(
                        row["candidate_id"],
                        logprob_score(mean, self.config.fluency_logprob_floor),
                        {"mean_logprob": round(mean, 4)},
                    )
                )
        return scores
