"""Build a tiny Llama-shaped causal LM offline: a byte-level BPE tokenizer trained on a corpus
with `tokenizers`, and a small randomly initialised `LlamaForCausalLM`.

Nothing is fetched from a hub: this is how the embedded default and the tests get a real model
that transformers, PEFT and vLLM all load. ``lune teach`` then teaches it the facts.

    >>> path = build_tiny_llama(texts, "models/tiny", TinyModelSpec(seed=0))
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from lune.data.ids import content_id

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model (defaults: 4 layers, width 256, about 3M parameters with its vocabulary)."""

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 512
    seed: int = 0


def spec_hash(texts: list[str], spec: TinyModelSpec) -> str:
    """Content hash of what determines the built model (corpus and shape)."""
    return content_id("tiny-llama", asdict(spec), texts)


def build_tiny_llama(texts: Iterable[str], out_dir: str | Path, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Train a tokenizer on ``texts``, initialise a Llama of shape ``spec``, save both to ``out_dir``.

    Returns ``out_dir``. If ``out_dir`` already holds a model built from the same texts and spec
    (recorded in ``lune_tiny_model.json``), it is reused as is.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("build_tiny_llama needs at least one text to train its tokenizer on")
    out = Path(out_dir)
    marker = out / "lune_tiny_model.json"
    wanted = spec_hash(texts, spec)
    if marker.exists() and json.loads(marker.read_text()).get("hash") == wanted:
        return out

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    # Prepend <s> like Llama tokenizers do; EOS is appended by the training code where wanted.
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bpe.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=spec.max_position_embeddings,
    )

    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    marker.write_text(json.dumps({"hash": wanted, "spec": asdict(spec), "texts": len(texts)}, indent=2))
    return out
