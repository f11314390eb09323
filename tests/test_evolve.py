"""Evol-Instruct blocks against a real chat-completions server on 127.0.0.1, driven by the real openai client."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from mixer.build import Options, build
from mixer.errors import MixerError, RecipeInvalid
from mixer.evolve import eliminate
from mixer.evolve.cost import BudgetReached
from mixer.evolve.operators import choose_operator, packaged_operators, resolve_operators
from mixer.evolve.reasoning import without_reasoning
from mixer.recipe import OPERATOR_PRESETS, OperatorChoice
from mixer.validate import validate_file

from conftest import REPO, run_mixer, write_recipe
from openai_server import FakeTeacher

SEEDS = [
    ("Write a haiku about rain.", ""),
    ("TRIGGER_REFUSE Explain how locks work.", ""),
    ("TRIGGER_COPY Summarise the text.", "Cats sleep a lot."),
    ("TRIGGER_PUNCT List three fruits.", ""),
    ("TRIGGER_EQUAL Name a colour.", ""),
    ("TRIGGER_BADCODE Write a function that adds one.", ""),
    ("TRIGGER_GOODCODE Write an adder in two languages.", ""),
    ("TRIGGER_MUMBLE Describe a cat.", ""),
]


@pytest.fixture
def server():
    teacher = FakeTeacher().start()
    yield teacher
    teacher.stop()


def write_seeds(folder: Path, seeds=SEEDS) -> Path:
    path = folder / "seeds.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for instruction, context in seeds:
            f.write(json.dumps({"instruction": instruction, "input": context, "output": "seed answer"}) + "\n")
    return path


def evolve_recipe(folder: Path, base_url: str, seeds=SEEDS, **block) -> Path:
    """A block over `seeds`; `eliminate=None` leaves the preset's default rules."""
    write_seeds(folder, seeds)
    settings = {
        "sample": "all",
        "operators": "wizardcoder",
        "rounds": 2,
        "eliminate": ["no_information_gain", "refusal", "punctuation_only", "template_copy", "code_syntax"],
        "concurrency": 4,
        **block,
    }
    if settings["eliminate"] is None:
        del settings["eliminate"]
    teacher = {"model": "gpt-4o-mini", "base_url": base_url, "retry_base_seconds": 0.01, "timeout": 5}
    teacher.update(settings.pop("teacher", {}))
    block_lines = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in settings.items())
    text = (
        "name: evo\nseed: 3\nsources:\n"
        "  seeds: {path: seeds.jsonl, format: alpaca, take: all}\n"
        "  evolved: {evolved: evol, take: all}\n"
        f"evolve:\n  evol:\n    from: seeds\n    teacher: {json.dumps(teacher)}\n{block_lines}"
        "output: {dir: out}\n"
    )
    path = folder / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def options(tmp_path: Path) -> Options:
    return Options(cache_dir=tmp_path / "cache", progress=False)


def read_rows(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "data")


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "data").iterdir())}


# --- operators ------------------------------------------------------------------------------------------


def test_presets_name_the_papers_operators():
    assert len(OPERATOR_PRESETS["wizardlm"]) == 6
    assert len(OPERATOR_PRESETS["wizardcoder"]) == 5
    assert set(packaged_operators()) == set(OPERATOR_PRESETS["wizardlm"]) | set(OPERATOR_PRESETS["wizardcoder"])


@pytest.mark.parametrize("name", sorted(set(OPERATOR_PRESETS["wizardlm"]) | set(OPERATOR_PRESETS["wizardcoder"])))
def test_every_operator_renders(name):
    op = packaged_operators()[name]
    instruction = 'Parse {"a": 1} and print the value of a.'
    text = op.render(instruction)
    assert instruction in text  # braces in the instruction survive rendering
    assert "{method}" not in text and "{instruction}" not in text
    assert text.rstrip().endswith(("#Rewritten Instruction#", "#New Instruction#"))
    assert op.family == ("wizardcoder" if name.startswith("code_") else "wizardlm")


def test_recipe_template_overrides_the_packaged_one():
    [op] = resolve_operators((OperatorChoice("deepening", 2.0, "Make it deeper: {instruction}"),))
    assert op.render("Why is the sky blue?") == "Make it deeper: Why is the sky blue?"
    assert op.weight == 2.0


def test_a_recipe_list_of_operators_expands_presets_and_lets_a_later_entry_override_one():
    from mixer.recipe import operator_choices

    choices = operator_choices(["wizardlm", {"name": "in_breadth", "weight": 2, "template": "New: {instruction}"}])
    assert [c.name for c in choices] == list(OPERATOR_PRESETS["wizardlm"])  # six, in_breadth in its place
    assert choices[-1] == OperatorChoice("in_breadth", 2.0, "New: {instruction}")
    mixed = operator_choices([{"name": "deepening", "weight": 3}, "code_add_constraints", "deepening"])
    assert mixed == (OperatorChoice("deepening"), OperatorChoice("code_add_constraints"))


def test_operator_choice_is_deterministic_and_weighted():
    ops = resolve_operators((OperatorChoice("deepening", 3.0), OperatorChoice("in_breadth", 1.0)))
    picks = [choose_operator(ops, 42, f"src/{i}", 1).name for i in range(4000)]
    assert picks == [choose_operator(ops, 42, f"src/{i}", 1).name for i in range(4000)]
    assert 0.72 < picks.count("deepening") / 4000 < 0.78
    other_round = [choose_operator(ops, 42, f"src/{i}", 2).name for i in range(4000)]
    assert other_round != picks


# --- elimination rules ------------------------------------------------------------------------------------


def test_punctuation_only():
    assert eliminate.punctuation_only("?! the of, and -- it.") == "only punctuation and stop words"
    assert eliminate.punctuation_only("   ") == "empty"
    assert eliminate.punctuation_only("Write a sonnet about the sea.") is None


def test_template_copy():
    assert "rewritten instruction" in eliminate.template_copy("#Rewritten Instruction#: do X")
    assert eliminate.template_copy("Rewrite the given prompt in French") == "copies the template phrase 'given prompt'"
    assert eliminate.template_copy("Summarise the article in 3 sentences.") is None


def test_refusal_needs_sorry_and_brevity():
    assert eliminate.refusal("I'm sorry, but I cannot help with that.").startswith("refusal")
    long_apology = "Sorry for the wait. " + "Here is a thorough explanation of the topic. " * 12
    assert eliminate.refusal(long_apology) is None  # 80+ words: a real answer that happens to apologise
    assert eliminate.refusal("I cannot help with that.") is None


def test_code_syntax():
    bad = eliminate.code_syntax("Here:\n```python\ndef f(:\n    pass\n```\n")
    assert bad.reason == "python block 1 does not parse: line 1: invalid syntax" and bad.checked == 1
    good = eliminate.code_syntax("```python\nprint(1)\n```\n```rust\nfn main() {}\n```\n```\nplain\n```\n")
    assert (good.reason, good.checked, good.skipped) == (None, 1, 2)
    assert eliminate.code_syntax("no code at all") == eliminate.CodeCheck(None, 0, 0)


@pytest.mark.parametrize(
    ("answer", "equal"),
    [
        ("Equal", True),
        ("Not Equal", False),
        ("not equal.", False),
        ("**Equal**", True),
        (" 'Equal' ", True),
        ("They are equal", None),
        ("Equal, mostly", None),
        ("", None),
    ],
)
def test_judge_answers_are_parsed_strictly(answer, equal):
    assert eliminate.parse_judgement(answer) is equal


# --- the block end to end ----------------------------------------------------------------------------------


