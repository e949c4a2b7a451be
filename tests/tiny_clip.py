"""A character-level CLIP BPE tokenizer small enough to write in a test (no download).

It is the benchmarks' tokenizer (benchmarks/bench_sd.py), with '-' spelled too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))  # bench_sd imports bench_mor from its own folder

from bench_sd import char_tokenizer  # noqa: E402


def write_char_tokenizer(directory: Path) -> transformers.CLIPTokenizer:
    """Write ``vocab.json``/``merges.txt`` of a CLIP tokenizer that spells words letter by letter
    and return it loaded; its special tokens are the last two ids."""
    return char_tokenizer(directory, extra_chars="-")
