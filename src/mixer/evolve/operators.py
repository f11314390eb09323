"""Evolution operators, loaded from the YAML files beside this module (one per operator).

Operators are data so that a team can read, diff and override the exact wording that produced a dataset:
a recipe may replace any template, and the rendered prompt is part of every cache key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from mixer.errors import MixerError
from mixer.recipe import OperatorChoice
from mixer.yamlpos import load_packaged


@dataclass(frozen=True)
class Operator:
    name: str
    family: str  # wizardlm | wizardcoder
    summary: str
    template: str  # contains {instruction}
    weight: float = 1.0

    def render(self, instruction: str) -> str:
        # str.replace, not str.format: instructions are full of braces (code, JSON)
        return self.template.replace("{instruction}", instruction)


@cache
def packaged_operators() -> dict[str, Operator]:
    folder = files("mixer.evolve") / "operators"
    frames = load_packaged((folder / "frames.yaml").read_text(encoding="utf-8"))
    operators = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".yaml") or entry.name == "frames.yaml":
            continue
        data = load_packaged(entry.read_text(encoding="utf-8"))
        template = frames[data["frame"]].replace("{method}", data["method"].strip())
        operators[data["name"]] = Operator(data["name"], data["family"], data["summary"], template)
    return operators


def resolve_operators(choices: tuple[OperatorChoice, ...]) -> tuple[Operator, ...]:
    known = packaged_operators()
    resolved = []
    for choice in choices:
        if choice.template is None and choice.name not in known:
            raise MixerError(f"unknown evolve operator {choice.name!r}", f"known: {', '.join(known)}")
        base = known.get(choice.name)
        resolved.append(
            Operator(
                name=choice.name,
                family=base.family if base else "custom",
                summary=base.summary if base else "recipe template",
                template=choice.template or base.template,
                weight=choice.weight,
            )
        )
    return tuple(resolved)


def unit_interval(*parts: object) -> float:
    """A number in [0, 1) decided only by `parts`: per-row choices without any RNG state."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_operator(operators: tuple[Operator, ...], seed: int, row_id: str, round_no: int) -> Operator:
    """Weighted choice, deterministic from (seed, row id, round)."""
    point = unit_interval(seed, "operator", row_id, round_no) * sum(op.weight for op in operators)
    for op in operators:
        point -= op.weight
        if point < 0:
            return op
    return operators[-1]