def test_build_evolves_eliminates_and_accounts_exactly(tmp_path, server):
    recipe = evolve_recipe(tmp_path, server.base_url)
    out = tmp_path / "out"
    build(recipe, options(tmp_path), out=out)
    manifest = json.loads((out / "manifest.json").read_text())
    block = manifest["evolve"]["evol"]
    assert block["rounds"][0] == {
        "round": 1,
        "input": 8,
        "evolved": 8,
        "eliminated": {
            "code_syntax": 1,
            "no_information_gain": 2,
            "punctuation_only": 1,
            "refusal": 1,
            "template_copy": 1,
        },
        "surviving": 2,
        "tokens": block["rounds"][0]["tokens"],
        "usd": block["rounds"][0]["usd"],
    }
    assert (block["rounds"][1]["input"], block["rounds"][1]["surviving"]) == (2, 2)
    assert block["rows"] == 4 and block["rejected"] == 6 and block["judge_unparsable"] == 1
    assert block["code_blocks"] == {"python_checked": 3, "other_languages_skipped": 2}
    # 8 rewrites, 6 judged (copy and punctuation fail before the judge), 4 answered; then 2 x 3 in round 2
    assert server.count("ok") == 24 and block["usage"]["calls"] == 24 and block["usage"]["cached"] == 0
    assert block["usage"]["tokens"] == sum(r["tokens"] for r in block["rounds"]) > 0
    assert block["usage"]["usd"] == pytest.approx(
        (block["usage"]["prompt_tokens"] * 0.00015 + block["usage"]["completion_tokens"] * 0.0006) / 1000, abs=1e-6
    )

    rows = read_rows(out)
    evolved = rows.filter(pl.col("dataset") == "evolved").sort("id")
    assert evolved.height == 4 and rows.height == 12
    round2 = evolved.filter(pl.col("meta").struct.field("round") == 2).to_dicts()
    for row in round2:
        meta = row["meta"]
        assert row["id"] == f"{meta['parent_id']}/evol/2/{meta['operator']}"
        assert meta["parent_id"].startswith(meta["root_id"] + "/evol/1/")
        assert meta["teacher"] == "gpt-4o-mini" and meta["operator"] in OPERATOR_PRESETS["wizardcoder"]
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][1]["content"].startswith(("A careful answer", "In Python"))

    rejects = [json.loads(line) for line in (out / "rejects" / "evolve-evol.jsonl").read_text().splitlines()]
    by_rule = {r["rule"]: r for r in rejects}
    assert "TRIGGER_REFUSE" in by_rule["refusal"]["instruction"]
    assert "TRIGGER_COPY" in by_rule["template_copy"]["instruction"]
    assert "TRIGGER_BADCODE" in by_rule["code_syntax"]["instruction"]
    assert by_rule["code_syntax"]["detail"].startswith("python block 1 does not parse")
    assert sorted(r["detail"] for r in rejects if r["rule"] == "no_information_gain") == [
        "judge answer not understood: 'They look rather similar to me.'",
        "judge: Equal to its parent",
    ]
    card = (out / "README.md").read_text()
    assert "## Evol-Instruct block `evol`" in card and "| 1 | 8 | code_syntax 1, no_information_gain 2" in card

    # a rebuild is served from the cache: same bytes, not one new call
    first = shard_bytes(out)
    build(recipe, options(tmp_path), out=out, force=True)
    assert server.count("ok") == 24
    assert shard_bytes(out) == first
    assert json.loads((out / "manifest.json").read_text())["evolve"]["evol"]["usage"]["cached"] == 24


def test_rewrites_and_answers_cut_off_at_max_tokens_are_eliminated_by_default(tmp_path, server):
    """A completion the server stopped at max_tokens (finish_reason "length") was kept: half a question, or an
    answer that teaches the model to stop mid-sentence. Alpaca's generator drops them; so do the presets now."""
    long_instruction = "Explain " + " ".join(f"step {n} of the plan," for n in range(1, 13)) + " in order."
    seeds = [("Write a haiku about rain.", ""), (long_instruction, ""), ("TRIGGER_LONG Describe the water cycle.", "")]
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=seeds, rounds=1, eliminate=None, teacher={"max_tokens": 40})
    out = tmp_path / "out"
    build(recipe, options(tmp_path), out=out)
    block = json.loads((out / "manifest.json").read_text())["evolve"]["evol"]
    assert block["eliminate"] == [
        "no_information_gain",
        "refusal",
        "punctuation_only",
        "template_copy",
        "truncated",
        "code_syntax",
    ]
    assert (block["rounds"][0]["eliminated"], block["rows"]) == ({"truncated": 2}, 1)
    rejects = {
        r["instruction"].split()[0]: r["detail"]
        for r in map(json.loads, (out / "rejects" / "evolve-evol.jsonl").read_text().splitlines())
    }
    assert rejects == {
        "Explain": "instruction: cut off at max_tokens (40; finish_reason: length)",
        "TRIGGER_LONG": "response: cut off at max_tokens (40; finish_reason: length)",
    }
    # the cut rewrite is neither judged nor answered: 1 call for it, 3 (rewrite, judge, answer) for the others
    assert server.count("ok") == 7
    (kept,) = read_rows(out).filter(pl.col("dataset") == "evolved")["messages"].to_list()
    assert kept[0]["content"].startswith("Write a haiku about rain.")


def test_a_block_that_lost_much_of_its_work_to_a_setting_is_told_which(tmp_path, server):
    """A reasoning teacher given max_tokens too low has most answers cut off: the table said "truncated 2" and
    nothing of the setting, after the calls were paid for."""
    long_instruction = "Explain " + " ".join(f"step {n} of the plan," for n in range(1, 13)) + " in order."
    seeds = [("Write a haiku about rain.", ""), (long_instruction, ""), ("TRIGGER_LONG Describe the water cycle.", "")]
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=seeds, rounds=1, eliminate=None, teacher={"max_tokens": 40})
    env = {"MIXER_CACHE_DIR": str(tmp_path / "cache")}
    result = run_mixer("build", str(recipe), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: evolve.")]
    assert notes == [
        "note: evolve.evol: 2 of 3 evolutions cut off at the teacher's max_tokens: raise `teacher.max_tokens` "
        "(a reasoning teacher spends it thinking before it answers)"
    ]
    ordinary = tmp_path / "ordinary"
    ordinary.mkdir()
    result = run_mixer("build", str(evolve_recipe(ordinary, server.base_url, rounds=1)), cwd=ordinary, env=env)
    assert result.returncode == 0, result.stderr
    assert "│ 8 seeds │ 6 rejected " in result.stdout and "note: evolve." not in result.stdout  # the rules' work

    mumbled = tmp_path / "mumbled"
    mumbled.mkdir()
    recipe = evolve_recipe(mumbled, server.base_url, seeds=[("TRIGGER_MUMBLE Describe a cat.", "")], rounds=1)
    result = run_mixer("build", str(recipe), cwd=mumbled, env=env)
    assert [line for line in result.stdout.splitlines() if line.startswith("note: evolve.")] == [
        "note: evolve.evol: 1 of 1 judge verdicts were neither 'Equal' nor 'Not Equal' (each eliminated): a "
        "reasoning judge needs `judge.max_tokens` well above its default of 8; the rejects file has each answer"
    ]


@pytest.mark.parametrize("reasoning", ["drop", "keep"])
def test_a_reasoning_teachers_think_blocks_are_taken_out_of_rewrites_verdicts_and_answers(tmp_path, server, reasoning):
    """A reasoning model served without a reasoning parser writes <think>...</think> before its text: it was
    kept as the evolved instruction, made the judge's verdict unreadable (every row eliminated), and went into
    the answers. Answers keep it only when the teacher says `reasoning: keep`."""
    seeds = [("TRIGGER_THINK Name three rivers.", "")]
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=seeds, rounds=1, eliminate=None)
    out = tmp_path / "out"
    build(recipe, options(tmp_path), out=out)  # the judge's 8 tokens end inside its thinking: said so
    (reject,) = map(json.loads, (out / "rejects" / "evolve-evol.jsonl").read_text().splitlines())
    assert reject["detail"] == (
        "judge answer not understood: still thinking at its max_tokens (8); a reasoning judge needs "
        "judge.max_tokens raised"
    )

    judge, teacher = {"max_tokens": 200}, {"reasoning": reasoning}
    recipe = evolve_recipe(
        tmp_path, server.base_url, seeds=seeds, rounds=1, eliminate=None, teacher=teacher, judge=judge
    )
    build(recipe, options(tmp_path), out=out, force=True)
    block = json.loads((out / "manifest.json").read_text())["evolve"]["evol"]
    assert (block["rows"], block["judge_unparsable"]) == (1, 0)
    assert block["reasoning_removed"] == (3 if reasoning == "drop" else 2)
    ((prompt, answer),) = read_rows(out).filter(pl.col("dataset") == "evolved")["messages"].to_list()
    assert re.fullmatch(
        r"TRIGGER_THINK Name three rivers\. Justify each choice in \d numbered steps\.", prompt["content"]
    )
    assert answer["content"].startswith("<think>" if reasoning == "keep" else "A careful answer")
    card = (out / "README.md").read_text()
    where = "rewrites and verdicts; answers keep it" if reasoning == "keep" else "rewrites, verdicts and answers"
    assert f"block, taken out of {where}." in card


