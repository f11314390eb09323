"""Building mixtures: exact counts, determinism, upsampling, dedup, malformed rows, lock, atomicity."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest

from mixer.adapters import get_adapter
from mixer.adapters.base import MESSAGES, Context
from mixer.build import Options, build
from mixer.errors import MixerError, RecipeInvalid
from mixer.io import read_table
from mixer.pipeline import plan_recipe

from conftest import REPO, run_mixer, write_recipe

QUIET = Options(progress=False)
SAMPLE = Options(progress=False, sample=True)


def shard_bytes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "data").glob("*.parquet"))}


def read_mix(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "data" / "*.parquet")


def alpaca_file(path: Path, n: int, start: int = 0, prefix: str = "q") -> Path:
    rows = [{"instruction": f"{prefix} {i}", "input": "", "output": f"answer {i}"} for i in range(start, start + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tulu2_sample_twice_is_byte_identical_and_seed_changes_order(tmp_path):
    recipe = REPO / "recipes" / "tulu2.yaml"
    a = build(recipe, SAMPLE, out=tmp_path / "a").out_dir
    b = build(recipe, SAMPLE, out=tmp_path / "b").out_dir
    assert shard_bytes(a) == shard_bytes(b)
    assert (a / "manifest.json").read_text() == (b / "manifest.json").read_text()

    reseeded = write_recipe(tmp_path, (recipe.read_text()).replace("seed: 42", "seed: 7"), name="tulu2.yaml")
    c = build(reseeded, SAMPLE, out=tmp_path / "c").out_dir
    rows_a, rows_c = read_mix(a), read_mix(c)
    assert rows_a["id"].to_list() != rows_c["id"].to_list()
    counts = lambda f: dict(f.group_by("dataset").len().iter_rows())  # noqa: E731
    assert counts(rows_a) == counts(rows_c)  # same plan, different rows and order


def test_sample_build_keeps_proportions_and_loads_with_datasets(tmp_path):
    from datasets import load_dataset

    result = build(REPO / "recipes" / "tulu2.yaml", SAMPLE, out=tmp_path / "o")
    selected = {s.name: s.selected for s in result.plan.sources}
    # take: 50000 (flan, cot) vs 20000 (gpt4_alpaca) vs 30000 (wizardlm, open_orca): ratios survive scaling
    assert selected["flan_v2"] == selected["cot"] == 36
    assert selected["wizardlm"] == selected["open_orca"] == 22
    assert selected["gpt4_alpaca"] == 14
    assert selected["hardcoded"] == 130  # 13 rows after the mention filter, fraction 10
    ds = load_dataset("parquet", data_dir=str(result.out_dir / "data"), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == result.plan.total_rows == sum(selected.values())
    assert set(ds.column_names) == {"id", "dataset", "messages", "meta"}
    card = (result.out_dir / "README.md").read_text()
    assert "| **total** |" in card
    # each source's license as the Hub's ids (the registry's sharegpt, lima and wizardlm are `other`); it said `other`
    assert card.startswith("---\nlicense:\n- apache-2.0\n- cc-by-nc-4.0\n- mit\n- odc-by\n- other\npretty_name:")
    from huggingface_hub import DatasetCard

    assert DatasetCard.load(result.out_dir / "README.md").data.license == [
        "apache-2.0",
        "cc-by-nc-4.0",
        "mit",
        "odc-by",
        "other",
    ]


def test_exact_counts_upsampling_and_fractions(tmp_path):
    alpaca_file(tmp_path / "a.jsonl", 100)
    alpaca_file(tmp_path / "b.jsonl", 7, prefix="b")
    alpaca_file(tmp_path / "c.jsonl", 40, prefix="c")
    recipe = write_recipe(
        tmp_path,
        """
        name: counts
        seed: 3
        sources:
          a: {path: a.jsonl, format: alpaca, take: 33}
          b: {path: b.jsonl, format: alpaca, fraction: 2.5}
          c: {path: c.jsonl, format: alpaca, fraction: 0.25}
        """,
    )
    out = build(recipe, QUIET, out=tmp_path / "o").out_dir
    rows = read_mix(out)
    assert dict(rows.group_by("dataset").len().iter_rows()) == {"a": 33, "b": 18, "c": 10}
    b = rows.filter(pl.col("dataset") == "b")
    repeats = b.group_by("id").len()
    # 2.5 × 7 = 17.5 → 18: every row twice, four rows a third time
    assert sorted(repeats["len"].to_list()) == [2, 2, 2, 3, 3, 3, 3]
    assert sorted(b["meta"].struct.field("repeat").unique().to_list()) == [0, 1, 2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"]["b"]["counts"]["written"] == 18
    assert manifest["totals"]["rows"] == 61


def test_weights_use_largest_remainder(tmp_path):
    for name in "xyz":
        alpaca_file(tmp_path / f"{name}.jsonl", 50, prefix=name)
    recipe = write_recipe(
        tmp_path,
        """
        name: weights
        sources:
          x: {path: x.jsonl, format: alpaca, weight: 0.333}
          y: {path: y.jsonl, format: alpaca, weight: 0.333}
          z: {path: z.jsonl, format: alpaca, weight: 0.334}
        mixture: {total: 100}
        """,
    )
    _, plan = plan_recipe(recipe, QUIET)
    assert [s.selected for s in plan.sources] == [33, 33, 34]
    assert plan.total_rows == 100


def test_selection_does_not_depend_on_other_sources(tmp_path):
    alpaca_file(tmp_path / "a.jsonl", 500)
    alpaca_file(tmp_path / "b.jsonl", 100, prefix="b")
    one = write_recipe(tmp_path, "name: one\nsources:\n  a: {path: a.jsonl, format: alpaca, take: 50}\n", "one.yaml")
    two = write_recipe(
        tmp_path,
        "name: two\nsources:\n  b: {path: b.jsonl, format: alpaca, take: 20}\n  a: {path: a.jsonl, format: alpaca, take: 50}\n",
        "two.yaml",
    )
    ids_one = set(read_mix(build(one, QUIET, out=tmp_path / "o1").out_dir)["id"])
    mix_two = read_mix(build(two, QUIET, out=tmp_path / "o2").out_dir)
    assert set(mix_two.filter(pl.col("dataset") == "a")["id"]) == ids_one
    # and the selection is not simply the first rows of the file
    assert ids_one != {f"a/{i}" for i in range(50)}


def test_exact_dedup_across_sources_is_counted(tmp_path):
    alpaca_file(tmp_path / "a.jsonl", 10)
    # b: rows 5..14 → 5 overlap with a (same text up to case and spacing) and one internal duplicate
    rows = [{"instruction": f"Q {i}", "input": "", "output": f"answer   {i}"} for i in range(5, 15)]
    rows.append(rows[-1])
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe(
        tmp_path,
        """
        name: dedup
        sources:
          a: {path: a.jsonl, format: alpaca, take: all}
          b: {path: b.jsonl, format: alpaca, take: all}
        mixture: {dedup: exact}
        """,
    )
    result = build(recipe, QUIET, out=tmp_path / "o")
    counts = {name: src["counts"] for name, src in result.manifest["sources"].items()}
    assert (counts["a"]["dedup"], counts["a"]["written"]) == (0, 10)
    assert (counts["b"]["read"], counts["b"]["dedup"], counts["b"]["written"]) == (11, 6, 5)


def _normalised(conversations: list[list[dict] | None]) -> list[str | None]:
    from mixer.mix import normalised_text

    return normalised_text(pl.DataFrame({"messages": conversations}, schema={"messages": MESSAGES})).to_list()


@pytest.mark.parametrize("ascii_rows", [0, 5])
def test_exact_dedup_compares_text_with_every_unicode_space_as_one_space(ascii_rows):
    """White_Space beyond ASCII is replaced in all rows at once when most rows go beyond ASCII (two of three
    here), and only in those rows otherwise (`ascii_rows` more rows of ASCII alone, and one with no messages)."""
    wide = "\u00a0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000\x85"
    conversations = [
        [{"role": "user", "content": f"Héllo{wide}World\t!"}, {"role": "assistant", "content": "A\r\n\x0b\x0cB "}],
        [{"role": "user", "content": "日本\u3000語"}, {"role": "assistant", "content": "x\u00a0\u00a0y"}],
        [{"role": "user", "content": "Plain  ASCII\n\nhere"}, {"role": "assistant", "content": " ok\t"}],
    ]
    padding = [
        [{"role": "user", "content": f"Q{i}\n"}, {"role": "assistant", "content": "A"}] for i in range(ascii_rows)
    ]
    assert _normalised(conversations + ([None, *padding] if ascii_rows else [])) == [
        "user: héllo world ! assistant: a b",
        "user: 日本 語 assistant: x y",
        "user: plain ascii here assistant: ok",
        *([None, *(f"user: q{i} assistant: a" for i in range(ascii_rows))] if ascii_rows else []),
    ]


def test_exact_dedup_text_of_real_conversations_is_that_of_one_whitespace_regex(shared_data):
    """OpenAssistant's conversations (Spanish, Russian, Chinese... beside English), GSM8K's and Code Alpaca's
    (a few with no-break or thin spaces) against the plain definition: lower case, every run of White_Space
    (the regex `\\s`) one space, no space at either end."""
    from mixer.mix import OTHER_WHITESPACE, normalised_text

    def conversations(path: Path, fmt: str, fields: dict[str, str]) -> pl.DataFrame:
        adapter = get_adapter(fmt)
        ctx = Context({**adapter.fields, **fields}, dict(adapter.options), str(path))
        return adapter.convert(read_table(path).frame, ctx).filter(pl.col("__reason").is_null()).select("messages")

    frame = pl.concat(
        [
            conversations(shared_data / "oasst" / "oasst2_filtered.trees.jsonl", "oasst", {}),
            conversations(
                shared_data / "gsm8k" / "train.jsonl", "alpaca", {"instruction": "question", "output": "answer"}
            ),
            conversations(shared_data / "code_alpaca" / "code_alpaca_2k.json", "alpaca", {}),
        ]
    )
    turns = pl.col("messages").list.eval(
        pl.concat_str([pl.element().struct.field("role"), pl.lit(": "), pl.element().struct.field("content")])
    )
    plain = turns.list.join("\n").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()
    texts = frame.select(normalised_text(frame).alias("fast"), plain.alias("plain"), turns.list.join(""))
    beyond_ascii = texts.filter(pl.col("plain").str.len_bytes() != pl.col("plain").str.len_chars()).height
    wide_spaces = texts.filter(pl.col("messages").str.contains_any(OTHER_WHITESPACE)).height
    assert (texts.height, wide_spaces) == (511 + 7473 + 2015, 6) and beyond_ascii > 100  # both paths are taken
    assert texts["fast"].to_list() == texts["plain"].to_list()


def test_exact_dedup_compares_both_hashes_of_a_row_seen_before():
    """A row is a duplicate only when both of its text hashes match one row's: a first hash shared with an
    earlier source's row (or with an earlier row of its own source) and a second one not is a new text."""
    from mixer.mix import Deduplicator
    from mixer.stage import Staged

    def staged(pairs: list[tuple[int, int]]) -> Staged:
        keys = pl.DataFrame(
            {"__pos": range(len(pairs)), "h1": [a for a, _ in pairs], "h2": [b for _, b in pairs]},
            schema={"__pos": pl.UInt32, "h1": pl.UInt64, "h2": pl.UInt64},
        )
        return Staged(None, [], [], keys, {})  # type: ignore[arg-type]

    dedup = Deduplicator()
    first = staged([(1, 2), (3, 4), (1, 2)])
    dedup.drop_seen(first)
    second = staged([(1, 2), (1, 9), (3, 4), (7, 4), (1, 9), (5, 6)])
    dedup.drop_seen(second)
    assert first.keys["__pos"].to_list() == [0, 1] and first.counts == {"dedup": 1}
    assert second.keys["__pos"].to_list() == [1, 3, 5] and second.counts == {"dedup": 3}


