"""Where evolve blocks meet the mixture: seeds drawn from a source's selected rows, and the block's
output turned into a pool that is selected, filtered and deduplicated like any other source."""

from __future__ import annotations

import polars as pl

from mixer.adapters.base import first_content
from mixer.evolve.client import unset_key
from mixer.evolve.cost import prices_for
from mixer.evolve.engine import EvolveResult
from mixer.evolve.operators import resolve_operators
from mixer.load import Pool, apply_filters, row_filters
from mixer.mix import select_keys, with_repeat
from mixer.plan import Estimate
from mixer.recipe import EvolveSpec, Recipe, SourceSpec
from mixer.resolve import ResolvedSource
from mixer.stage import Staged

# Rough shape of an evolution, for estimates before any call: WizardLM adds 10-20 words (~25 tokens) per
# round; a judge answer is a couple of tokens; an answer is about as long as the seed's answer.
ADDED_TOKENS_PER_ROUND = 25
JUDGE_COMPLETION_TOKENS = 3


def seed_rows(staged: Staged, spec: EvolveSpec, seed: int) -> pl.DataFrame:
    """The first `spec.sample` rows of the source's own selection ranking. When the source contributes at
    least that many rows to the mix, the seeds are among them; with `take: 0` the source is a seed pool only
    (WizardLM trains on evolved rows alone)."""
    available = staged.available
    count = available if spec.sample is None else min(spec.sample, available)
    chosen = select_keys(staged.keys["id"], count, seed, staged.name)
    rows = staged.rows_at(staged.keys["__pos"].gather(chosen["__index"]))
    return with_repeat(rows.with_columns(chosen["__repeat"]))


def evolved_pool(spec: SourceSpec, result: EvolveResult, recipe: Recipe, license: str) -> Pool:
    resolved = ResolvedSource(spec, None, "messages", "evolve", (), None, license)
    rows = (
        result.rows.with_columns(pl.lit(spec.name).alias("dataset"))
        .sort("id")
        .with_columns(pl.int_range(pl.len()).alias("__order"))
    )
    counts = {"read": rows.height}
    rows = apply_filters(rows, row_filters(spec.filters, recipe.mixture.drop_patterns), counts)
    return Pool(resolved, rows, counts)


def estimate(spec: EvolveSpec, seeds: pl.DataFrame) -> dict:
    """Upper bounds on calls, tokens and dollars (every evolution survives every round)."""
    n = seeds.height
    lengths = seeds.select(
        first_content(pl.col("messages"), "user").str.len_chars().mean().alias("instruction"),
        first_content(pl.col("messages"), "assistant").str.len_chars().mean().alias("answer"),
    ).row(0)
    instruction_chars, answer_chars = lengths
    instruction = (instruction_chars or 0) / 4
    # seeds without replies (format: prompts) give no answer length to go by: the teacher may use max_tokens
    answer = spec.teacher.max_tokens if answer_chars is None else answer_chars / 4
    operators = resolve_operators(spec.operators)
    frame = sum(len(op.template) for op in operators) / len(operators) / 4
    judged = "no_information_gain" in spec.eliminate
    answer_tokens = min(answer, spec.teacher.max_tokens)
    prompt = completion = judge_prompt = judge_completion = 0.0
    for round_no in range(1, spec.rounds + 1):
        before = instruction + ADDED_TOKENS_PER_ROUND * (round_no - 1)
        after = before + ADDED_TOKENS_PER_ROUND
        prompt += n * (frame + before + after)  # the rewrite, then the answer's prompt
        completion += n * (after + answer_tokens)
        if judged:
            judge_prompt += n * (100 + before + after)
            judge_completion += n * JUDGE_COMPLETION_TOKENS
    teacher_prices = prices_for(spec.teacher.model, spec.prices)
    judge_prices = prices_for(spec.judge.model, spec.prices)
    usd = teacher_prices.usd(prompt, completion) + judge_prices.usd(judge_prompt, judge_completion)
    rows = n * spec.rounds if spec.keep == "all_rounds" else n
    tokens = round(prompt + completion + judge_prompt + judge_completion)
    return {
        "block": spec.name,
        "seeds": n,
        "rounds": spec.rounds,
        "max_calls": n * spec.rounds * (3 if judged else 2),
        "est_tokens": tokens,
        "est_usd": round(usd, 4),
        "prices_known": teacher_prices.known and judge_prices.known,
        "max_rows": rows,
        "row_tokens": after + answer_tokens,
        "budget_usd": spec.budget_usd,
        "budget_tokens": spec.budget_tokens,
        "fits_budget": (spec.budget_usd is None or usd <= spec.budget_usd)
        and (spec.budget_tokens is None or tokens <= spec.budget_tokens),
        # told before the build, which would load every source and then stop at the block's first new call
        "unset_keys": sorted({key for key in (unset_key(spec.teacher), unset_key(spec.judge)) if key}),
    }


def as_estimate(info: dict, license: str) -> Estimate:
    return Estimate(available=info["max_rows"], est_tokens_per_row=info["row_tokens"], license=license)