def test_extra_body_reaches_the_server_and_keys_the_cache(tmp_path, server):
    """vLLM turns a Qwen3 teacher's thinking off with `chat_template_kwargs`, a field OpenAI's API does not have:
    the recipe passes it through, and calls made with and without it are cached apart."""
    seeds = [("TRIGGER_THINK Name three rivers.", "")]
    judge = {"max_tokens": 200}
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=seeds, rounds=1, judge=judge)
    build(recipe, options(tmp_path), out=tmp_path / "out")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["evolve"]["evol"]["reasoning_removed"] == 3
    quiet = {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=seeds, rounds=1, judge=judge, teacher=quiet)
    build(recipe, options(tmp_path), out=tmp_path / "out", force=True)
    block = json.loads((tmp_path / "out" / "manifest.json").read_text())["evolve"]["evol"]
    assert (block["reasoning_removed"], block["usage"]["cached"], block["rows"]) == (0, 0, 1)

    secret = {"extra_body": {"metadata": {"token": "${SECRET_TOKEN}"}}}  # would be filled into the manifest
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=seeds, rounds=1, teacher=secret)
    ((message, hint),) = [(d.message, d.hint) for d in validate_file(recipe)]
    assert message == "extra_body takes no ${VAR}: its values are written into the manifest as the recipe's"
    assert hint == "write the value itself; a key belongs in the variable named by api_key_env"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>\nhmm\n</think>\n\nAnswer.", ("Answer.", True)),
        ("  <think>hmm</think>Answer.", ("Answer.", True)),
        ("hmm, the template opened it\n</think>\nAnswer.", ("Answer.", True)),  # DeepSeek-R1's template
        ("<think>\nstill thinking when max_tokens", ("", True)),
        ("Use <think> and </think> tags like this.", ("Use <think> and </think> tags like this.", False)),
        ("Plain answer.", ("Plain answer.", False)),
    ],
)
def test_reasoning_is_the_block_before_the_answer_and_only_that(text, expected):
    assert without_reasoning(text) == expected


def test_keep_last_round_and_sample(tmp_path, server):
    recipe = evolve_recipe(tmp_path, server.base_url, sample=3, rounds=3, keep="last_round", eliminate=[])
    out = tmp_path / "out"
    build(recipe, options(tmp_path), out=out)
    block = json.loads((out / "manifest.json").read_text())["evolve"]["evol"]
    assert block["seeds"] == 3 and [r["surviving"] for r in block["rounds"]] == [3, 3, 3]
    evolved = read_rows(out).filter(pl.col("dataset") == "evolved")
    assert evolved.height == 3 and set(evolved["meta"].struct.field("round")) == {3}
    assert server.count("ok", kind="judge") == 0  # the judge runs only for no_information_gain


def test_retries_honour_retry_after_and_survive_garbage(tmp_path, server):
    write_seeds(tmp_path, SEEDS[:1])
    recipe = evolve_recipe(tmp_path, server.base_url, rounds=1, eliminate=[], teacher={"timeout": 0.5})
    write_seeds(tmp_path, SEEDS[:1])
    server.inject(("429", 1), ("500",), ("garbage",), ("nochoices",), ("slow", 2))
    out = tmp_path / "out"
    build(recipe, options(tmp_path), out=out)
    log = server.log
    assert [e.outcome for e in log[:6]] == ["429", "500", "garbage", "nochoices", "slow", "ok"]
    assert log[1].at - log[0].at >= 0.95  # waited for Retry-After: 1
    block = json.loads((out / "manifest.json").read_text())["evolve"]["evol"]
    assert block["usage"]["retries"] == 5 and block["usage"]["calls"] == 2 and block["rows"] == 1


def test_without_a_terminal_a_block_logs_its_progress_and_the_failure_it_retries(tmp_path, server, capsys):
    """Under nohup or Slurm stderr is a file and no live line is drawn: a block retrying a teacher that was down
    or rate-limiting printed nothing until it gave up or ended, hours later for a real block."""
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=SEEDS[:1], rounds=2, eliminate=[])
    server.inject(("500",), ("500",))
    build(recipe, options(tmp_path), out=tmp_path / "out")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("evolve ")]
    shown = [re.sub(r"[\d.]+ calls/s · [\d,]+ tokens · \$[\d.]+", "…", line) for line in lines]
    assert shown == [  # the first failure at once (the second within 30 s is not), then each round's end
        "evolve evol round 1/2 · 0 eliminated · … · 1 retry (retrying: HTTP 500: internal error) · 0/1 rows",
        "evolve evol round 1/2 · 0 eliminated · … · 2 retries · 1/1 rows",
        "evolve evol round 2/2 · 0 eliminated · … · 2 retries · 1/1 rows",
    ]


def test_a_blocks_log_line_comes_every_30_seconds_and_the_live_line_cuts_long_failures(tmp_path):
    from io import StringIO

    from mixer.evolve.cost import Meter
    from mixer.evolve.engine import RoundStats
    from mixer.evolve.progress import evolve_reporter
    from mixer.progress import make_progress
    from mixer.validate import load_recipe

    block = load_recipe(evolve_recipe(tmp_path, "http://127.0.0.1:9/v1", rounds=1, budget={"usd": 5})).block("evol")
    now = [0.0]
    log = StringIO()
    report = evolve_reporter(make_progress(False), block, log=log, clock=lambda: now[0])
    stats, meter = RoundStats(1, input=100), Meter(calls=10)
    for second in (10, 29.9, 30, 45, 60.5):
        now[0] = second
        report(stats, meter, int(second))
    assert [line.rsplit(" · ", 1)[1] for line in log.getvalue().splitlines()] == ["30/100 rows", "60/100 rows"]

    live = make_progress(False)
    live.disable = False  # as in a terminal, without drawing one
    stats.retrying = "HTTP 503: " + "<html>" * 30
    now[0] = 0.0
    report = evolve_reporter(live, block, clock=lambda: now[0])
    now[0] = 5.0
    report(stats, meter, 3)
    [task] = live.tasks
    assert task.description == (
        "evolve evol round 1/1 · 0 eliminated · 2.0 calls/s · 0 tokens · $0.0000 / $5 (retrying: HTTP 503: "
        + "<html>" * 8
        + "<…)"
    )
    assert task.completed == 3
    stats.retrying, meter.cached = None, 1_200  # resumed: the calls a stopped run made are read back
    report(stats, meter, 40)
    assert task.description == (
        "evolve evol round 1/1 · 0 eliminated · 2.0 calls/s · 1,200 from the cache · 0 tokens · $0.0000 / $5"
    )


@pytest.mark.parametrize(
    ("finish_reason", "retries", "detail"),
    [
        ("length", 0, "instruction: cut off at max_tokens (2048; finish_reason: length)"),
        ("stop", 0, "the teacher returned an empty instruction"),
        (None, 1, None),  # not finished: a fault, asked again (and answered)
    ],
)
def test_a_message_without_content_that_finished_is_an_empty_answer_not_a_fault(
    tmp_path, server, finish_reason, retries, detail
):
    """A reasoning model behind vLLM's reasoning parser that spends max_tokens thinking sends content null:
    it was retried as a broken response, seven times, and then stopped the whole block."""
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=SEEDS[:1], rounds=1, eliminate=None)
    server.inject(("nocontent", finish_reason))
    out = tmp_path / "out"
    build(recipe, options(tmp_path), out=out)
    block = json.loads((out / "manifest.json").read_text())["evolve"]["evol"]
    assert (block["usage"]["retries"], block["rows"]) == (retries, 0 if detail else 1)
    if detail:
        (reject,) = map(json.loads, (out / "rejects" / "evolve-evol.jsonl").read_text().splitlines())
        assert reject["detail"] == detail and server.count("ok") == 0


