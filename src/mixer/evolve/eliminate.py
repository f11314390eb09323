"""Elimination rules: WizardLM's four (Xu et al. 2023, Sec. 3.2) and a syntax check for code.

Each rule is a small function returning why a row fails, or None. The judge rule needs a model call; the
engine makes it and only `parse_judgement` lives here, strict so that a chatty judge never passes silently.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from mixer.evolve.cache import Completion

# Phrases of the prompt frames that a failed evolution copies into its output.
TEMPLATE_PHRASES = (
    "#given instruction#",
    "#rewritten instruction#",
    "#new instruction#",
    "given instruction",
    "rewritten instruction",
    "given prompt",
    "rewritten prompt",
    "#the given prompt#",
    "#rewritten prompt#",
    "#created prompt#",
)
REFUSAL_WORD_LIMIT = 80
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
PYTHON_TAGS = frozenset({"python", "py", "python3"})

JUDGE_TEMPLATE = """Here are two instructions for an AI assistant. Are they equal to each other, that is:
1. they have the same constraints and requirements, and
2. they have the same depth and breadth of inquiry?

First instruction:
{first}

Second instruction:
{second}

Answer with exactly "Equal" or "Not Equal" and nothing else."""


@dataclass(frozen=True)
class CodeCheck:
    reason: str | None
    checked: int  # python blocks parsed
    skipped: int  # blocks in other or unnamed languages


@cache
def stop_words() -> frozenset[str]:
    text = (files("mixer.evolve") / "stop_words.txt").read_text(encoding="utf-8")
    return frozenset(line for line in text.split("\n") if line and not line.startswith("#"))


def punctuation_only(text: str) -> str | None:
    words = re.findall(r"[^\W_]+", text.lower())
    if all(word in stop_words() for word in words):
        return "only punctuation and stop words" if text.strip() else "empty"
    return None


def template_copy(instruction: str) -> str | None:
    lowered = instruction.lower()
    for phrase in TEMPLATE_PHRASES:
        if phrase in lowered:
            return f"copies the template phrase {phrase!r}"
    return None


def refusal(response: str) -> str | None:
    words = len(response.split())
    if "sorry" in response.lower() and words < REFUSAL_WORD_LIMIT:
        return f"refusal: says sorry in {words} words (< {REFUSAL_WORD_LIMIT})"
    return None


def truncated(completion: Completion, max_tokens: int) -> str | None:
    """A completion the server stopped at `max_tokens` ends mid-thought: as an instruction it asks half a
    question, as an answer it teaches the model to stop mid-sentence."""
    if completion.finish_reason == "length":
        return f"cut off at max_tokens ({max_tokens}; finish_reason: length)"
    return None


def code_syntax(response: str) -> CodeCheck:
    checked = skipped = 0
    for number, match in enumerate(FENCE.finditer(response), start=1):
        language, code = match.group(1).lower(), match.group(2)
        if language not in PYTHON_TAGS:
            skipped += 1
            continue
        checked += 1
        try:
            ast.parse(code)
        except SyntaxError as exc:
            return CodeCheck(f"python block {number} does not parse: line {exc.lineno}: {exc.msg}", checked, skipped)
    return CodeCheck(None, checked, skipped)


def judge_prompt(first: str, second: str) -> str:
    return JUDGE_TEMPLATE.replace("{first}", first).replace("{second}", second)


def parse_judgement(answer: str) -> bool | None:
    """True for "Equal" (no information gain), False for "Not Equal", None for anything else."""
    normalised = re.sub(r"[\s*_`'\".:!]+", " ", answer).strip().lower()
    return {"equal": True, "not equal": False}.get(normalised)