def test_exact_dedup_leaves_rows_without_a_conversation():
    """Preference pairs have no `messages`: their keys' hashes are null, which dedup leaves alone (a hash of no
    text would make every pair a copy of the first)."""
    from mixer.mix import Deduplicator
    from mixer.stage import Staged, row_keys

    turn = [{"role": "user", "content": "x"}]
    rows = pl.DataFrame(
        {"id": ["a", "b", "c"], "prompt": [turn] * 3, "chosen": [turn] * 3, "rejected": [turn] * 3},
        schema_overrides={"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES},
    )
    keys = row_keys(rows, 0, keep_prompts=False, dedup=True, overlap=False)
    assert keys["h1"].null_count() == keys["h2"].null_count() == 3
    staged = Staged(None, [], [], keys, {})  # type: ignore[arg-type]
    Deduplicator().drop_seen(staged)
    assert staged.available == 3 and staged.counts == {"dedup": 0}


def test_filters_count_their_removals(tmp_path):
    rows = [
        {"instruction": "short", "output": "ok"},
        {"instruction": "long " * 50, "output": "ok"},
        {"instruction": "mentions ChatGPT", "output": "ok"},
        {"instruction": "mentions openai", "output": "ok"},
        {"instruction": "fine", "output": "yes"},
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe(
        tmp_path,
        """
        name: filters
        sources:
          d: {path: d.jsonl, format: alpaca, take: all, max_chars: 100, drop_patterns: ["ChatGPT"]}
        mixture: {drop_patterns: ["(?i)openai"]}
        """,
    )
    counts = build(recipe, QUIET, out=tmp_path / "o").manifest["sources"]["d"]["counts"]
    assert {k: counts[k] for k in ("max_chars", "drop_patterns", "mixture.drop_patterns", "written")} == {
        "max_chars": 1,
        "drop_patterns": 1,
        "mixture.drop_patterns": 1,
        "written": 2,
    }


def test_turn_filters_count_assistant_turns(tmp_path):
    def conversation(replies: int, system: bool = False) -> dict:
        turns = [{"role": "system", "content": "be brief"}] if system else []
        for i in range(replies):
            turns += [{"role": "user", "content": f"q{i} of {replies}"}, {"role": "assistant", "content": f"a{i}"}]
        return {"messages": turns}

    rows = [conversation(1), conversation(2), conversation(2, system=True), conversation(3), conversation(4)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe(
        tmp_path,
        "name: turns\nsources:\n  m: {path: m.jsonl, format: messages, take: all, min_turns: 2, max_turns: 3}\n",
    )
    result = build(recipe, QUIET, out=tmp_path / "o")
    counts = result.manifest["sources"]["m"]["counts"]
    assert {k: counts[k] for k in ("min_turns", "max_turns", "written")} == {
        "min_turns": 1,
        "max_turns": 1,
        "written": 3,
    }
    kept = pl.read_parquet(tmp_path / "o" / "data")["messages"].list.len().sort().to_list()
    assert kept == [4, 5, 6]  # 2 replies, 2 replies after a system prompt, 3 replies


def test_take_more_than_available_is_located(tmp_path):
    alpaca_file(tmp_path / "a.jsonl", 5)
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a:\n    path: a.jsonl\n    format: alpaca\n    take: 9\n")
    with pytest.raises(RecipeInvalid) as info:
        build(recipe, QUIET, out=tmp_path / "o")
    (diag,) = info.value.diagnostics
    assert (diag.line, diag.col) == (6, 11)
    assert diag.message == "a asks for 9 rows but only 5 are available"
    assert diag.hint == "use take: all (its 5 rows) or a smaller take, or fraction: 1.8 to repeat its rows (about 9)"
    recipe.write_text("name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, weight: 0.8}\nmixture: {total: 10}\n")
    with pytest.raises(RecipeInvalid) as info:
        build(recipe, QUIET, out=tmp_path / "o")
    (diag,) = info.value.diagnostics
    assert (diag.line, diag.col, diag.message) == (3, 46, "a asks for 8 rows but only 5 are available")
    assert diag.hint == (
        "use a weight of at most 0.5 (or a smaller mixture.total), or fraction: 1.6 to repeat its rows (about 8)"
    )
    alpaca_file(tmp_path / "a.jsonl", 1)  # one row: said in the singular ("only 1 are available", "its 1 rows")
    recipe.write_text("name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, take: 1500}\n")
    with pytest.raises(RecipeInvalid) as info:
        build(recipe, QUIET, out=tmp_path / "o")
    (diag,) = info.value.diagnostics
    assert diag.message == "a asks for 1,500 rows but only 1 is available"
    assert (
        diag.hint == "use take: all (its 1 row) or a smaller take, or fraction: 1500 to repeat its rows (about 1,500)"
    )
    # rows removed before selection are named, as the card names them: "after filters" sent a user whose rows
    # went to decontamination or dedup looking at the filters
    (tmp_path / "a.jsonl").write_text(
        '{"instruction": "q", "output": "x"}\n' * 3 + '{"instruction": "q", "output": ""}\n'
    )
    recipe.write_text(
        "name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, take: 3, on_error: skip}\nmixture: {dedup: exact}\n"
    )
    with pytest.raises(RecipeInvalid) as info:
        build(recipe, QUIET, out=tmp_path / "o")
    (diag,) = info.value.diagnostics
    assert diag.message == "a asks for 3 rows but only 1 is available: read 4, malformed −1, dedup −2"
    assert diag.hint == (  # "dedup −2" alone: whose copies? (FLAN CoT's GSM8K took 7,469 of GSM8K's rows)
        "use take: all (its 1 row) or a smaller take, or fraction: 3 to repeat its rows (about 3); dedup keeps each "
        f"copy in the source listed first (or the first copy in its own file); `mixer decontam {recipe}` shows "
        "which sources share its rows"
    )


MALFORMED = '{"instruction": "a", "output": "1"}\n{"instruction": "b", "output": ""}\n{"instruction": "c"\n{"instruction": "d", "output": "4"}\n'


@pytest.mark.parametrize("policy", ["error", "skip", "quarantine"])
def test_malformed_rows_policy(tmp_path, policy):
    (tmp_path / "m.jsonl").write_text(MALFORMED)
    extra = "" if policy == "error" else f", on_error: {policy}"
    recipe = write_recipe(tmp_path, f"name: m\nsources:\n  m: {{path: m.jsonl, format: alpaca, take: all{extra}}}\n")
    if policy == "error":
        with pytest.raises(MixerError) as info:
            build(recipe, QUIET, out=tmp_path / "o")
        text = str(info.value)
        assert "sources.m: 2 malformed record(s)" in text
        assert "m.jsonl: row 2: empty 'output'" in text
        assert "m.jsonl: row 3: line 3: invalid JSON" in text
        assert "on_error: skip" in text
        return
    result = build(recipe, QUIET, out=tmp_path / "o")
    source = result.manifest["sources"]["m"]
    assert (source["counts"]["malformed"], source["counts"]["written"]) == (2, 2)
    rejects = result.out_dir / "rejects" / "m.jsonl"
    if policy == "skip":
        assert not rejects.exists()
    else:
        quarantined = [json.loads(line) for line in rejects.read_text().splitlines()]
        assert [(r["row"], r["reason"]) for r in quarantined] == [
            (2, "empty 'output'"),
            (3, "line 3: invalid JSON: Expecting ',' delimiter at column 20"),
        ]
        assert json.loads(quarantined[0]["record"]) == {"instruction": "b", "output": ""}


def test_malformed_records_are_listed_in_file_order_whatever_made_them_malformed(tmp_path):
    """A broken line (found by the reader) before a record with an empty output (found by the adapter): the
    error and rejects/ listed the adapter's first, row 3 above row 2. Python's json says "Unterminated string
    starting at", which read "starting at at column" in the reason."""
    lines = ['{"instruction": "a", "output": "1"}', '{"instruction": "b', '{"instruction": "c", "output": ""}']
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    recipe = write_recipe(tmp_path, "name: m\nsources:\n  m: {path: m.jsonl, format: alpaca, take: all}\n")
    with pytest.raises(MixerError) as info:
        build(recipe, QUIET, out=tmp_path / "o")
    path = tmp_path / "m.jsonl"
    assert info.value.message == (
        "sources.m: 2 malformed record(s):\n"
        f"  {path}: row 2: line 2: invalid JSON: Unterminated string starting at column 17\n"
        f"  {path}: row 3: empty 'output'"
    )
    write_recipe(tmp_path, "name: m\nsources:\n  m: {path: m.jsonl, format: alpaca, take: all, on_error: quarantine}\n")
    result = build(recipe, QUIET, out=tmp_path / "o")
    quarantined = [json.loads(line) for line in (result.out_dir / "rejects" / "m.jsonl").read_text().splitlines()]
    assert [r["row"] for r in quarantined] == [2, 3]


def test_a_line_that_is_not_utf8_is_malformed_and_unicode_line_separators_stay_inside_records(tmp_path):
    """Once one bad line sends a file down the line-by-line path, every line there must split only at line
    feeds: JSON strings may hold U+2028 and NEL unescaped, and a record holding them is one good record.
    Bytes that are not UTF-8 make their line malformed; replacing them would change the text silently."""
    separated = {"instruction": "one\u2028record\x85here", "output": "kept"}
    lines = [
        json.dumps({"instruction": "a", "output": "1"}).encode(),
        json.dumps(separated, ensure_ascii=False).encode(),
        '{"instruction": "caf\u00e9", "output": "2"}'.encode("latin-1"),
        b'{"instruction": "broken"',
        json.dumps({"instruction": "z", "output": "3"}).encode(),
    ]
    (tmp_path / "m.jsonl").write_bytes(b"\r\n".join(lines) + b"\r\n")
    recipe = write_recipe(
        tmp_path, "name: m\nsources:\n  m: {path: m.jsonl, format: alpaca, take: all, on_error: quarantine}\n"
    )
    result = build(recipe, QUIET, out=tmp_path / "o")
    assert result.manifest["sources"]["m"]["counts"] == {
        "read": 5,
        "malformed": 2,
        "available": 3,
        "selected": 3,
        "written": 3,
    }
    quarantined = [json.loads(line) for line in (result.out_dir / "rejects" / "m.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reason"]) for r in quarantined] == [
        (3, "line 3: not UTF-8: byte 0xE9 at byte 21 of the line"),
        (4, "line 4: invalid JSON: Expecting ',' delimiter at column 25"),
    ]
    prompts = {m[0]["content"] for m in read_mix(result.out_dir)["messages"].to_list()}
    assert prompts == {"a", separated["instruction"], "z"}


def test_noop_rebuild_and_change_detection(tmp_path):
    data = alpaca_file(tmp_path / "a.jsonl", 20)
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, take: 10}\n")
    assert build(recipe, QUIET, out=tmp_path / "o").status == "built"
    assert build(recipe, QUIET, out=tmp_path / "o").status == "up-to-date"
    alpaca_file(data, 21)  # same path, new content: must rebuild (paths are not identity)
    assert build(recipe, QUIET, out=tmp_path / "o").status == "built"
    assert build(recipe, QUIET, out=tmp_path / "o", force=True).status == "built"


def test_lock_written_and_locked_build_refuses_changed_input(tmp_path):
    data = alpaca_file(tmp_path / "a.jsonl", 20)
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, take: 10}\n")
    build(recipe, QUIET, out=tmp_path / "o")
    lock = json.loads((tmp_path / "recipe.lock").read_text())
    assert lock["sources"]["a"]["files"][0]["path"] == "a.jsonl"
    assert build(recipe, QUIET, out=tmp_path / "o", locked=True).status == "up-to-date"
    alpaca_file(data, 20, prefix="changed")
    result = run_mixer("build", str(recipe), "--locked", "--out", str(tmp_path / "o"))
    assert result.returncode == 1
    assert "inputs no longer match" in result.stderr and "sources.a: a.jsonl: locked sha256" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_locked_build_names_a_missing_or_broken_lock_and_sources_added_or_removed(tmp_path):
    alpaca_file(tmp_path / "a.jsonl", 20)
    alpaca_file(tmp_path / "b.jsonl", 20, prefix="b")
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, take: 10}\n")
    lock = tmp_path / "recipe.lock"
    with pytest.raises(MixerError, match=rf"^{re.escape(str(lock))}: no lock file") as missing:
        build(recipe, QUIET, out=tmp_path / "o", locked=True)
    assert missing.value.hint == "build once without --locked to create it, then commit it"
    assert not (tmp_path / "o").exists()
    build(recipe, QUIET, out=tmp_path / "o")
    locked = lock.read_text()
    lock.write_text(locked[:-20])
    with pytest.raises(MixerError, match=rf"^{re.escape(str(lock))}: not valid JSON \(") as broken:
        build(recipe, QUIET, out=tmp_path / "o", locked=True)
    assert broken.value.hint == "rebuild without --locked to rewrite it"
    lines = locked.splitlines(keepends=True)  # a merge of two branches that each rebuilt: both sides kept
    lock.write_text("".join([*lines[:5], "<<<<<<< HEAD\n", lines[5], "=======\n", lines[5], ">>>>>>> b\n", *lines[6:]]))
    with pytest.raises(MixerError, match=r"not valid JSON: it holds git's conflict markers \(<<<<<<<\)\n") as merged:
        build(recipe, QUIET, out=tmp_path / "o", locked=True)
    assert merged.value.hint.startswith("rebuild without --locked to write the lock of the inputs you have")
    lock.write_text(locked)
    recipe.write_text("name: t\nsources:\n  b: {path: b.jsonl, format: alpaca, take: 10}\n")
    with pytest.raises(MixerError) as changed:
        build(recipe, QUIET, out=tmp_path / "o", locked=True)
    assert str(changed.value).splitlines()[1:3] == [
        "  sources.a: no longer in the recipe",
        "  sources.b: not in the lock",
    ]
    assert lock.read_text() == locked