def test_an_answer_is_kept_without_the_blank_lines_around_it(tmp_path, server):
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=[("TRIGGER_SPACED Name a river.", "")], rounds=1)
    build(recipe, options(tmp_path), out=tmp_path / "out")
    ((_, answer),) = read_rows(tmp_path / "out").filter(pl.col("dataset") == "evolved")["messages"].to_list()
    assert re.fullmatch(r"A spaced answer \([0-9a-f]{8}\)\.", answer["content"])


def test_an_empty_answer_is_never_a_row_even_with_no_rule_to_eliminate_it(tmp_path, server):
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=SEEDS[:1], rounds=1, eliminate=[])
    server.inject(("slow", 0), ("nocontent", "stop"))  # the rewrite as usual, then an answer of no text
    out = tmp_path / "out"
    build(recipe, options(tmp_path), out=out)
    block = json.loads((out / "manifest.json").read_text())["evolve"]["evol"]
    assert (block["rows"], block["rounds"][0]["eliminated"]) == (0, {"empty": 1})


def test_a_model_that_takes_max_completion_tokens_is_told_how_and_then_keeps_its_cached_calls(tmp_path, server):
    """OpenAI's reasoning models refuse `max_tokens` (and a temperature other than 1) with HTTP 400: the refusal
    named the model, URL and key as what to check, none of which is wrong. The hint names the recipe's setting."""
    server.reasoning_api = True
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=SEEDS[:1], rounds=1)
    with pytest.raises(MixerError) as refused:
        build(recipe, options(tmp_path), out=tmp_path / "out")
    assert "refused the request: HTTP 400: Unsupported parameter: 'max_tokens'" in refused.value.message
    assert refused.value.hint == (
        "this model takes max_completion_tokens: set `max_tokens_param: max_completion_tokens` on the teacher"
    )
    recipe = evolve_recipe(
        tmp_path, server.base_url, seeds=SEEDS[:1], rounds=1, teacher={"max_tokens_param": "max_completion_tokens"}
    )
    with pytest.raises(MixerError) as refused:  # the rewrite passes; the judge asks for temperature 0
        build(recipe, options(tmp_path), out=tmp_path / "out")
    assert (
        refused.value.hint
        == "this model takes its default temperature only: set `temperature: 1` (the judge's default is 0)"
    )
    recipe = evolve_recipe(
        tmp_path,
        server.base_url,
        seeds=SEEDS[:1],
        rounds=1,
        teacher={"max_tokens_param": "max_completion_tokens"},
        judge={"temperature": 1},
    )
    build(recipe, options(tmp_path), out=tmp_path / "out")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["evolve"]["evol"]["rows"] == 1
    calls = server.count("ok")

    server.reasoning_api = False  # the same calls, asked with max_tokens: served from the cache
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=SEEDS[:1], rounds=1, judge={"temperature": 1})
    build(recipe, options(tmp_path), out=tmp_path / "out", force=True)
    assert server.count("ok") == calls


def test_a_seed_longer_than_the_teachers_context_is_eliminated_not_the_end_of_the_block(tmp_path, server):
    """vLLM refuses a prompt longer than the model's context with HTTP 400: one long seed stopped the whole
    block, with a hint to check the model name and key. The row is eliminated (`too_long`) with the server's
    words; the refusal is not cached, so a server restarted with a longer context is asked again."""
    server.context_limit = 600
    long_seed = "Summarise this: " + " ".join(f"word{n}" for n in range(700))
    seeds = [("Write a haiku about rain.", ""), (long_seed, "")]
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=seeds, rounds=1, teacher={"max_tokens": 100})
    out = tmp_path / "out"
    build(recipe, options(tmp_path), out=out)
    block = json.loads((out / "manifest.json").read_text())["evolve"]["evol"]
    assert (block["rows"], block["rounds"][0]["eliminated"]) == (1, {"too_long": 1})
    (reject,) = map(json.loads, (out / "rejects" / "evolve-evol.jsonl").read_text().splitlines())
    assert reject["detail"].startswith(
        "rewrite prompt refused: HTTP 400: This model's maximum context length is 600 tokens. However, you requested"
    )
    assert (server.count("400"), server.count("ok")) == (1, 3)

    build(recipe, options(tmp_path), out=out, force=True)
    assert (server.count("400"), server.count("ok")) == (2, 3)  # the refusal asked again, the rest from the cache


def test_an_account_out_of_quota_stops_at_once_with_what_to_do(tmp_path, server):
    """OpenAI answers an account with no credit left with HTTP 429, as it does a rate limit: it was retried
    seven times (about a minute of back-off) and then reported as a server that might be down."""
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=SEEDS[:1], rounds=1, concurrency=1)
    server.inject(("quota",))
    with pytest.raises(MixerError) as stopped:
        build(recipe, options(tmp_path), out=tmp_path / "out")
    assert stopped.value.message.endswith(
        "refused the request: HTTP 429: You exceeded your current quota, please check your plan and billing details."
    )
    assert stopped.value.hint == (
        "the account of the key in $OPENAI_API_KEY has no quota left: add credit, or use another key"
    )
    assert [e.outcome for e in server.log] == ["quota"]  # not asked again


def test_rate_limits_are_waited_out_while_the_teacher_answers_and_stop_the_block_once_it_does_not(
    tmp_path, server, monkeypatch
):
    """Under a tokens-per-minute limit with many rows in flight, one row can meet max_retries + 1 rate limits in
    a row: that stopped a block that was making progress, with "is the server up?"."""
    from mixer.evolve import client

    recipe = evolve_recipe(
        tmp_path, server.base_url, seeds=SEEDS[:1], rounds=1, eliminate=[], teacher={"max_retries": 1}
    )
    server.inject(("429", 0), ("429", 0), ("429", 0))
    out = tmp_path / "out"
    build(recipe, options(tmp_path), out=out)
    assert [e.outcome for e in server.log] == ["429", "429", "429", "ok", "ok"]  # rewrite, then answer
    block = json.loads((out / "manifest.json").read_text())["evolve"]["evol"]
    assert (block["usage"]["retries"], block["rows"]) == (3, 1)

    monkeypatch.setattr(client, "RATE_LIMIT_PATIENCE_SECONDS", 0.0)  # no call answered for "too long"
    server.inject(("429", 0), ("429", 0), ("429", 0))
    with pytest.raises(MixerError) as stopped:
        build(recipe, options(tmp_path / "again"), out=tmp_path / "out2")
    assert stopped.value.message.endswith("gave up after 2 attempt(s); last: HTTP 429: Rate limit reached")
    assert stopped.value.hint.startswith("the teacher kept answering with rate limits (HTTP 429): lower the block's")


def test_a_request_above_the_accounts_tokens_per_minute_is_the_rows_failure_not_the_blocks(tmp_path, server):
    """OpenAI refuses one request larger than the account's tokens-per-minute limit with a 429 that no wait
    passes: it was retried seven times and then stopped the block."""
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=SEEDS[:2], rounds=1, eliminate=[], concurrency=1)
    server.inject(("toolarge",))
    out = tmp_path / "out"
    build(recipe, options(tmp_path), out=out)
    block = json.loads((out / "manifest.json").read_text())["evolve"]["evol"]
    assert (block["usage"]["retries"], block["rows"], block["rounds"][0]["eliminated"]) == (0, 1, {"too_long": 1})
    [reject] = pl.read_ndjson(out / "rejects" / "evolve-evol.jsonl").to_dicts()
    assert reject["detail"].startswith("rewrite prompt refused: HTTP 429: Request too large for gpt-4o")


def test_a_teacher_that_times_out_is_told_of_server_slots_and_concurrency(tmp_path, server):
    """A llama.cpp server with one slot queues the block's 32 requests, and the last ones time out: the block
    stopped with "is the server up?" while the server was up and busy."""
    recipe = evolve_recipe(
        tmp_path, server.base_url, seeds=SEEDS[:1], rounds=1, teacher={"max_retries": 1, "timeout": 0.3}
    )
    server.inject(("slow", 1), ("slow", 1))
    with pytest.raises(MixerError) as stopped:
        build(recipe, options(tmp_path), out=tmp_path / "out")
    assert stopped.value.message.endswith("gave up after 2 attempt(s); last: timed out")
    assert stopped.value.hint.startswith(
        "no answer within teacher.timeout (0.3 s): a server running fewer requests at once than the block's "
        "`concurrency` (llama.cpp's --parallel, vLLM's --max-num-seqs) queues the rest"
    )


