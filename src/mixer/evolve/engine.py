"""Run one evolve block: M rounds of rewrite → cheap checks → judge → answer → response checks.

Every row of a round runs concurrently (bounded by the teacher's semaphore); rounds are sequential because
round r+1 evolves the survivors of round r. Results are sorted by id, so the output does not depend on
which call finished first, and a resumed run (all answers from the cache) gives the same rows.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mixer.adapters.base import first_content
from mixer.errors import MixerError
from mixer.evolve import eliminate
from mixer.evolve.cache import TOO_LONG, CallCache
from mixer.evolve.client import Teacher
from mixer.evolve.cost import Budget, Meter, prices_for
from mixer.evolve.operators import Operator, choose_operator, resolve_operators
from mixer.evolve.reasoning import without_reasoning
from mixer.interrupts import Terminated, add_note
from mixer.load import META
from mixer.recipe import EvolveSpec

REJECT_SCHEMA = {
    "block": pl.String,
    "id": pl.String,
    "parent_id": pl.String,
    "round": pl.Int32,
    "operator": pl.String,
    "rule": pl.String,
    "detail": pl.String,
    "instruction": pl.String,
    "response": pl.String,
}


@dataclass(frozen=True)
class Candidate:
    id: str
    root_id: str
    instruction: str
    license: str | None
    lang: str | None


@dataclass(frozen=True)
class Outcome:
    candidate: Candidate  # the evolved row (id, instruction)
    parent_id: str
    round: int
    operator: str
    response: str | None = None
    rule: str | None = None  # set when eliminated
    detail: str | None = None


@dataclass
class RoundStats:
    round: int
    input: int = 0
    evolved: int = 0
    eliminated: Counter = field(default_factory=Counter)
    surviving: int = 0
    tokens: int = 0
    usd: float = 0.0
    # the last failure being retried, shown live until a row completes; not part of the manifest
    retrying: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "input": self.input,
            "evolved": self.evolved,
            "eliminated": dict(sorted(self.eliminated.items())),
            "surviving": self.surviving,
            "tokens": self.tokens,
            "usd": round(self.usd, 6),
        }


@dataclass
class EvolveResult:
    block: str
    rows: pl.DataFrame  # canonical rows (id, dataset, messages, meta)
    rejects: pl.DataFrame
    seeds: int
    rounds: list[RoundStats]
    meter: Meter
    code_blocks: Counter
    judge_unparsable: int
    reasoning_removed: int
    prices_known: bool

    def stats(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds,
            "rounds": [r.to_json() for r in self.rounds],
            "rows": self.rows.height,
            "rejected": self.rejects.height,
            "usage": self.meter.to_json(),
            "prices_known": self.prices_known,
            "code_blocks": dict(self.code_blocks),
            "judge_unparsable": self.judge_unparsable,
            "reasoning_removed": self.reasoning_removed,
        }


Report = Callable[[RoundStats, Meter, int], None]  # (round so far, meter, rows done in round)


class BlockRun:
    """The state of one block's run: teacher and judge clients, counters, the round loop."""

    def __init__(self, spec: EvolveSpec, seed: int, cache: CallCache, report: Report | None = None) -> None:
        self.spec = spec
        self.seed = seed
        self.operators: tuple[Operator, ...] = resolve_operators(spec.operators)
        self.budget = Budget(spec.budget_usd, spec.budget_tokens)
        semaphore = asyncio.Semaphore(spec.concurrency)
        rng = random.Random(f"{seed}:{spec.name}")  # jitter only; never decides data
        teacher_prices = prices_for(spec.teacher.model, spec.prices)
        judge_prices = prices_for(spec.judge.model, spec.prices)
        self.prices_known = teacher_prices.known and judge_prices.known
        self.teacher = Teacher(spec.teacher, cache, self.budget, teacher_prices, semaphore, spec.name, rng)
        self.judge = Teacher(spec.judge, cache, self.budget, judge_prices, semaphore, spec.name, rng)
        self.rules = set(spec.eliminate)
        self.code_blocks: Counter = Counter()
        self.judge_unparsable = 0
        self.reasoning_removed = 0  # completions whose <think> block was taken out (mixer.evolve.reasoning)
        self.keep_reasoning = spec.teacher.reasoning == "keep"
        self.report = report
        self._round: RoundStats | None = None  # the round running, for the report a retry sends
        self._done = 0
        self.teacher.on_retry = self.judge.on_retry = self._retrying

    def _report(self) -> None:
        if self.report and self._round is not None:
            self.report(self._round, self.budget.spent, self._done)

    def _retrying(self, failure: str) -> None:
        """Shown as it happens: a teacher down or rate-limited otherwise looks like a block that hangs."""
        if self._round is not None:
            self._round.retrying = failure
        self._report()

    async def evolve_one(self, parent: Candidate, round_no: int) -> Outcome:
        operator = choose_operator(self.operators, self.seed, parent.id, round_no)
        rewrite = await self.teacher.complete(operator.render(parent.instruction))
        evolved = self._reasoning_removed(rewrite.text).strip()
        child = Candidate(
            f"{parent.id}/evol/{round_no}/{operator.name}", parent.root_id, evolved, parent.license, parent.lang
        )

        def out(response: str | None = None, rule: str | None = None, detail: str | None = None) -> Outcome:
            return Outcome(child, parent.id, round_no, operator.name, response, rule, detail)

        if rewrite.finish_reason == TOO_LONG:  # one long seed must not stop the block: it is this row's failure
            return out(rule="too_long", detail=f"rewrite prompt refused: {rewrite.refusal}")
        if "truncated" in self.rules and (detail := eliminate.truncated(rewrite, self.spec.teacher.max_tokens)):
            return out(rule="truncated", detail=f"instruction: {detail}")  # empty too, when it ran out thinking
        if not evolved:
            return out(rule="empty", detail="the teacher returned an empty instruction")
        for rule in ("template_copy", "punctuation_only"):
            if rule in self.rules and (detail := getattr(eliminate, rule)(evolved)):
                return out(rule=rule, detail=f"instruction: {detail}")
        if "no_information_gain" in self.rules:
            verdict = await self.judge.complete(eliminate.judge_prompt(parent.instruction, evolved))
            if verdict.finish_reason == TOO_LONG:
                return out(rule="too_long", detail=f"judge prompt refused: {verdict.refusal}")
            answer = self._reasoning_removed(verdict.text)
            equal = eliminate.parse_judgement(answer)
            if equal is None:
                self.judge_unparsable += 1
                if not answer and verdict.text.strip():  # a reasoning judge cut off before its verdict
                    return out(
                        rule="no_information_gain",
                        detail=f"judge answer not understood: still thinking at its max_tokens "
                        f"({self.spec.judge.max_tokens}); a reasoning judge needs judge.max_tokens raised",
                    )
                return out(rule="no_information_gain", detail=f"judge answer not understood: {answer[:80]!r}")
            if equal:
                return out(rule="no_information_gain", detail="judge: Equal to its parent")
        answer_call = await self.teacher.complete(evolved)
        if answer_call.finish_reason == TOO_LONG:
            return out(rule="too_long", detail=f"instruction refused: {answer_call.refusal}")
        # without the blank lines some servers put around an answer, which would be trained on as its first tokens
        response = (answer_call.text if self.keep_reasoning else self._reasoning_removed(answer_call.text)).strip()
        if "truncated" in self.rules and (detail := eliminate.truncated(answer_call, self.spec.teacher.max_tokens)):
            return out(response, "truncated", f"response: {detail}")
        if not response:  # nothing to train on, whatever the rules
            return out(response, "empty", "the teacher returned an empty answer")
        if "refusal" in self.rules and (detail := eliminate.refusal(response)):
            return out(response, "refusal", detail)
        if "punctuation_only" in self.rules and (detail := eliminate.punctuation_only(response)):
            return out(response, "punctuation_only", f"response: {detail}")
        if "code_syntax" in self.rules:
            check = eliminate.code_syntax(response)
            self.code_blocks.update(python_checked=check.checked, other_languages_skipped=check.skipped)
            if check.reason:
                return out(response, "code_syntax", check.reason)
        return out(response)

    def _reasoning_removed(self, text: str) -> str:
        kept, removed = without_reasoning(text)
        self.reasoning_removed += removed
        return kept

    async def run_round(self, parents: list[Candidate], round_no: int) -> tuple[list[Outcome], RoundStats]:
        stats = RoundStats(round_no, input=len(parents))
        before = Meter(**vars(self.budget.spent))
        self._round, self._done = stats, 0

        async def tracked(parent: Candidate) -> Outcome:
            result = await self.evolve_one(parent, round_no)
            self._done += 1
            stats.retrying = None  # a call went through
            if result.rule:
                stats.eliminated[result.rule] += 1
            self._report()
            return result

        results = await asyncio.gather(*(tracked(p) for p in parents), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            # a budget stop or a dead teacher: every completed call is already in the cache
            raise next((f for f in failures if isinstance(f, MixerError)), failures[0])
        outcomes = sorted((r for r in results if isinstance(r, Outcome)), key=lambda o: o.candidate.id)
        stats.evolved = len(outcomes)
        stats.surviving = sum(1 for o in outcomes if o.rule is None)
        stats.tokens = self.budget.spent.tokens - before.tokens
        stats.usd = self.budget.spent.usd - before.usd
        return outcomes, stats

    async def run(self, seeds: list[Candidate]) -> tuple[list[Outcome], list[Outcome], list[RoundStats]]:
        kept: list[Outcome] = []
        rejected: list[Outcome] = []
        rounds: list[RoundStats] = []
        parents = seeds
        try:
            for round_no in range(1, self.spec.rounds + 1):
                outcomes, stats = await self.run_round(parents, round_no)
                rounds.append(stats)
                survivors = [o for o in outcomes if o.rule is None]
                rejected += [o for o in outcomes if o.rule is not None]
                if self.spec.keep == "all_rounds" or round_no == self.spec.rounds:
                    kept += survivors
                parents = [o.candidate for o in survivors]
        finally:
            await self.teacher.close()
            await self.judge.close()
        return kept, rejected, rounds


def seed_candidates(seeds: pl.DataFrame) -> list[Candidate]:
    """The first user turn of each seed row is what gets evolved (system prompts and later turns are not)."""
    firsts = seeds.select(
        "id",
        first_content(pl.col("messages"), "user").alias("instruction"),
        pl.col("meta").struct.field("license"),
        pl.col("meta").struct.field("lang"),
    )
    return [
        Candidate(r["id"], r["id"], r["instruction"], r["license"], r["lang"]) for r in firsts.iter_rows(named=True)
    ]


def outcome_rows(spec: EvolveSpec, dataset: str, kept: list[Outcome]) -> pl.DataFrame:
    records = [
        {
            "id": o.candidate.id,
            "dataset": dataset,
            "messages": [
                {"role": "user", "content": o.candidate.instruction},
                {"role": "assistant", "content": o.response},
            ],
            "meta": {
                "source": f"evolve:{spec.name}",
                "revision": None,
                "license": o.candidate.license,
                "lang": o.candidate.lang,
                "parent_id": o.parent_id,
                "root_id": o.candidate.root_id,
                "operator": o.operator,
                "round": o.round,
                "teacher": spec.teacher.model,
                "repeat": 0,
            },
        }
        for o in kept
    ]
    schema = {
        "id": pl.String,
        "dataset": pl.String,
        "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
        "meta": META,
    }
    return pl.DataFrame(records, schema=schema)


def reject_rows(spec: EvolveSpec, rejected: list[Outcome]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "block": spec.name,
                "id": o.candidate.id,
                "parent_id": o.parent_id,
                "round": o.round,
                "operator": o.operator,
                "rule": o.rule,
                "detail": o.detail,
                "instruction": o.candidate.instruction,
                "response": o.response,
            }
            for o in sorted(rejected, key=lambda o: o.candidate.id)
        ],
        schema=REJECT_SCHEMA,
    )