@pytest.mark.parametrize("damaged", ["[]", "null", '{"sources": {"a": 5}}', '{"sources": {"a": {"files": 5}}}'])
def test_a_damaged_lock_is_named_by_locked_and_written_again_by_a_no_op(tmp_path, damaged):
    """A lock edited by hand or left by a bad merge: `--locked` ended in a traceback, and a build with nothing
    to do left it damaged."""
    alpaca_file(tmp_path / "a.jsonl", 5)
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    build(recipe, QUIET, out=tmp_path / "o")
    lock = tmp_path / "recipe.lock"
    good = lock.read_text()
    lock.write_text(damaged)
    with pytest.raises(MixerError, match=rf"^{re.escape(str(lock))}: not a lock as mixer writes it \("):
        build(recipe, QUIET, out=tmp_path / "o", locked=True)
    result = build(recipe, QUIET, out=tmp_path / "o")
    assert (result.status, result.lock, lock.read_text()) == ("up-to-date", lock, good)
    assert build(recipe, QUIET, out=tmp_path / "o").lock is None  # current: left alone


def test_missing_registry_data_explains_offline_options(tmp_path):
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  d: {source: dolly, take: 5}\n")
    result = run_mixer("build", str(recipe), "--out", str(tmp_path / "o"))
    assert result.returncode == 1
    assert (
        "cannot load databricks/databricks-dolly-15k@bdd27f4d94b9c1f951818a7da7fd7aeea5dbff1a from the hub"
        in result.stderr
    )
    assert "--data-dir" in result.stderr and "--sample" in result.stderr