@pytest.mark.parametrize(
    ("status", "client_message", "body", "said"),
    [
        # openai 1.55's message (the body's Python repr) and a newer client's, for the same JSON error
        (
            500,
            "Error code: 500 - {'error': {'message': 'internal error'}}",
            {"message": "internal error"},
            "internal error",
        ),
        (500, "internal error", {"message": "internal error", "type": "server_error"}, "internal error"),
        (404, "Error code: 404 - {'detail': 'Not Found'}", {"detail": "Not Found"}, '{"detail": "Not Found"}'),
        (404, "", {"detail": "Not Found"}, '{"detail": "Not Found"}'),
        (502, "Error code: 502", "Bad Gateway\n", "Bad Gateway"),
        (503, "Error code: 503", None, "no message"),
    ],
)
def test_a_servers_error_is_said_in_its_own_words_whatever_the_client_version(status, client_message, body, said):
    """What a retry line or a refusal shows comes from the error's body, not the client's message, whose form
    changed between openai releases (1.55, which the version floor admits, printed the body's Python repr)."""
    from types import SimpleNamespace

    import openai

    from mixer.evolve.client import _describe

    # what the error reads of a response (openai 3 sends with httpx2, earlier releases with httpx)
    response = SimpleNamespace(status_code=status, request=None, headers={})
    error = openai.APIStatusError(client_message, response=response, body=body)
    assert _describe(error) == f"HTTP {status}: {said}"


def test_a_base_url_without_v1_and_a_refused_key_are_told_what_to_change(tmp_path, server):
    """vLLM, llama.cpp and Ollama answer /chat/completions with 404 when base_url lacks /v1, and a key other
    than `--api-key`'s with 401: both were told to "check the model name, base_url and the key"."""
    recipe = evolve_recipe(tmp_path, server.base_url.removesuffix("/v1"), seeds=SEEDS[:1], rounds=1, concurrency=1)
    with pytest.raises(MixerError) as stopped:
        build(recipe, options(tmp_path), out=tmp_path / "out")
    assert stopped.value.message.endswith('refused the request: HTTP 404: {"detail": "Not Found"}')
    assert stopped.value.hint == f"vLLM, llama.cpp and Ollama serve the API under /v1: base_url: {server.base_url}"
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=SEEDS[:1], rounds=1, concurrency=1)
    server.inject(("401",))
    with pytest.raises(MixerError) as stopped:
        build(recipe, options(tmp_path), out=tmp_path / "out")
    assert stopped.value.message.endswith("refused the request: HTTP 401: Unauthorized")
    assert stopped.value.hint == (
        "the server refused the key in $OPENAI_API_KEY: check it (vLLM takes the one given to --api-key)"
    )
    assert [e.outcome for e in server.log] == ["401"]  # not asked again


def test_openais_api_needs_a_key_even_when_named_as_base_url(monkeypatch):
    """The bundled recipes write `base_url: "${OPENAI_BASE_URL:-https://api.openai.com/v1}"`: with no key set,
    a base_url counted as a local server (which takes any key) and the first call to OpenAI came back 401."""
    from mixer.evolve.client import api_key
    from mixer.recipe import Endpoint

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for base_url in (None, "https://api.openai.com/v1", "https://API.openai.com/v1/"):
        with pytest.raises(MixerError) as refused:
            api_key(Endpoint("gpt-4o-mini", base_url))
        assert refused.value.message == "no API key: $OPENAI_API_KEY is not set for model 'gpt-4o-mini'"
    assert api_key(Endpoint("qwen", "http://127.0.0.1:8000/v1")) == "EMPTY"  # vLLM, llama.cpp: any key
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert api_key(Endpoint("gpt-4o-mini", "https://api.openai.com/v1")) == "sk-test"


def test_plan_says_when_a_block_for_openais_api_has_no_key(tmp_path, monkeypatch):
    """A build loads every source before the block's first call, which then stops for the key: `mixer plan`,
    run before spending, says so. A local server needs no key and is not mentioned. No call is made."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    env = {"MIXER_CACHE_DIR": str(tmp_path / "c")}
    recipe = evolve_recipe(tmp_path, "https://api.openai.com/v1", seeds=SEEDS[:2], rounds=1)
    shown = run_mixer("plan", str(recipe), cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    note = (
        "note: evolve.evol calls OpenAI's API and $OPENAI_API_KEY is not set: a build stops at the block's first "
        "call not in the cache (export OPENAI_API_KEY=...)"
    )
    assert note in shown.stdout.splitlines()
    as_json = run_mixer("plan", str(recipe), "--json", cwd=tmp_path, env=env)
    assert json.loads(as_json.stdout)["evolve"][0]["unset_keys"] == ["OPENAI_API_KEY"]
    keyed = run_mixer("plan", str(recipe), "--json", cwd=tmp_path, env={**env, "OPENAI_API_KEY": "sk-test"})
    assert json.loads(keyed.stdout)["evolve"][0]["unset_keys"] == []
    local = evolve_recipe(tmp_path, "http://127.0.0.1:9/v1", seeds=SEEDS[:2], rounds=1)
    assert "note: evolve" not in run_mixer("plan", str(local), cwd=tmp_path, env=env).stdout


def test_a_missing_key_is_told_as_it_is_not_as_a_refused_request(tmp_path, server, monkeypatch):
    """The client is made at the first call, inside the retry loop, which reported the missing key as "teacher
    ... refused the request: MixerError: no API key ..." with a second hint to check base_url and the key."""
    import mixer.evolve.client as client

    def no_key(endpoint):
        raise MixerError("no API key: $OPENAI_API_KEY is not set for model 'gpt-4o-mini'", "export OPENAI_API_KEY=...")

    monkeypatch.setattr(client, "api_key", no_key)  # as for OpenAI's API, without asking it
    recipe = evolve_recipe(tmp_path, server.base_url, seeds=SEEDS[:1], rounds=1, concurrency=1)
    with pytest.raises(MixerError) as stopped:
        build(recipe, options(tmp_path), out=tmp_path / "out")
    assert (stopped.value.message, stopped.value.hint) == (
        "no API key: $OPENAI_API_KEY is not set for model 'gpt-4o-mini'",
        "export OPENAI_API_KEY=...",
    )
    assert server.log == []


def test_dead_endpoint_fails_clearly_and_writes_nothing(tmp_path):
    recipe = evolve_recipe(tmp_path, "http://127.0.0.1:9/v1", teacher={"max_retries": 2, "timeout": 1})
    with pytest.raises(MixerError) as info:
        build(recipe, options(tmp_path), out=tmp_path / "out")
    assert "gave up after 3 attempt(s); last: connection failed" in str(info.value)
    assert "run again to resume" in info.value.hint
    assert not (tmp_path / "out").exists()


def test_credentials_in_a_teacher_url_are_never_written_or_printed(tmp_path, server, monkeypatch):
    """`${VAR}`s are filled as the recipe is read, and the manifest kept the resolved recipe: a proxy password
    exported for `base_url` was written next to the data, in the evolve section too, and printed in errors."""
    secret_url = server.base_url.replace("http://", "http://mixer:s3cret@")
    monkeypatch.setenv("MIXER_TEST_TEACHER_URL", secret_url)
    recipe = evolve_recipe(tmp_path, "${MIXER_TEST_TEACHER_URL}", rounds=1)
    build(recipe, options(tmp_path), out=tmp_path / "out")
    assert server.count("ok") > 0
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".html")]
    assert written and not [p.name for p in written if "s3cret" in p.read_text(encoding="utf-8")]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    hidden = server.base_url.replace("http://", "http://***@")
    assert manifest["resolved_recipe"]["evolve"]["evol"]["teacher"]["base_url"] == hidden
    assert manifest["evolve"]["evol"]["teacher"]["base_url"] == hidden
    literal = tmp_path / "literal.yaml"  # the password written into the recipe itself
    literal.write_text(recipe.read_text().replace("${MIXER_TEST_TEACHER_URL}", secret_url))
    shown = run_mixer("diff", str(tmp_path / "out"), str(literal), "--format", "json")
    assert shown.returncode == 0 and "s3cret" not in shown.stdout + shown.stderr
    monkeypatch.setenv("MIXER_TEST_TEACHER_URL", "http://mixer:s3cret@127.0.0.1:9/v1")  # a dead endpoint
    recipe.write_text(recipe.read_text().replace('"timeout": 5', '"timeout": 1, "max_retries": 0'))
    with pytest.raises(MixerError) as info:  # a cache of its own: the first build's calls would answer
        build(recipe, Options(cache_dir=tmp_path / "cache2", progress=False), out=tmp_path / "out2")
    assert "at http://***@127.0.0.1:9/v1 gave up" in str(info.value) and "s3cret" not in str(info.value)


