"""Prompts without replies (WizardLM's test instructions, a team's own prompt list): seeds for an evolve
block, which rewrites the instruction and has the teacher answer it. Read as Alpaca records without the reply,
so the same seeds read as `alpaca` or `prompts` evolve alike.
"""

from __future__ import annotations

from functools import partial

from mixer.adapters.alpaca import convert
from mixer.adapters.base import adapter

ADAPTER = adapter("prompts", partial(convert, reply=None))