def test_data_dir_resolution(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    alpaca_file(data_dir / "dolly.jsonl", 0)
    rows = [{"instruction": f"i{i}", "context": "", "response": f"r{i}", "category": "open_qa"} for i in range(8)]
    (data_dir / "dolly.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  d: {source: dolly, take: 5}\n")
    result = build(recipe, Options(progress=False, data_dir=data_dir), out=tmp_path / "o")
    assert result.manifest["sources"]["d"]["origin"] == "data_dir"
    assert result.manifest["totals"]["rows"] == 5


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_interrupted_build_leaves_previous_output_intact(tmp_path, sig):
    alpaca_file(tmp_path / "a.jsonl", 60_000)
    recipe = write_recipe(
        tmp_path, "name: big\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\noutput: {shard_rows: 100}\n"
    )
    out = tmp_path / "o"
    first = build(recipe, QUIET, out=out)
    before = shard_bytes(out)
    write_recipe(
        tmp_path,
        "name: big\nseed: 9\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\noutput: {shard_rows: 100}\n",
    )
    proc = subprocess.Popen(  # with faulthandler, SIGABRT makes a stuck build print where each thread is
        [sys.executable, "-X", "faulthandler", "-m", "mixer", "build", str(recipe), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    temps = lambda: list(tmp_path.glob(".o.tmp-*/data/*.parquet"))  # noqa: E731
    try:
        assert _wait_for(lambda: len(temps()) >= 3, timeout=60), "build never started writing shards"
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            stacks = proc.communicate(timeout=30)[1].decode(errors="replace")
            pytest.fail(f"the build did not exit within 30 s of signal {sig}; its threads:\n{stacks}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert shard_bytes(out) == before  # previous output untouched
    assert json.loads((out / "manifest.json").read_text())["build_fingerprint"] == first.manifest["build_fingerprint"]
    if sig != signal.SIGKILL:
        assert not list(tmp_path.glob(".o.tmp-*")), "Ctrl-C and SIGTERM must remove the temp dir"
        assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
        said = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[sig]  # typer's exit 130 said nothing
        assert proc.stderr.read().decode().endswith(f"{said}: the previous output, if any, is unchanged\n")
    again = build(recipe, QUIET, out=out)  # the next build clears a killed build's leftovers, its lock too
    assert again.status == "built" and not list(tmp_path.glob(".o.*"))
    assert shard_bytes(out) != before


def test_a_build_started_with_ctrl_c_ignored_ignores_it(tmp_path):
    """`nohup`, or `cmd &` in a script, starts a process with SIGINT ignored. polars 2 puts its own SIGINT
    handler in place when it is imported, whatever was there, and that handler made some of these signals a
    KeyboardInterrupt inside whichever polars call was running: the build failed."""
    alpaca_file(tmp_path / "a.jsonl", 60_000)
    recipe = write_recipe(
        tmp_path, "name: big\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\noutput: {shard_rows: 100}\n"
    )
    reference = shard_bytes(build(recipe, QUIET, out=tmp_path / "reference").out_dir)
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mixer", "build", str(recipe), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    sent = 0
    try:
        assert _wait_for(lambda: any(tmp_path.glob(".o.tmp-*")), timeout=60), "the build never started"
        while proc.poll() is None and sent < 60:  # through loading, filling and writing
            os.kill(proc.pid, signal.SIGINT)
            sent += 1
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode(errors="replace")[-2000:]
    assert sent >= 10, "the build ended before the signals could test it"
    assert shard_bytes(out) == reference


def test_an_output_directory_is_replaced_only_when_mixer_wrote_everything_in_it(tmp_path):
    alpaca_file(tmp_path / "a.jsonl", 50)
    recipe = write_recipe(tmp_path, "name: d\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    mine = tmp_path / "datasets"  # `--out ~/datasets`: a folder of the user's own
    (mine / "raw").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(MixerError) as refused:
        build(recipe, QUIET, out=mine)
    assert refused.value.message == f"{mine} holds what mixer did not write there: notes.txt, raw/"
    assert refused.value.hint == (
        "the output directory is replaced whole, which would delete them: move them elsewhere, or pick another --out"
    )
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "raw").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "datasets", "recipe.yaml"]  # no temp dir

    out = tmp_path / "o"
    build(recipe, QUIET, out=out)
    (out / "results").mkdir()  # `mixer results add o scores.json`
    (out / "results" / "scores.json").write_text("{}")
    with pytest.raises(MixerError) as refused:
        build(recipe, QUIET, out=out, force=True)
    assert refused.value.message == f"{out} holds what mixer did not write there: results/"
    assert "(results/ holds scores of the mix being replaced: keep them with it)" in refused.value.hint
    assert (out / "results" / "scores.json").is_file()
    (out / "results" / "scores.json").unlink()
    (out / "results").rmdir()
    (out / ".DS_Store").write_bytes(b"")  # macOS Finder's view settings: no reason to refuse
    assert build(recipe, QUIET, out=out, force=True).status == "built"  # its own files alone: replaced

    empty = tmp_path / "empty"
    empty.mkdir()
    assert build(recipe, QUIET, out=empty).status == "built"


def test_an_output_path_that_is_a_file_or_under_one_is_refused_untouched(tmp_path):
    alpaca_file(tmp_path / "a.jsonl", 50)
    recipe = write_recipe(tmp_path, "name: d\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    data = tmp_path / "a.jsonl"
    with pytest.raises(MixerError) as refused:
        build(recipe, QUIET, out=data)  # a slip of the shell's completion
    assert refused.value.message == f"{data} is a file, not a directory"
    with pytest.raises(MixerError) as refused:
        build(recipe, QUIET, out=data / "mix")
    assert refused.value.message == f"cannot create {data}: a file is in the way"
    assert data.read_text().count("\n") == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "recipe.yaml"]  # nothing moved aside


def test_an_empty_mixture_is_one_shard_with_the_schema(tmp_path):
    alpaca_file(tmp_path / "a.jsonl", 30)
    full = build(write_recipe(tmp_path, "name: e\nsources:\n  a: {path: a.jsonl, format: alpaca, take: 3}\n"), QUIET)
    for selector in ("take: 0", "take: all, max_chars: 1"):  # nothing asked for; everything filtered out
        recipe = write_recipe(tmp_path, f"name: e\nsources:\n  a: {{path: a.jsonl, format: alpaca, {selector}}}\n")
        result = build(recipe, QUIET, out=tmp_path / "empty")
        assert [s["rows"] for s in result.manifest["shards"]] == [0]
        assert read_mix(result.out_dir).schema == read_mix(full.out_dir).schema


def test_a_build_racing_another_for_the_same_output_fails_cleanly_and_leaves_the_winner(tmp_path, monkeypatch):
    """Two builds into one output: the one renaming second cannot replace a directory that appeared after it
    moved the old output aside. It must not leave the old output hidden, nor its temp dir behind."""
    alpaca_file(tmp_path / "a.jsonl", 20)
    recipe = write_recipe(tmp_path, "name: r\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    out = tmp_path / "o"
    build(recipe, QUIET, out=out)
    real_rename = Path.rename

    def the_other_build_lands_in_between(self, target):
        moved = real_rename(self, target)
        if self == out:  # ours moved the old output aside; the other build's rename lands now
            out.mkdir()
            (out / "manifest.json").write_text("{}")
        return moved

    monkeypatch.setattr(Path, "rename", the_other_build_lands_in_between)
    with pytest.raises(MixerError) as lost:
        build(recipe, QUIET, out=out, force=True)
    assert lost.value.message.startswith(f"cannot put the new output in place at {out}: ")
    assert "another mixer process wrote it at the same time" in lost.value.hint
    assert (out / "manifest.json").read_text() == "{}"  # the winner's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "o", "recipe.lock", "recipe.yaml"]  # none hidden


def test_leftovers_of_killed_builds_are_cleared_and_a_set_aside_output_goes_back(tmp_path):
    """A build killed between its two renames leaves the previous output under a hidden name and nothing in
    its place: the next build puts it back (if nothing replaced it) instead of leaving it hidden forever.
    These are the names mixer used before its locks, which end in a process id."""
    from mixer.claims import clear_leftovers

    dead = 2**22 + 12345  # above the largest pid Linux allows: no such process
    out = tmp_path / "o"
    (tmp_path / f".o.tmp-{dead}").mkdir()
    (tmp_path / f".o.old-{dead}").mkdir()
    (tmp_path / f".o.old-{dead}" / "manifest.json").write_text("previous")
    (tmp_path / f".o.tmp-{os.getpid()}").mkdir()  # a live build's: not touched
    clear_leftovers(out)
    assert (out / "manifest.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".o.tmp-{os.getpid()}", "o"]

    (tmp_path / f".o.old-{dead}").mkdir()  # set aside, but a newer output is in place: only litter now
    clear_leftovers(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".o.tmp-{os.getpid()}", "o"]
    assert (out / "manifest.json").read_text() == "previous"


def test_test_rows_that_are_copies_of_training_rows_are_counted_and_said(tmp_path):
    """An upsampled source repeats rows, and the shuffle puts copies of one row on both sides of the cut: the
    test split's loss on those is not held out. The build counts them per source (the manifest, --json) and
    says so; sources without repeats have none."""
    alpaca_file(tmp_path / "a.jsonl", 60)
    alpaca_file(tmp_path / "b.jsonl", 20, prefix="b")
    recipe = write_recipe(
        tmp_path,
        "name: r\nseed: 4\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n"
        "  b: {path: b.jsonl, format: alpaca, fraction: 3}\nmixture: {eval: {rows: 40}}\n",
    )
    result = run_mixer("build", str(recipe), "--out", str(tmp_path / "o"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    train = pl.read_parquet(tmp_path / "o" / "data" / "train-*.parquet")
    test = pl.read_parquet(tmp_path / "o" / "data" / "test-*.parquet")
    seen = test.filter(pl.col("id").is_in(train["id"].implode()))  # a copy keeps its row's id
    assert set(seen["dataset"]) == {"b"} and seen.height > 0
    copied = json.loads(result.stdout)["eval_copies_of_train_rows"]
    assert copied == {"b": seen.height}
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["totals"]["eval_copies_of_train_rows"] == copied
    card = (tmp_path / "o" / "README.md").read_text()
    assert f"{seen.height} of the test rows are copies of rows `train` also holds (upsampled sources: b " in card
    text = run_mixer("build", str(recipe), "--out", str(tmp_path / "o"), "--force", cwd=tmp_path).stdout
    assert f"⚠ {seen.height} of the test split's 40 rows are copies of rows the train split also holds" in text

    recipe.write_text(recipe.read_text().replace("fraction: 3", "take: all"))
    result = run_mixer("build", str(recipe), "--out", str(tmp_path / "o"), "--json", cwd=tmp_path)
    assert json.loads(result.stdout)["eval_copies_of_train_rows"] == {}
    assert "eval_copies_of_train_rows" not in json.loads((tmp_path / "o" / "manifest.json").read_text())["totals"]


@pytest.mark.parametrize("seed", range(6))
def test_copies_across_the_cut_are_counted_as_a_full_sort_would_cut_even_when_keys_tie(seed):
    """The count reads only sort keys, and ids where a key ties the cut's: against sorting every row by (key,
    id, repeat) and cutting there, on keys from a small range so that ties are common."""
    import random
    from types import SimpleNamespace

    from mixer.assemble import Selection, held_out_copies_of_training_rows

    rng = random.Random(seed)
    selections = []
    for name, distinct, repeats in (("a", 30, 1), ("b", 12, 3), ("c", 8, 2)):
        rows = [
            {"__index": i, "__repeat": r, "id": f"{name}/{i}", "__sort": rng.randrange(20)}
            for r in range(repeats)
            for i in range(distinct)
        ]
        frame = pl.DataFrame(
            rows, schema={"__index": pl.UInt32, "__repeat": pl.Int32, "id": pl.String, "__sort": pl.UInt64}
        )
        selections.append(Selection(SimpleNamespace(name=name), frame, 0))
    everything = pl.concat([s.rows.with_columns(pl.lit(s.staged.name).alias("source")) for s in selections])
    for eval_rows in (1, 7, 25, 60):
        test = everything.sort("__sort", "id", "__repeat").tail(eval_rows)
        train = everything.sort("__sort", "id", "__repeat").head(everything.height - eval_rows)
        both = test.filter(
            pl.struct("source", "__index").is_in(train.select(pl.struct("source", "__index")).to_series().implode())
        )
        expected = {n: int(k) for n, k in both.group_by("source").len().sort("source").iter_rows()}
        assert held_out_copies_of_training_rows(selections, eval_rows) == expected


def test_a_field_the_file_lacks_names_the_source_whose_mapping_is_wrong(tmp_path):
    """Two sources may read one file with other `fields:` (GSM8K's question as an instruction, and as a
    prompt): the error must say which source to fix, not only the file both read."""
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    recipe = write_recipe(
        tmp_path,
        "name: r\nsources:\n"
        "  good: {path: gsm.jsonl, format: alpaca, take: all, fields: {instruction: question, output: answer}}\n"
        "  bad: {path: gsm.jsonl, format: alpaca, take: all, fields: {instruction: question}}\n",
    )
    with pytest.raises(MixerError) as info:
        build(recipe, QUIET, out=tmp_path / "o")
    assert info.value.message == f"sources.bad: {path}: no field 'output' (the file has: question, answer)"
    assert info.value.hint == "map it in the recipe: fields: {output: <one of the file's fields>}"


def test_a_rebuild_with_nothing_to_write_clears_what_a_killed_build_left_too(tmp_path):
    """After `kill -9`, the user runs the same build again: it is up to date, and it must not leave the killed
    build's temp dir (as large as the mixture) on the disk until some later build writes."""
    alpaca_file(tmp_path / "a.jsonl", 50)
    recipe = write_recipe(tmp_path, "name: r\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    out = tmp_path / "o"
    build(recipe, QUIET, out=out)
    token = "0123456789ab"  # a killed build's: its lock file is there and nobody holds it
    (tmp_path / f".o.tmp-{token}" / "data").mkdir(parents=True)
    (tmp_path / f".o.tmp-{token}" / "data" / "train-00000.parquet").write_bytes(b"part")
    (tmp_path / f".o.build-{token}.lock").touch()
    again = build(recipe, QUIET, out=out)
    assert again.status == "up-to-date"
    assert not list(tmp_path.glob(".o.*"))


def test_a_file_replaced_by_two_writers_at_once_is_whole_and_a_failed_write_changes_nothing(tmp_path):
    """Lock files, manifests and cache entries are written beside their target and renamed over it. The temp
    name was `.NAME.tmp-PID`: two builds in two containers (where process ids repeat) or on two hosts sharing a
    cache wrote into one temp file, and the rename put their interleaved bytes in place."""
    from mixer.files import replacing, write_atomic_file

    target = tmp_path / "bench.lock"
    write_atomic_file(target, "first")
    with pytest.raises(RuntimeError), replacing(target) as temp:
        temp.write_text("half")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["bench.lock"]
    with replacing(target) as one, replacing(target) as two:
        assert one != two
        one.write_text("one " * 1000)
        two.write_text("two")
    assert target.read_text() == "one " * 1000  # whole, from the writer renaming last
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as readable as any file the user writes
    assert [p.name for p in tmp_path.iterdir()] == ["bench.lock"]


def test_an_output_folder_that_cannot_be_written_is_named_without_a_traceback(tmp_path, monkeypatch):
    import errno

    import mixer.write
    from mixer.files import replacing

    alpaca_file(tmp_path / "a.jsonl", 5)
    recipe = write_recipe(tmp_path, "name: r\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")

    def read_only(out_dir):
        raise OSError(errno.EROFS, "Read-only file system", str(out_dir))

    monkeypatch.setattr(mixer.write, "claim", read_only)
    with pytest.raises(MixerError) as unwritable:
        build(recipe, QUIET, out=tmp_path / "o")
    assert unwritable.value.message == f"cannot write beside {tmp_path / 'o'}: Read-only file system"
    assert "pick another --out" in unwritable.value.hint
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: read_only(self))
    with pytest.raises(OSError) as first, replacing(tmp_path / "x.json") as temp:  # its cleanup cannot unlink
        raise OSError(errno.ENOSPC, "No space left on device", str(temp))
    assert first.value.errno == errno.ENOSPC  # the writer's own error, not the cleanup's


def no_such_process(pid: int, sig: int) -> None:
    """os.kill as a process in another container or on another host sees this one's builds."""
    raise ProcessLookupError(pid)


HOLD_A_CLAIM = """
import sys, time
from pathlib import Path
from mixer.claims import claim
held = claim(Path(sys.argv[1]))
held.temp.mkdir()
held.set_aside.mkdir()
(held.set_aside / "manifest.json").write_text("previous")
print(held.token, flush=True)
time.sleep(60)
"""


def test_a_running_build_is_told_by_the_lock_it_holds_and_a_killed_one_by_its_lock_released(tmp_path):
    """Another process's names are left alone while it holds its lock, whatever the process ids say (this
    one's os.kill answers "no such process" for every id, as in another container); once it is killed (-9) they
    are cleared, its set-aside output goes back, and its lock file goes too."""
    from mixer import claims

    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_A_CLAIM, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        token = holder.stdout.readline().strip()
        assert len(token) == 12, "the claiming process did not start"
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == [f".o.build-{token}.lock", f".o.old-{token}", f".o.tmp-{token}"]

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(claims.os, "kill", no_such_process)
            claims.clear_leftovers(out)
        assert sorted(p.name for p in tmp_path.iterdir()) == names
    finally:
        holder.kill()
        holder.wait(timeout=30)
    claims.clear_leftovers(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    assert (out / "manifest.json").read_text() == "previous"


def test_a_claim_never_takes_a_token_already_beside_the_output(tmp_path, monkeypatch):
    from mixer import claims

    out = tmp_path / "o"
    first = claims.claim(out)
    tokens = iter([first.token, "0123456789ab"])
    monkeypatch.setattr(claims.secrets, "token_hex", lambda n: next(tokens))
    second = claims.claim(out)
    assert second.token == "0123456789ab" and first.fd is not None and second.fd is not None
    for held in (first, second):
        held.release()
    assert list(tmp_path.iterdir()) == []


def test_a_claim_whose_lock_file_was_cleared_before_it_locked_it_takes_another(tmp_path, monkeypatch):
    """Between creating its lock file and locking it, a claim's file looks like a killed build's to a build
    clearing leftovers, which unlinks it. A lock on an unlinked file protects nothing: the claim starts again."""
    from mixer import claims

    out, real_lock, cleared = tmp_path / "o", claims._try_lock, []

    def cleared_in_between(fd):
        if not cleared:
            cleared.extend(tmp_path.glob(".o.build-*.lock"))
            cleared[0].unlink()
        return real_lock(fd)

    monkeypatch.setattr(claims, "_try_lock", cleared_in_between)
    held = claims.claim(out)
    lock = tmp_path / f".o.build-{held.token}.lock"
    assert lock.exists() and lock != cleared[0]
    assert os.stat(lock).st_ino == os.fstat(held.fd).st_ino
    held.release()


SLOW_BUILD = """
import sys, time
from pathlib import Path
import mixer.pipeline
from mixer.build import Options, build
real = mixer.pipeline.stage_chunks
go = Path(sys.argv[3])

def staged_then_told(*args, **kwargs):
    staged = real(*args, **kwargs)  # its rows are in the temp dir now
    print("staged", flush=True)
    for _ in range(600):
        if go.exists():
            break
        time.sleep(0.1)
    return staged

mixer.pipeline.stage_chunks = staged_then_told
build(Path(sys.argv[1]), Options(progress=False), out=Path(sys.argv[2]), force=True)
print("built", flush=True)
"""


def test_a_build_of_the_same_output_elsewhere_does_not_clear_a_running_builds_temp_dir(tmp_path, monkeypatch):
    """A build in another container, or on another host of a shared filesystem, cannot see this one's process:
    judged by process id, it deleted this build's temp dir mid-build (a FileNotFoundError traceback here). Both
    builds now finish; the one renaming last has its output in place."""
    import mixer.claims

    alpaca_file(tmp_path / "a.jsonl", 40)
    recipe = write_recipe(tmp_path, "name: r\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    out, go = tmp_path / "o", tmp_path / "go"
    elsewhere = subprocess.Popen(
        [sys.executable, "-c", SLOW_BUILD, str(recipe), str(out), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert elsewhere.stdout.readline().strip() == "staged", elsewhere.stderr.read()[-2000:]

        monkeypatch.setattr(mixer.claims.os, "kill", no_such_process)
        here = build(recipe, QUIET, out=out, force=True)
        assert here.status == "built"
        go.touch()
        stdout, stderr = elsewhere.communicate(timeout=120)
    finally:
        if elsewhere.poll() is None:
            elsewhere.kill()
    assert elsewhere.returncode == 0 and stdout.strip() == "built", stderr[-2000:]
    assert read_mix(out).height == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "go", "o", "recipe.lock", "recipe.yaml"]


def test_an_input_that_changes_while_it_is_read_stops_the_build_before_anything_is_kept(tmp_path, monkeypatch):
    """A download still running, or a job still writing the file: the manifest, the lock and the caches would
    record a hash of other bytes than the build read."""
    import mixer.pipeline

    data = alpaca_file(tmp_path / "a.jsonl", 30)
    recipe = write_recipe(tmp_path, "name: g\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    out = tmp_path / "o"
    build(recipe, options, out=out)
    before = shard_bytes(out)
    real_stage = mixer.pipeline.stage_chunks

    def appended_while_read(*args, **kwargs):
        staged = real_stage(*args, **kwargs)
        with data.open("a") as fh:
            fh.write(json.dumps({"instruction": "late", "input": "", "output": "row"}) + "\n")
        return staged

    monkeypatch.setattr(mixer.pipeline, "stage_chunks", appended_while_read)
    size = data.stat().st_size
    for run in (lambda: build(recipe, options, out=out, force=True), lambda: plan_recipe(recipe, options)):
        cached = sorted(p.name for p in (tmp_path / "cache").rglob("*"))
        with pytest.raises(MixerError) as changed:
            run()
        grown = data.stat().st_size
        assert (
            changed.value.message == f"{data} changed while mixer read it ({size:,} bytes when hashed, {grown:,} now)"
        )
        assert sorted(p.name for p in (tmp_path / "cache").rglob("*")) == cached  # no counts under a stale hash
        size = grown
    assert shard_bytes(out) == before


def test_a_data_dir_that_does_not_exist_and_locked_with_sample_are_named(tmp_path, monkeypatch):
    """A mistyped --data-dir sent every registry source to the hub, and offline the error blamed the hub."""
    recipe = REPO / "recipes" / "tulu2.yaml"
    missing = tmp_path / "dat"
    with pytest.raises(MixerError) as failed:
        build(recipe, Options(progress=False, data_dir=missing), out=tmp_path / "o")
    assert failed.value.message == f"--data-dir {missing}: no such directory"
    monkeypatch.setenv("MIXER_DATA_DIR", str(missing))
    with pytest.raises(MixerError) as failed:
        plan_recipe(recipe, QUIET)
    assert failed.value.message == f"MIXER_DATA_DIR {missing}: no such directory"
    with pytest.raises(MixerError, match="--locked and --sample contradict each other"):
        build(recipe, SAMPLE, out=tmp_path / "o", locked=True)


POLARS_DISK_FULL = "No space left on device (os error 28)"  # how polars (Rust) words ENOSPC, without an errno


def _fail_when_disk_full(monkeypatch, owner, method: str, error: Exception, after: int) -> None:
    """Make `owner.method` fail with `error` from its (after+1)-th call on, as a full disk would."""
    real, calls = getattr(owner, method), []

    def write(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, method, write)


@pytest.mark.parametrize(
    "where",
    ["staged rows", "sort buckets", "shards"],
)
def test_full_disk_is_named_with_a_way_out_and_loses_nothing(tmp_path, monkeypatch, where):
    import pyarrow as pa

    alpaca_file(tmp_path / "a.jsonl", 3_000)
    recipe = write_recipe(
        tmp_path, "name: d\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\noutput: {shard_rows: 500}\n"
    )
    out = tmp_path / "o"
    build(recipe, QUIET, out=out)
    before = shard_bytes(out)
    write_recipe(
        tmp_path,
        "name: d\nseed: 3\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\noutput: {shard_rows: 500}\n",
    )
    if where == "staged rows":
        _fail_when_disk_full(monkeypatch, pl.DataFrame, "write_ipc", OSError(POLARS_DISK_FULL), after=0)
    elif where == "sort buckets":
        error = OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")  # pyarrow's
        _fail_when_disk_full(monkeypatch, pa.ipc, "new_stream", error, after=0)
    else:
        error = pl.exceptions.ComputeError(
            f"parquet: File out of specification: underlying IO error: {POLARS_DISK_FULL}"
        )
        _fail_when_disk_full(monkeypatch, pl.DataFrame, "write_parquet", error, after=2)
    with pytest.raises(MixerError) as failed:
        build(recipe, QUIET, out=out, force=True)
    assert str(failed.value).startswith(f"no space left on the disk holding {tmp_path} (the output is unchanged)")
    assert "pass --out DIR on a disk with room" in failed.value.hint
    assert shard_bytes(out) == before
    assert not list(tmp_path.glob(".o.tmp-*")), "the temp dir must go, or it keeps the disk full"


def test_full_disk_while_staging_outside_a_build_points_at_tmpdir(tmp_path, monkeypatch):
    from mixer.pipeline import decontam_only

    alpaca_file(tmp_path / "a.jsonl", 100)
    recipe = write_recipe(tmp_path, "name: d\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # what TMPDIR sets
    _fail_when_disk_full(monkeypatch, pl.DataFrame, "write_ipc", OSError(POLARS_DISK_FULL), after=0)
    with pytest.raises(MixerError) as failed:
        decontam_only(recipe, QUIET)
    assert failed.value.message == f"no space left on the disk holding {scratch} for staged rows"
    assert not list(scratch.iterdir())
    assert "point TMPDIR at a folder on a disk with room" in failed.value.hint


def test_only_a_full_disk_counts_as_one():
    from mixer.errors import disk_full

    assert disk_full(OSError(28, "No space left on device"))
    assert disk_full(pl.exceptions.ComputeError(f"underlying IO error: {POLARS_DISK_FULL}"))
    assert not disk_full(OSError(13, "Permission denied"))
    assert not disk_full(pl.exceptions.ComputeError("Permission denied (os error 13)"))
    assert not disk_full(ValueError("row 28 is bad"))


@pytest.mark.parametrize("bundled", ["tulu1.yaml", "tulu2.yaml", "wizardcoder.yaml"])
def test_the_bundled_recipes_code_alpaca_entry_reads_the_real_file(tmp_path, shared_data, bundled):
    """The real Code Alpaca has rows with an empty output (2 of the 2K subset): `mixer build recipes/tulu2.yaml
    --data-dir DIR` stopped at them. Each bundled recipe's entry, as written, plans the real file (the registry
    entry skips and counts them)."""
    import yaml

    entry = yaml.safe_load((REPO / "recipes" / bundled).read_text())["sources"]["code_alpaca"]
    data = tmp_path / "data"
    data.mkdir()
    (data / "code_alpaca.json").symlink_to(shared_data / "code_alpaca" / "code_alpaca_2k.json")
    recipe = write_recipe(tmp_path, f"name: one\nseed: 1\nsources:\n  code_alpaca: {json.dumps(entry)}\n")
    _, plan = plan_recipe(recipe, Options(data_dir=data, cache_dir=tmp_path / "cache", progress=False))
    [source] = plan.sources
    assert (source.counts["read"], source.counts["malformed"], source.available) == (2017, 2, 2015)


def test_real_files_recipe(tmp_path, shared_data):
    from datasets import load_dataset

    recipe = write_recipe(
        tmp_path,
        f"""
        name: real
        seed: 11
        sources:
          code: {{path: {shared_data}/code_alpaca/code_alpaca_2k.json, format: alpaca, take: 1500, on_error: skip}}
          chat: {{path: {shared_data}/sharegpt/dummy_conversation.json, format: sharegpt, fraction: 2.5}}
          oasst: {{path: {shared_data}/oasst/oasst2_filtered.trees.jsonl, format: oasst, take: all,
                  options: {{top_k_reply: 1}}, lang: [en, es]}}
          cot: {{path: "{shared_data}/flan_cot/*_train.tsv", format: cot, take: 3000}}
          gsm8k: {{path: {shared_data}/gsm8k/train.jsonl, format: alpaca, take: 700,
                  fields: {{instruction: question, output: answer}}}}
        output: {{shard_rows: 2000}}
        """,
    )
    result = build(recipe, QUIET, out=tmp_path / "o")
    sources = result.manifest["sources"]
    assert {n: s["counts"]["written"] for n, s in sources.items()} == {
        "code": 1500,
        "chat": 1250,
        "oasst": sources["oasst"]["counts"]["available"],
        "cot": 3000,
        "gsm8k": 700,
    }
    assert sources["code"]["counts"]["malformed"] == 2
    assert sources["oasst"]["counts"]["lang"] == 115 - sources["oasst"]["counts"]["available"]
    assert len(sources["cot"]["files"]) == 7
    ds = load_dataset("parquet", data_dir=str(result.out_dir / "data"), split="train", cache_dir=str(tmp_path / "hf"))
    assert (
        len(ds) == result.manifest["totals"]["rows"] == 1500 + 1250 + 700 + 3000 + sources["oasst"]["counts"]["written"]
    )
    cot_ids = [i for i in ds["id"] if i.startswith("cot/")]
    assert any(i.startswith("cot/gsm8k_train/") for i in cot_ids)


def test_plan_reuses_counts_when_only_selectors_change(tmp_path, monkeypatch):
    import mixer.pipeline as pipeline_module

    alpaca_file(tmp_path / "a.jsonl", 30)
    alpaca_file(tmp_path / "b.jsonl", 20, prefix="b")
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    text = """
        name: cached
        sources:
          a: {path: a.jsonl, format: alpaca, take: TAKE}
          b: {path: b.jsonl, format: alpaca, fraction: 1.5}
        mixture: {drop_patterns: ["q 1\\\\b"]}
        """
    recipe = write_recipe(tmp_path, text.replace("TAKE", "10"))
    _, first = plan_recipe(recipe, options)
    assert [(s.available, s.selected) for s in first.sources] == [(29, 10), (20, 30)]

    def must_not_load(*args, **kwargs):
        raise AssertionError("the counts should have come from the cache")

    recipe = write_recipe(tmp_path, text.replace("TAKE", "25"))
    with monkeypatch.context() as patch:
        patch.setattr(pipeline_module, "stage_sources", must_not_load)
        _, second = plan_recipe(recipe, options)
    assert [(s.available, s.selected) for s in second.sources] == [(29, 25), (20, 30)]
    assert (
        second.sources[0].counts == first.sources[0].counts == {"read": 30, "malformed": 0, "mixture.drop_patterns": 1}
    )

    time.sleep(0.01)
    alpaca_file(tmp_path / "a.jsonl", 40)  # new content: the cached counts no longer apply
    _, third = plan_recipe(recipe, options)
    assert third.sources[0].available == 39


def test_noop_rebuild_and_validation_do_not_import_polars(tmp_path):
    """The no-op check reads only the recipe, file hashes and the manifest: it must stay a fraction of a second."""
    alpaca_file(tmp_path / "a.jsonl", 20)
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, take: 10}\n")
    build(recipe, QUIET, out=tmp_path / "o")
    script = (
        "import sys; from pathlib import Path; from mixer.build import Options, build; "
        "from mixer.validate import validate_file; validate_file(Path(sys.argv[1])); "
        "r = build(Path(sys.argv[1]), Options(progress=False), out=Path(sys.argv[2])); "
        "print(r.status, 'polars' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(recipe), str(tmp_path / "o")], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["up-to-date", "False"], done.stderr
    # drop patterns are checked against polars' regex engine only when rows are read, not on a no-op
    recipe.write_text(recipe.read_text() + "mixture: {drop_patterns: ['(?i)openai']}\n")
    build(recipe, QUIET, out=tmp_path / "o")
    script = script.replace("validate_file(Path(sys.argv[1])); ", "")
    done = subprocess.run(
        [sys.executable, "-c", script, str(recipe), str(tmp_path / "o")], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["up-to-date", "False"], done.stderr


def test_plan_piped_to_a_file_keeps_source_names_whole():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # a CI log: no terminal, no $COLUMNS
    plan = subprocess.run(
        [sys.executable, "-m", "mixer", "plan", str(REPO / "recipes" / "tulu2.yaml"), "--sample"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plan.returncode == 0, plan.stderr
    rows = [line for line in plan.stdout.splitlines() if line.startswith("│")]
    names = [row.split("│")[1].strip() for row in rows]
    assert names[:3] == ["flan_v2", "cot", "oasst1"] and "gpt4_alpaca" in names and "total" in names
    assert all("…" not in row for row in rows)


def test_row_ids_of_a_source_of_several_files_name_each_file_whole(tmp_path):
    """Ids said `s/data/0` for rows of both `data.part1.jsonl` and `data.part2.jsonl` (the name cut at its first
    dot), and `s/data/0#1` for the second file's, so a row could not be traced to its file; two `train.jsonl` in
    different folders collided the same way."""
    for folder in ("en", "fr"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        alpaca_file(tmp_path / "in" / folder / "train.jsonl", 2, prefix=folder)
    alpaca_file(tmp_path / "data.part1.jsonl", 2, prefix="p1")
    (tmp_path / "data.part2.jsonl.gz").write_bytes(gzip.compress(b'{"instruction": "p2 0", "output": "x"}\n'))
    recipe = write_recipe(
        tmp_path,
        """
        name: ids
        sources:
          dotted: {path: "data.*", format: alpaca, take: all}
          nested: {path: "in/*/train.jsonl", format: alpaca, take: all}
          single: {path: data.part1.jsonl, format: alpaca, take: all}
        mixture: {shuffle: false}
        """,
    )
    ids = set(read_mix(build(recipe, QUIET, out=tmp_path / "o").out_dir)["id"])
    assert ids == {
        "dotted/data.part1/0",
        "dotted/data.part1/1",
        "dotted/data.part2/0",
        "nested/en/train/0",
        "nested/en/train/1",
        "nested/fr/train/0",
        "nested/fr/train/1",
        "single/0",
        "single/1",
    }


def test_a_double_star_in_a_path_reaches_every_folder_below_and_never_the_builds_own_output(tmp_path):
    """`data/**/*.parquet` (as Hugging Face's `data_files` patterns read) matched one level of folders only, as
    if it were `data/*/*.parquet`. Matching every level, it could also match the mixture a build wrote under
    `data/`: each rebuild read its previous output as input and grew (20, 40, 60 rows). That is refused."""
    for folder in ("data", "data/en", "data/en/train"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    alpaca_file(tmp_path / "data" / "top.jsonl", 2, prefix="t")
    alpaca_file(tmp_path / "data" / "en" / "train" / "deep.jsonl", 3, prefix="d")
    text = (
        "name: deep\nsources:\n  s: {path: 'data/**/*.jsonl', format: alpaca, take: all}\nmixture: {shuffle: false}\n"
    )
    recipe = write_recipe(tmp_path, text)
    ids = sorted(read_mix(build(recipe, QUIET, out=tmp_path / "o").out_dir)["id"])
    assert ids == ["s/en/train/deep/0", "s/en/train/deep/1", "s/en/train/deep/2", "s/top/0", "s/top/1"]

    # messages in parquet, as a build writes them: `data/**/*.parquet` then matches the output under data/
    rows = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(4)]
    pl.DataFrame({"messages": rows}).write_parquet(tmp_path / "data" / "chats.parquet")
    out = tmp_path / "data" / "out"
    text = f"name: loop\nsources:\n  s: {{path: 'data/**/*.parquet', format: messages, take: all}}\noutput: {{dir: {out}}}\n"
    recipe = write_recipe(tmp_path, text)
    assert build(recipe, QUIET).manifest["totals"]["rows"] == 4
    before = shard_bytes(out)
    with pytest.raises(MixerError) as refused:
        build(recipe, QUIET, force=True)
    shard = out / "data" / "train-00000-of-00001.parquet"
    assert refused.value.message == (
        f"sources.s: {shard} is in the output folder {out}, which this build writes: the mixture would be read "
        "back in as input"
    )
    assert refused.value.hint.startswith("narrow the source's `path:` so it does not match the output")
    assert shard_bytes(out) == before
    with pytest.raises(MixerError, match="the mixture would be read back in as input"):
        plan_recipe(recipe, QUIET)  # `mixer plan` of it too: its counts would include the output's rows

    # a folder beside the output whose name begins with the output's is not in it
    (tmp_path / "data" / "out-b").mkdir()
    alpaca_file(tmp_path / "data" / "out-b" / "a.jsonl", 3)
    text = f"name: beside\nsources:\n  s: {{path: 'data/out-b/*.jsonl', format: alpaca, take: all}}\noutput: {{dir: {out}}}\n"
    assert build(write_recipe(tmp_path, text), QUIET, force=True).manifest["totals"]["rows"] == 3


def test_where_no_lock_can_be_taken_a_build_runs_and_its_leftovers_are_never_cleared(tmp_path, monkeypatch):
    """Some filesystems refuse locks (ENOLCK): nothing there can tell a running build from a killed one."""
    from mixer import claims

    monkeypatch.setattr(claims, "_try_lock", lambda fd: None)
    alpaca_file(tmp_path / "a.jsonl", 5)
    recipe = write_recipe(tmp_path, "name: r\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    assert build(recipe, QUIET, out=tmp_path / "o").status == "built"
    opened = len(os.listdir("/proc/self/fd"))
    held = claims.claim(tmp_path / "o")  # as a build killed after claiming: its lock file stays
    assert held.fd is None and len(os.listdir("/proc/self/fd")) == opened  # no descriptor kept for nothing
    held.temp.mkdir()
    build(recipe, QUIET, out=tmp_path / "o", force=True)
    assert held.temp.is_dir()  # not judged: it might be a running build's


def test_a_build_that_replaces_another_recipes_mixture_says_so(tmp_path):
    """A recipe copied to try a variant keeps the original's `output.dir`: its build replaced the original's
    mixture without a word."""
    alpaca_file(tmp_path / "a.jsonl", 6)
    text = "name: {name}\nsources:\n  a: {{path: a.jsonl, format: alpaca, take: {take}}}\noutput: {{dir: out}}\n"
    first = write_recipe(tmp_path, text.format(name="first", take=3), "first.yaml")
    variant = write_recipe(tmp_path, text.format(name="variant", take=4), "variant.yaml")
    assert run_mixer("build", str(first), cwd=tmp_path).returncode == 0
    result = run_mixer("build", str(variant), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        f"note: {tmp_path / 'out'} held the mixture of recipe 'first' ({first}), which this build replaced; give "
        "this recipe its own output.dir (or --out) to keep both"
    )
    again = json.loads(run_mixer("build", str(variant), "--force", "--json", cwd=tmp_path).stdout)
    assert (again["status"], again["replaced"]) == ("built", None)  # its own mixture: nothing to say


def test_a_source_can_name_its_license_which_the_card_and_each_row_carry(tmp_path):
    """An inline source's license was always "unknown" in the dataset card, its YAML header and every row's
    `meta.license`, so a card published with one's own data said nothing of its terms."""
    alpaca_file(tmp_path / "a.jsonl", 4)
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          mine: {path: a.jsonl, format: alpaca, take: all, license: cc-by-4.0}
          dolly: {source: dolly, take: 2, license: cc-by-sa-3.0-relicensed}
        """,
    )
    result = build(recipe, Options(progress=False, sample=True), out=tmp_path / "o")
    rows = pl.read_parquet(tmp_path / "o" / "data")
    licenses = rows.select(pl.col("dataset"), pl.col("meta").struct.field("license")).unique().sort("dataset")
    assert licenses.rows() == [("dolly", "cc-by-sa-3.0-relicensed"), ("mine", "cc-by-4.0")]
    assert {n: s["license"] for n, s in result.manifest["sources"].items()} == {
        "mine": "cc-by-4.0",
        "dolly": "cc-by-sa-3.0-relicensed",
    }
    card = (tmp_path / "o" / "README.md").read_text()
    assert "| mine | alpaca | path | cc-by-4.0 |" in card and "license:\n- cc-by-4.0\n- other\n" in card
    evolved = write_recipe(
        tmp_path,
        "sources:\n  s: {source: dolly, take: 1}\n  e: {evolved: b, take: all, license: mit}\n"
        "evolve:\n  b: {from: s, teacher: {model: gpt-4o-mini}}\n",
        "evolved.yaml",
    )
    with pytest.raises(RecipeInvalid, match="'license' does not apply to an evolved source"):
        build(evolved, Options(progress=False, sample=True), out=tmp_path / "e")


def test_eval_holds_out_the_last_rows_of_the_shuffled_mixture_as_a_test_split(tmp_path):
    """`mixture.eval` (axolotl's val_set_size, LLaMA-Factory's val_size): train then test is, row for row, the
    mixture built without it; each split is cut into shards of its own; `datasets` loads both splits."""
    from datasets import load_dataset

    alpaca_file(tmp_path / "a.jsonl", 15)
    alpaca_file(tmp_path / "b.jsonl", 8, prefix="other")
    body = (
        "name: t\nseed: 3\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n"
        "  b: {path: b.jsonl, format: alpaca, take: all}\n"
        "output: {shard_rows: 4}\n"
    )
    whole = build(write_recipe(tmp_path, body, "whole.yaml"), QUIET, out=tmp_path / "whole")
    held = build(write_recipe(tmp_path, body + "mixture: {eval: {rows: 5}}\n", "held.yaml"), QUIET, out=tmp_path / "h")
    names = sorted(p.name for p in (tmp_path / "h" / "data").iterdir())
    assert names == [f"test-0000{i}-of-00002.parquet" for i in range(2)] + [
        f"train-0000{i}-of-00005.parquet" for i in range(5)
    ]
    train = pl.read_parquet(tmp_path / "h" / "data" / "train-*.parquet")
    test = pl.read_parquet(tmp_path / "h" / "data" / "test-*.parquet")
    assert (train.height, test.height) == (18, 5)
    assert pl.concat([train, test]).equals(read_mix(whole.out_dir))
    assert held.manifest["totals"] == {**whole.manifest["totals"], "shards": 7, "eval_rows": 5}
    assert [(s["split"], s["rows"]) for s in held.manifest["shards"]] == [
        ("train", 4),
        ("train", 4),
        ("train", 4),
        ("train", 4),
        ("train", 2),
        ("test", 4),
        ("test", 1),
    ]
    loaded = load_dataset(str(tmp_path / "h"))  # through the card's `configs:`
    assert {split: len(rows) for split, rows in loaded.items()} == {"train": 18, "test": 5}
    again = build(
        write_recipe(tmp_path, body + "mixture: {eval: {rows: 5}}\n", "held.yaml"), QUIET, out=tmp_path / "h2"
    )
    assert shard_bytes(again.out_dir) == shard_bytes(tmp_path / "h")
    fraction = build(
        write_recipe(tmp_path, body + "mixture: {eval: {fraction: 0.1}}\n", "f.yaml"), QUIET, out=tmp_path / "f"
    )
    assert fraction.manifest["totals"]["eval_rows"] == 2  # 2.3 rows, to the nearest


@pytest.mark.parametrize(
    ("mixture", "message"),
    [
        ("{eval: {rows: 23}}", "eval holds out 23 rows of a mixture of 23 rows, which leaves none to train on"),
        ("{shuffle: false, eval: {rows: 2}}", "`eval` holds out the last rows of the shuffled mixture, and this"),
        ("{eval: {rows: 2, fraction: 0.1}}", "mixture.eval: names both rows and fraction"),
    ],
)
def test_an_eval_split_that_cannot_be_held_out_is_refused(tmp_path, mixture, message):
    alpaca_file(tmp_path / "a.jsonl", 23)
    recipe = write_recipe(
        tmp_path, f"name: t\nsources:\n  a: {{path: a.jsonl, format: alpaca, take: all}}\nmixture: {mixture}\n"
    )
    with pytest.raises(RecipeInvalid) as refused:
        build(recipe, QUIET, out=tmp_path / "o")
    assert any(d.message.startswith(message) and d.line == 4 for d in refused.value.diagnostics), refused.value


def test_eval_rows_shrink_with_the_takes_in_a_sample_build(tmp_path):
    """`eval: {rows: 3000}` of the ~330K-row Tülu 2 recipe is more than its bundled samples hold: in a sample
    build it shrinks with the takes (to about 1% here), as the takes themselves do."""
    text = (REPO / "recipes" / "tulu2.yaml").read_text()
    text = text.replace("mixture:\n  shuffle: true\n", "mixture:\n  shuffle: true\n  eval: {rows: 3000}\n")
    result = build(write_recipe(tmp_path, text, "tulu2.yaml"), SAMPLE, out=tmp_path / "o")
    rows, held = result.manifest["totals"]["rows"], result.manifest["totals"]["eval_rows"]
    assert rows > 300 and 1 <= held <= 0.02 * rows


def test_a_source_system_prompt_leads_conversations_that_have_none_and_counts_in_max_chars(tmp_path):
    """axolotl's `system_prompt` and LLaMA-Factory's `default_system`, per source: a row's own system turn is
    kept, and the added turn is text of the row for `max_chars` as it is in training."""
    rows = [
        {"instruction": "Name a river.", "input": "", "output": "The Nile."},
        {"instruction": "Add 2 and 2.", "input": "", "output": "4", "system": "You are terse."},
        {"instruction": "Say " + "hi " * 10, "input": "", "output": "Hi!"},  # 37 characters of its own
    ]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    chats = [{"conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi there"}]}]
    (tmp_path / "c.json").write_text(json.dumps(chats))
    system = "You are a helpful assistant."  # 28 characters
    recipe = write_recipe(
        tmp_path,
        f"""
        name: s
        sources:
          a: {{path: a.jsonl, format: alpaca, take: all, max_chars: 60, system: "{system}"}}
          c: {{path: c.json, format: sharegpt, take: all, system: "{system}"}}
        """,
    )
    result = build(recipe, QUIET, out=tmp_path / "o")
    messages = {r["id"]: r["messages"] for r in pl.read_parquet(tmp_path / "o" / "data").to_dicts()}
    assert messages == {
        "a/0": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Name a river."},
            {"role": "assistant", "content": "The Nile."},
        ],
        "a/1": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Add 2 and 2."},
            {"role": "assistant", "content": "4"},
        ],
        "c/0": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there"},
        ],
    }
    assert result.manifest["sources"]["a"]["counts"]["max_chars"] == 1  # 37 + 28 > 60
    card = (tmp_path / "o" / "README.md").read_text()
    assert f'had none of its own:\n\n- a: "{system}"\n- c: "{system}"\n' in card

    for body, message in [
        ("p: {source: ultrafeedback, take: 0, system: x}", "`system` puts a system turn in conversations; 'p' holds"),
        ("p: {evolved: e, take: all, system: x}", "'system' does not apply to an evolved source"),
    ]:
        bad = write_recipe(tmp_path, f"name: s\nsources:\n  {body}\n", "bad.yaml")
        with pytest.raises(RecipeInvalid) as refused:
            build(bad, QUIET, out=tmp_path / "b")
        assert any(d.message.startswith(message) for d in refused.value.diagnostics), refused.value


def test_the_cards_license_ids_are_the_hubs():
    """An evolved source's license is its seeds' plus the teacher's terms, a hub card's may be a list, and a
    name the Hub does not know is `other`: the card's header lists the ids the Hub takes."""
    from mixer.hub_licenses import card_licenses

    assert card_licenses(["cc-by-nc-4.0; generated by gpt-4o (check its terms of use)"]) == ["cc-by-nc-4.0"]
    assert card_licenses(["CC-BY-4.0, odc-by", "Llama 2 Community", "mit"]) == ["cc-by-4.0", "mit", "odc-by", "other"]
    assert card_licenses([]) == ["unknown"]