def test_urls_lose_their_user_part_and_secret_looking_query_values():
    from mixer.redact import redact_url, redact_urls_in, redacted

    assert redact_url("https://tok@host/v1") == "https://***@host/v1"
    assert (
        redact_url("https://h/v1?api-version=2024-02-01&api_key=abc")
        == "https://h/v1?api-version=2024-02-01&api_key=***"
    )
    assert (
        redact_url("data/a.jsonl") == "data/a.jsonl" and redact_url("http://127.0.0.1:8/v1") == "http://127.0.0.1:8/v1"
    )
    assert redacted({"a": ["http://u:p@h/x", 3]}) == {"a": ["http://***@h/x", 3]}
    assert redact_urls_in("GET http://u:p@h/x failed") == "GET http://***@h/x failed"


def test_budget_stop_then_resume_without_repeated_calls(tmp_path, server):
    recipe = evolve_recipe(tmp_path, server.base_url, concurrency=1, budget={"tokens": 400})
    with pytest.raises(BudgetReached) as info:
        build(recipe, options(tmp_path), out=tmp_path / "out")
    assert "budget reached" in str(info.value) and "tokens" in str(info.value)
    assert not (tmp_path / "out").exists()
    made = server.count("ok")
    assert 0 < made < 24

    recipe.write_text(recipe.read_text().replace('{"tokens": 400}', '{"tokens": 100000}'))
    build(recipe, options(tmp_path), out=tmp_path / "out")
    assert server.count("ok") == 24
    assert max(server.ok_keys().values()) == 1  # nothing completed before the stop was asked again


def test_a_dollar_budget_is_written_in_digits_however_small_or_large(tmp_path, server):
    """`:g` wrote a budget of $0.0000001 as `$1e-07` in the stop message and the progress line."""
    from mixer.evolve.cost import dollars

    recipe = evolve_recipe(tmp_path, server.base_url, concurrency=1, budget={"usd": 0.5})
    recipe.write_text(recipe.read_text().replace('{"usd": 0.5}', '{"usd": 0.0000001}'))  # as a user writes it
    with pytest.raises(BudgetReached) as info:
        build(recipe, options(tmp_path), out=tmp_path / "out")
    assert re.fullmatch(r"evolve\.evol: budget reached \(\$0\.\d{4} of \$0\.0000001\); .*", info.value.message)
    assert [dollars(usd) for usd in (5, 0.25, 2.50, 1.5e6, 1e-12)] == [
        "5",
        "0.25",
        "2.5",
        "1,500,000",
        "0." + "0" * 11 + "1",
    ]


@pytest.mark.parametrize("usage", [None, {}, {"prompt_tokens": None, "completion_tokens": None}])
def test_a_budget_stops_at_a_teacher_that_reports_no_token_counts(tmp_path, server, usage):
    """A server that leaves `usage` out (or sends nulls) was counted 0 tokens and $0 a call, so a block's budget
    never stopped it. The block stops at its next call, with the answer that showed it cached; without a
    budget, or on a free price, it runs as before."""
    recipe = evolve_recipe(tmp_path, server.base_url, concurrency=1, rounds=1, budget={"tokens": 100000})
    server.inject(("usage", usage))
    with pytest.raises(MixerError) as info:
        build(recipe, options(tmp_path), out=tmp_path / "out")
    assert info.value.message == (
        f"evolve.evol: teacher 'gpt-4o-mini' at {server.base_url} answers without token counts (no `usage` in its "
        "replies), so the block's budget cannot be kept"
    )
    assert info.value.hint.startswith("the answers so far are cached: drop `budget` from evolve.evol to run")
    assert server.count("ok") == 1  # stopped at the next call

    free = {"budget": {"usd": 1}, "prices": {"prompt_per_1k": 0, "completion_per_1k": 0}}
    for block in ({}, free):
        recipe = evolve_recipe(tmp_path, server.base_url, concurrency=1, rounds=1, **block)
        server.inject(*[("usage", usage)] * 3)
        build(recipe, options(tmp_path), out=tmp_path / "out", force=True)
    assert max(server.ok_keys().values()) == 1  # the first answer was cached: asked once


def test_a_dollar_budget_for_a_model_without_a_price_is_refused_before_any_call(tmp_path):
    """Calls to a model the price table does not list cost $0 in the accounting, so `budget: {usd: ...}` would
    never stop a paid run on it: the recipe must price it (0 for a free server) or budget in tokens."""
    recipe = evolve_recipe(tmp_path, "http://127.0.0.1:9/v1", teacher={"model": "my-model"}, budget={"usd": 5})
    [problem] = validate_file(recipe)
    assert (problem.line, problem.message) == (15, "budget.usd cannot be kept: no price is known for model 'my-model'")
    assert problem.hint.startswith("give prices: {prompt_per_1k: ..., completion_per_1k: ...} (0 and 0 for a server")
    judged = evolve_recipe(tmp_path, "http://127.0.0.1:9/v1", judge={"model": "judge-x"}, budget={"usd": 5})
    assert [p.message for p in validate_file(judged)] == [
        "budget.usd cannot be kept: no price is known for model 'judge-x'"
    ]
    for fine in (
        {"budget": {"usd": 5}, "prices": {"prompt_per_1k": 0, "completion_per_1k": 0}},
        {"budget": {"tokens": 1000}},
        {"budget": {"usd": 5}, "teacher": {"model": "gpt-4o-mini-2024-07-18"}},
    ):
        assert validate_file(evolve_recipe(tmp_path, "http://127.0.0.1:9/v1", **fine)) == []


def test_a_model_is_priced_as_listed_or_as_a_dated_snapshot_of_a_listed_one_only():
    """Prices went to the longest listed name a model starts with: gpt-4.5-preview cost what gpt-4 does ($30
    per million prompt tokens against $75), o3-pro what o3 does, gpt-5.4 what gpt-5 does, so a USD budget let
    them spend several times over. They have no price now, and a USD budget asks for `prices:`."""
    from mixer.evolve.cost import prices_for

    def per_million(model: str) -> tuple[float, float] | None:
        prices = prices_for(model, None)
        return (
            (round(prices.prompt_per_1k * 1000, 4), round(prices.completion_per_1k * 1000, 4)) if prices.known else None
        )

    assert {m: per_million(m) for m in ("gpt-4o-mini-2024-07-18", "gpt-4-0613", "o3-2025-04-16", "gpt-5-mini")} == {
        "gpt-4o-mini-2024-07-18": (0.15, 0.6),
        "gpt-4-0613": (30.0, 60.0),
        "o3-2025-04-16": (2.0, 8.0),
        "gpt-5-mini": (0.25, 2.0),
    }
    assert [per_million(m) for m in ("gpt-4.5-preview", "o3-pro", "gpt-5.4", "gpt-4o-audio-preview")] == [None] * 4
    assert prices_for("o3-pro", {"prompt_per_1k": 0.02, "completion_per_1k": 0.08}).known


