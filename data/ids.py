"""Content-hash ids: the same content always gets the same id, so every write is idempotent."""

from __future__ import annotations

import hashlib
import json
from typing import Any

ID_LENGTH = 20  # hex characters (80 bits): collisions are negligible at billions of rows


def content_id(*parts: Any) -> str:
    """Hash the parts (strings, numbers, None, JSON-able values) into a stable hex id.

    Parts are JSON-encoded before hashing, so ``("a,b",)`` and ``("a", "b")`` differ.
    """
    payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:ID_LENGTH]


def text_hash(text: str) -> str:
    """Hash of one text, used to cache its embedding."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_LENGTH]
