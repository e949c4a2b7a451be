"""A character-level CLIP BPE tokenizer small enough to write in a test (no download)."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")


def write_char_tokenizer(directory: Path) -> transformers.CLIPTokenizer:
    """Write ``vocab.json``/``merges.txt`` of a CLIP tokenizer that spells words letter by letter
    (lowercase letters, digits and '-') to ``directory`` (created if missing) and return it
    loaded; its special tokens are the last two ids."""
    directory.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + "-"
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({f"{c}</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