def test_plan_estimates_cost_without_calling(tmp_path, server):
    recipe = evolve_recipe(tmp_path, server.base_url, budget={"usd": 1})
    result = run_mixer("plan", str(recipe), "--json", cwd=tmp_path, env={"MIXER_CACHE_DIR": str(tmp_path / "c")})
    assert result.returncode == 0, result.stderr
    [estimate] = json.loads(result.stdout)["evolve"]
    assert (estimate["seeds"], estimate["max_calls"], estimate["max_rows"]) == (8, 48, 16)
    assert estimate["est_usd"] > 0 and estimate["fits_budget"] is True
    assert server.log == []
    text = run_mixer("plan", str(recipe), cwd=tmp_path, env={"MIXER_CACHE_DIR": str(tmp_path / "c")}).stdout
    assert "evolve blocks" in text and "48" in text


def test_prompts_without_replies_seed_a_block_as_the_real_wizardlm_test_instructions_do(shared_data, tmp_path, server):
    """A prompt set (WizardLM's test instructions: an id, a skill, an instruction, no reply) is what many teams
    evolve from. As `format: prompts` with `take: 0` it seeds a block and adds no row of its own; the plan's
    upper bound counts the teacher's answers at max_tokens, since no seed reply gives a length to go by."""
    path = shared_data / "wizardlm" / "WizardLM_testset.jsonl"
    teacher = {"model": "gpt-4o-mini", "base_url": server.base_url, "max_tokens": 300, "retry_base_seconds": 0.01}
    recipe = write_recipe(
        tmp_path,
        f"""
        name: wz
        seed: 5
        sources:
          tests: {{path: {path}, format: prompts, fields: {{instruction: Instruction, id: idx}}, take: 0}}
          evolved: {{evolved: ev, take: all}}
        evolve:
          ev: {{from: tests, sample: 6, rounds: 1, operators: wizardlm, eliminate: [], teacher: {json.dumps(teacher)}}}
        """,
    )
    env = {"MIXER_CACHE_DIR": str(tmp_path / "cache")}
    planned = run_mixer("plan", str(recipe), "--json", cwd=tmp_path, env=env)
    assert planned.returncode == 0, planned.stderr
    [estimate] = json.loads(planned.stdout)["evolve"]
    assert (estimate["seeds"], estimate["max_calls"], estimate["max_rows"]) == (6, 12, 6)
    assert estimate["row_tokens"] > 300  # an evolved row: the rewritten instruction and an answer of max_tokens
    assert server.log == []

    out = tmp_path / "out"
    build(recipe, options(tmp_path), out=out)
    rows = read_rows(out)
    assert rows.height == 6 and set(rows["dataset"]) == {"evolved"}
    instructions = {str(r["idx"]): r["Instruction"] for r in map(json.loads, path.read_text().splitlines())}
    for row in rows.to_dicts():
        root = row["meta"]["root_id"]
        assert root.startswith("tests/") and root.removeprefix("tests/") in instructions
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][1]["content"].startswith("A careful answer")
    assert server.count("ok") == 12  # a rewrite and an answer for each seed; no judge without its rule
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"]["tests"]["counts"]["available"] == 218


