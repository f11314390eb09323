"""Token and dollar accounting for evolve blocks, and the budget that stops a run before it overspends."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from functools import cache
from importlib.resources import files

from mixer.errors import MixerError
from mixer.yamlpos import load_packaged


@dataclass(frozen=True)
class Prices:
    prompt_per_1k: float
    completion_per_1k: float
    known: bool = True

    def usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_1k + completion_tokens * self.completion_per_1k) / 1000


def usd_text(usd: float, prices_known: bool) -> str:
    """A block's cost as written in tables; a model with no price (not in the table, no `prices:`) cost an
    unknown amount, which `$0.0000` would misstate."""
    return f"${usd:.4f}" if prices_known else "unknown price"


def dollars(usd: float) -> str:
    """A budget as the recipe gives it (5, 0.25, 0.0000001), in digits: `:g` wrote a tiny one as 1e-07 and a
    large one as 1.5e+06."""
    text = format(Decimal(repr(float(usd))), ",f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@cache
def price_table() -> dict[str, tuple[float, float]]:
    return load_packaged((files("mixer.evolve") / "prices.yaml").read_text(encoding="utf-8"))


# a dated snapshot of a model costs what the model does: gpt-4o-mini-2024-07-18, gpt-4-0613
SNAPSHOT = re.compile(r"(.+?)-(?:\d{4}-\d{2}-\d{2}|\d{4})")


def prices_for(model: str, override: dict[str, float] | None) -> Prices:
    """A listed model, or a dated snapshot of one; not any model whose name merely begins with a listed one:
    that priced gpt-4.5-preview as gpt-4 and o3-pro as o3, far below their prices, and a USD budget let them
    overspend."""
    if override:
        return Prices(override["prompt_per_1k"], override["completion_per_1k"])
    table = price_table()
    snapshot = SNAPSHOT.fullmatch(model)
    listed = model if model in table else snapshot.group(1) if snapshot else None
    if listed not in table:
        return Prices(0.0, 0.0, known=False)
    return Prices(*table[listed])


@dataclass
class Meter:
    """What a block's calls cost. Cached calls count too: the budget bounds the block's work, not one run of it,
    so resuming after a budget stop needs a larger budget rather than silently spending the same again."""

    calls: int = 0  # made over the network this run
    cached: int = 0  # answered from the cache
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict:
        return {**asdict(self), "usd": round(self.usd, 6), "tokens": self.tokens}


class BudgetReached(MixerError):
    pass


@dataclass
class Budget:
    """What a block may spend, what it has spent, and whether it must stop (a dead teacher halts every call
    at once instead of letting each queued row retry on its own)."""

    usd: float | None = None
    tokens: int | None = None
    spent: Meter = field(default_factory=Meter)
    halted: MixerError | None = None
    answered_at: float = field(default_factory=time.monotonic)  # the block's last answered call, or its start

    def check(self, block: str) -> None:
        """Raise before a new (uncached) call once the block has used its budget or has been halted."""
        if self.halted is not None:
            raise self.halted
        over = []
        if self.usd is not None and self.spent.usd >= self.usd:
            over.append(f"${self.spent.usd:.4f} of ${dollars(self.usd)}")
        if self.tokens is not None and self.spent.tokens >= self.tokens:
            over.append(f"{self.spent.tokens:,} of {self.tokens:,} tokens")
        if over:
            self.halted = BudgetReached(
                f"evolve.{block}: budget reached ({'; '.join(over)}); completed calls are cached",
                f"the budget counts the block's whole work, cached calls included: raise evolve.{block}.budget and "
                "run again; completed calls are reused, not repeated",
            )
            raise self.halted