def run_block(
    spec: EvolveSpec, seeds: pl.DataFrame, *, seed: int, cache_path: Path, report: Report | None = None
) -> EvolveResult:
    """Evolve `seeds` (canonical rows) through the block's rounds; raises MixerError on a budget stop or a dead
    teacher, after every completed call has been cached."""
    cache = CallCache(cache_path)
    try:
        run = BlockRun(spec, seed, cache, report)
        candidates = seed_candidates(seeds)
        try:
            kept, rejected, rounds = asyncio.run(run.run(candidates))
        except (KeyboardInterrupt, Terminated) as stop:
            add_note(stop, resume_note(spec.name, run.budget.spent))
            raise
    finally:
        cache.close()
    return EvolveResult(
        block=spec.name,
        rows=outcome_rows(spec, spec.name, kept),
        rejects=reject_rows(spec, rejected),
        seeds=len(candidates),
        rounds=rounds,
        meter=run.budget.spent,
        code_blocks=run.code_blocks,
        judge_unparsable=run.judge_unparsable,
        reasoning_removed=run.reasoning_removed,
        prices_known=run.prices_known,
    )


def resume_note(block: str, spent: Meter) -> str:
    """What a block stopped by Ctrl-C or SIGTERM leaves: hours of paid calls are not lost, and saying so spares a
    user the guess (or a look into the cache) before running it again."""
    return (
        f"evolve.{block}: {spent.calls:,} teacher call(s) made in this run are cached ({spent.cached:,} more were read"
        " from the cache): run again to resume without asking them again"
    )