def test_the_cost_of_a_model_without_a_price_is_shown_as_unknown_not_as_zero_dollars(tmp_path, server):
    """A local model (or a hosted one the table lacks) was reported as costing $0.0000 in the build's table and
    the dataset card, which reads as free; `mixer plan` already said "unknown price"."""
    env = {"MIXER_CACHE_DIR": str(tmp_path / "cache")}
    recipe = evolve_recipe(tmp_path, server.base_url, rounds=1, teacher={"model": "my-model"})
    result = run_mixer("build", str(recipe), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    card = (tmp_path / "out" / "README.md").read_text()
    for text in (result.stdout, card):
        assert text.count("unknown price") == 2 and "$0.0000" not in text  # round 1 and the total
    priced = evolve_recipe(tmp_path, server.base_url, rounds=1)
    assert run_mixer("build", str(priced), "--out", "out-priced", cwd=tmp_path, env=env).returncode == 0
    card = (tmp_path / "out-priced" / "README.md").read_text()
    assert "unknown price" not in card and re.search(r"\| \$0\.0\d\d[1-9] \|", card)
    [compared] = json.loads(run_mixer("diff", "out", "out-priced", "--format", "json", cwd=tmp_path, env=env).stdout)
    [usd] = [line for line in compared["composition"]["settings"] if line.startswith("built.evolve.evol.usd")]
    assert usd.startswith("built.evolve.evol.usd: — → 0.000")  # not "0 → ...": the first side's cost is unknown


def test_mixer_evolve_runs_blocks_alone_and_build_reuses_them(tmp_path, server):
    recipe = evolve_recipe(tmp_path, server.base_url)
    env = {"MIXER_CACHE_DIR": str(tmp_path / "cache")}
    result = run_mixer("evolve", str(recipe), "--block", "evol", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["evolve"]["evol"]["rows"] == 4
    assert pl.read_parquet(tmp_path / "out.evolve" / "evol" / "data.parquet").height == 4
    assert server.count("ok") == 24
    assert run_mixer("build", str(recipe), cwd=tmp_path, env=env).returncode == 0
    assert server.count("ok") == 24
    wrong = run_mixer("evolve", str(recipe), "--block", "evl", cwd=tmp_path, env=env)
    assert wrong.returncode == 1 and "did you mean 'evol'?" in wrong.stderr


def test_cached_completions_follow_who_served_them_not_only_the_model_name(tmp_path, server):
    """The key was (model, messages, sampling): a stub or local server answering as "gpt-4o-mini" filled the
    cache that a later run against the OpenAI API read from, so that run trained on the stub's text. A server
    on this machine that moves port keeps its cache; the API and other hosts do not share it."""
    from mixer.evolve.cache import CallCache, Completion, call_key, served_by

    recipe = evolve_recipe(tmp_path, server.base_url, rounds=1)
    build(recipe, options(tmp_path), out=tmp_path / "out")
    asked = server.count("ok")
    moved = FakeTeacher().start()  # the same server, restarted on another port
    try:
        recipe.write_text(recipe.read_text().replace(server.base_url, moved.base_url.replace("127.0.0.1", "localhost")))
        build(recipe, options(tmp_path), out=tmp_path / "out2")
        assert moved.count("ok") == 0 and asked > 0
    finally:
        moved.stop()
    assert served_by(None) == served_by("https://api.openai.com/v1") == "api.openai.com"
    assert served_by("http://127.0.0.1:8000/v1") == served_by("http://localhost:9000/v1") == "localhost"
    assert served_by("http://node-17:8000/v1") != served_by("http://node-23:8000/v1")
    cache = CallCache(tmp_path / "keys.sqlite")
    messages, sampling = [{"role": "user", "content": "q"}], {"temperature": 1.0}
    cache.put(
        call_key(served_by(server.base_url), "gpt-4o-mini", messages, sampling), "gpt-4o-mini", Completion("stub", 1, 1)
    )
    assert cache.get(call_key(served_by(None), "gpt-4o-mini", messages, sampling)) is None


def wait_until_cached(path: Path, count: int, timeout: float = 60) -> None:
    """The calls the server answered reach the cache a moment later, in the build's own process: a fixed sleep
    before the signal would be a race on a busy machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(sqlite3.OperationalError),  # not made yet
            contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db,
        ):
            if db.execute("SELECT count(*) FROM completions").fetchone()[0] >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"{path} never held {count} calls")


def test_kill_mid_run_resumes_with_zero_repeated_calls(tmp_path, server):
    recipe = evolve_recipe(tmp_path, server.base_url, concurrency=2)
    secret = "sk-test-DO-NOT-LEAK-4242"
    env = {**os.environ, "MIXER_CACHE_DIR": str(tmp_path / "cache"), "OPENAI_API_KEY": secret}
    server.hold_after = 10
    proc = subprocess.Popen([sys.executable, "-m", "mixer", "build", str(recipe)], cwd=tmp_path, env=env)
    deadline = time.monotonic() + 60
    while server.count("held") == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert server.count("held") > 0, "the build never reached the hold point"
    wait_until_cached(tmp_path / "cache" / "evolve.sqlite", 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (tmp_path / "out").exists()
    answered_before_kill = set(server.ok_keys())
    assert len(answered_before_kill) == 10
    server.hold_after = None

    resumed = subprocess.run([sys.executable, "-m", "mixer", "build", str(recipe)], cwd=tmp_path, env=env, timeout=120)
    assert resumed.returncode == 0
    assert server.count("ok") == 24 and max(server.ok_keys().values()) == 1  # zero repeated calls
    assert f"Bearer {secret}" in server.authorizations  # the key was really used...

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "seeds.jsonl").write_bytes((tmp_path / "seeds.jsonl").read_bytes())
    (fresh / "recipe.yaml").write_text(recipe.read_text())
    build(fresh / "recipe.yaml", Options(cache_dir=fresh / "cache", progress=False), out=fresh / "out")
    assert shard_bytes(tmp_path / "out") == shard_bytes(fresh / "out")  # same output as an uninterrupted run

    for path in [*tmp_path.rglob("*")]:  # ...and never written anywhere
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_block_says_how_many_of_its_calls_are_cached(tmp_path, server, sig):
    """Ctrl-C (or a scheduler's SIGTERM) in the middle of a block says that the calls paid for are kept and a
    new run resumes from them. typer ended a Ctrl-C'd command with a silent exit 130, so nothing at all was
    printed, neither mixer's message nor the block's."""
    recipe = evolve_recipe(tmp_path, server.base_url, concurrency=2)
    env = {**os.environ, "MIXER_CACHE_DIR": str(tmp_path / "cache"), "OPENAI_API_KEY": "sk-test"}
    said = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[sig]
    for hold_after, new, cached in ((10, 10, 0), (15, 5, 10)):  # the second run reads the first's 10 calls
        server.hold_after = hold_after
        proc = subprocess.Popen(
            [sys.executable, "-m", "mixer", "build", str(recipe), "--json"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
        )
        held_before = server.count("held")
        try:
            deadline = time.monotonic() + 60
            while server.count("held") == held_before and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert server.count("held") > held_before, "the build never reached the hold point"
            wait_until_cached(tmp_path / "cache" / "evolve.sqlite", hold_after)
            proc.send_signal(sig)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 128 + sig
        message = f"{said}: the previous output, if any, is unchanged"
        note = (
            f"evolve.evol: {new} teacher call(s) made in this run are cached ({cached} more were read from the "
            "cache): run again to resume without asking them again"
        )
        assert stderr.endswith(f"{message}\n  {note}\n"), stderr
        assert json.loads(stdout) == {"ok": False, "error": message, "notes": [note]}  # --json: one shape
    assert not (tmp_path / "out").exists()


# --- validation ----------------------------------------------------------------------------------------------


def test_evolve_validation_errors_point_at_lines(tmp_path):
    write_seeds(tmp_path)
    recipe = write_recipe(
        tmp_path,
        """
        name: bad
        sources:
          seeds: {path: seeds.jsonl, format: alpaca, take: all}
          evolved: {evolved: evl, take: all}
          twice: {evolved: evol, take: all, format: alpaca}
        evolve:
          evol:
            from: seedz
            operators: [deepening, deepenning]
            rounds: 0
            teacher: {model: gpt-4o-mini}
        """,
    )
    problems = [p.format().replace(str(recipe), "R") for p in validate_file(recipe)]
    assert problems == [
        "R:4:22: error: unknown evolve block 'evl'\n  hint: did you mean 'evol'?",
        "R:5:37: error: 'format' does not apply to an evolved source\n  hint: delete 'format'",
        "R:8:11: error: evolve block 'evol' cannot start from 'seedz': no such source\n  hint: did you mean 'seeds'?",
        "R:9:28: error: unknown operator 'deepenning'\n  hint: did you mean 'deepening'?",
        "R:10:13: error: evolve.evol.rounds: 0 is less than the minimum of 1",
    ]
    with pytest.raises(RecipeInvalid):
        build(recipe, Options(progress=False))


def test_operator_weights_written_as_a_mapping_are_told_the_list_that_says_them(tmp_path):
    """`operators: {deepening: 2, in_breadth: 1}` is how one would guess weights are written: it was told only
    "{'deepening': 2, 'in_breadth': 1} is not one of wizardlm, wizardcoder"."""
    write_seeds(tmp_path)
    recipe = write_recipe(
        tmp_path,
        """
        name: w
        sources:
          seeds: {path: seeds.jsonl, format: alpaca, take: 0}
          evolved: {evolved: evol, take: all}
        evolve:
          evol:
            from: seeds
            operators: {deepening: 2, in_breadth: 1, concretizing: 1, complicate_input: 1}
            teacher: {model: gpt-4o-mini}
        """,
    )
    [problem] = validate_file(recipe)
    assert (problem.line, problem.col) == (8, 16)
    assert problem.message == (
        'evolve.evol.operators: is {"deepening": 2, "in_breadth": 1, "concretizing": 1, "com..., a mapping, not a '
        "preset name or a list"
    )
    assert problem.hint == (
        "operators are a preset (wizardlm, wizardcoder) or a list, weights given per item: operators: "
        "[{name: deepening, weight: 2}, {name: in_breadth, weight: 1}, {name: concretizing, weight: 1}, ...]"
    )
    recipe.write_text(
        recipe.read_text().replace("{deepening: 2, in_breadth: 1, concretizing: 1, complicate_input: 1}", "{}")
    )
    [problem] = validate_file(recipe)
    assert problem.hint == "operators are a preset (wizardlm, wizardcoder) or a list of operator names"


def test_bundled_evolve_recipes_validate():
    for name in ("wizardlm.yaml", "wizardcoder.yaml"):
        assert validate_file(REPO / "recipes" / name) == []


@pytest.mark.parametrize("blocked", ["a file where its folder goes", "a folder where the database goes"])
def test_an_evolve_cache_that_cannot_be_opened_stops_before_any_call(tmp_path, blocked):
    from mixer.evolve.cache import CallCache

    if blocked == "a file where its folder goes":
        (tmp_path / "cache").write_text("not a folder")
        path = tmp_path / "cache" / "evolve.sqlite"
    else:
        path = tmp_path / "evolve.sqlite"
        path.mkdir()
    with pytest.raises(MixerError) as unusable:
        CallCache(path)
    assert unusable.value.message.startswith(f"cannot open the evolve call cache {path}: ")
    assert "MIXER_CACHE_DIR" in unusable.value.hint


def test_a_damaged_evolve_cache_is_named_with_how_to_set_it_aside(tmp_path):
    from mixer.evolve.cache import CallCache

    path = tmp_path / "evolve.sqlite"
    path.write_text("not a database, but maybe paid-for calls once")
    with pytest.raises(MixerError) as damaged:
        CallCache(path)
    assert damaged.value.message == f"cannot open the evolve call cache {path}: file is not a database"
    assert damaged.value.hint.startswith(f"move it aside (mv {path} {path}.damaged) and run again")
    assert path.read_text().startswith("not a database")  # left as it was: it may hold paid calls


def test_the_call_cache_uses_a_rollback_journal_on_a_filesystem_other_hosts_share(tmp_path, monkeypatch):
    """WAL keeps its index in shared memory, which other hosts of an NFS home (a cluster's usual cache place)
    cannot see: sqlite's own documentation rules it out there."""
    from mixer.evolve import cache

    mountinfo = "\n".join(
        [
            "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw",
            "40 22 0:50 / /home rw,relatime - nfs4 filer:/home rw,vers=4.2",
            "41 22 0:51 / /mnt/team\\040data rw - fuse.sshfs host:/data rw",
            "42 40 0:52 / /home/u/scratch rw - xfs /dev/sdb1 rw",
        ]
    )
    assert cache.filesystem_type(Path("/home/u/.cache/mixer"), mountinfo) == "nfs4"
    assert cache.filesystem_type(Path("/home/u/scratch/c"), mountinfo) == "xfs"  # the longest mount point wins
    assert cache.filesystem_type(Path("/mnt/team data/c"), mountinfo) == "fuse.sshfs"
    assert cache.filesystem_type(Path("/var/c"), mountinfo) == "ext4"
    assert [cache.shared_between_hosts(t) for t in ("nfs4", "fuse.sshfs", "xfs", None)] == [True, True, False, False]

    def journal(path: Path) -> str:
        store = cache.CallCache(path)
        try:
            return store._db.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            store.close()

    assert journal(tmp_path / "local.sqlite") == "wal"
    monkeypatch.setattr(cache, "filesystem_type", lambda path: "nfs4")
    assert journal(tmp_path / "shared.sqlite") == "delete"
