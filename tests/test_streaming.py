"""The bounded-memory build path gives exactly what one pass over everything would: chunked reading keeps row
numbers, line numbers and ids file-wide; tiny chunks, parts and buckets give byte-identical shards."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

import mixer.assemble
import mixer.borrowed_schema
import mixer.io
import mixer.json_array
import mixer.load
import mixer.pipeline
import mixer.record_reader
import mixer.stage
from mixer.build import Options, build
from mixer.errors import MixerError
from mixer.load import load_chunks, merge_chunks
from mixer.resolve import resolve_recipe
from mixer.validate import load_recipe

from conftest import run_mixer, write_recipe

QUIET = Options(progress=False)
BROKEN_LINE = '{"id": "broken", "conversations": ['


def sharegpt_lines() -> tuple[list[str], int]:
    """60 conversations with blank lines, ids that repeat far apart, and one broken line; returns the lines and
    the 1-based line number of the broken one."""
    lines, broken_at = [], 0
    for i in range(60):
        if i % 7 == 0:
            lines.append("")
        if i == 41:
            lines.append(BROKEN_LINE)
            broken_at = len(lines)
        turns = [{"from": "human", "value": f"question {i}"}, {"from": "gpt", "value": f"answer {i}"}]
        lines.append(json.dumps({"id": f"c{i % 25}", "conversations": turns}))
    return lines, broken_at


def test_chunked_reading_matches_whole_file(tmp_path):
    lines, broken_at = sharegpt_lines()
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    recipe = load_recipe(
        write_recipe(
            tmp_path, "name: s\nsources:\n  s: {path: s.jsonl, format: sharegpt, take: all, on_error: quarantine}\n"
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")

    whole = list(load_chunks(source, chunk_bytes=1 << 30))
    small = list(load_chunks(source, chunk_bytes=200))  # a few lines per chunk
    assert len(whole) == 1 and len(small) > 20
    one, many = merge_chunks(whole), merge_chunks(small)
    assert many.rows.equals(one.rows)
    assert many.counts == one.counts == {"read": 61, "malformed": 1}
    assert many.rejects.equals(one.rejects)
    assert many.rejects["reason"][0].startswith(f"line {broken_at}: invalid JSON")
    ids = many.rows["id"].to_list()
    assert ids[:3] == ["s/c0", "s/c1", "s/c2"]
    assert ids[25] == "s/c0#1" and ids[50] == "s/c0#2"  # repeats 25 and 50 records apart, in other chunks
    assert len(set(ids)) == 60


@pytest.mark.parametrize("garbage_first", [False, True])
def test_a_file_of_nothing_but_broken_lines_is_counted_and_quarantined(tmp_path, garbage_first):
    """A table with no parsable record converted nothing, and its counts and quarantined lines were dropped
    with it: the manifest undercounted `read` and `malformed`, and rejects/ missed the file."""
    alpaca_file = tmp_path / "b-good.jsonl"
    alpaca_file.write_text("".join(json.dumps({"instruction": f"q {i}", "output": "a"}) + "\n" for i in range(4)))
    garbage = tmp_path / ("a-cut.jsonl" if garbage_first else "c-cut.jsonl")
    garbage.write_text('{"instruction": "cut\nnot json at all\n')
    recipe = write_recipe(
        tmp_path, "name: g\nsources:\n  s: {path: '*.jsonl', format: alpaca, take: all, on_error: quarantine}\n"
    )
    out = build(recipe, Options(progress=False), out=tmp_path / "o").out_dir
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"]["s"]["counts"] == {
        "read": 6,
        "malformed": 2,
        "available": 4,
        "selected": 4,
        "written": 4,
    }
    rejects = [json.loads(line) for line in (out / "rejects" / "s.jsonl").read_text().splitlines()]
    assert [(r["file"], r["row"]) for r in rejects] == [(str(garbage), 1), (str(garbage), 2)]


def test_small_files_converted_together_equal_each_file_converted_alone(tmp_path):
    """A source of many small files converts them in batches (a dozen polars calls per file added up to most of
    a build of 1,000 files). Rows, ids, counts and quarantined records must be those of converting each file on
    its own: a malformed record and an unparsable line are reported in their own file, at their own row, and a
    file with other fields starts a new batch."""
    folder = tmp_path / "parts"
    folder.mkdir()
    for f in range(12):
        records = [{"instruction": f"file {f} question {i}", "input": "", "output": f"answer {i}"} for i in range(5)]
        if f == 3:
            records[2]["output"] = ""
        if f == 8:
            records = [{**r, "system": "be brief"} for r in records]
        lines = [json.dumps(r) for r in records]
        if f == 6:
            lines.insert(3, '{"instruction": "cut')
        (folder / f"part-{f:02d}.jsonl").write_text("\n".join(lines) + "\n")
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            "name: p\nsources:\n  s: {path: 'parts/*.jsonl', format: alpaca, take: all, on_error: quarantine}\n",
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    batched = list(load_chunks(source))
    alone = list(load_chunks(source, chunk_bytes=1))  # every line a chunk: nothing joins
    assert len(batched) == 5 and len(alone) == 60  # 0-5 | 6 (its unparsable line) | 7 | 8 (system) | 9-11
    together, apart = merge_chunks(batched), merge_chunks(alone)
    assert together.rows.equals(apart.rows) and together.rows.height == 59
    assert together.counts == apart.counts == {"read": 61, "malformed": 2}
    assert together.rejects.equals(apart.rejects)
    assert together.rejects.select("file", "row").rows() == [
        (str(folder / "part-03.jsonl"), 3),
        (str(folder / "part-06.jsonl"), 4),
    ]
    assert together.rows["id"][:2].to_list() == ["s/part-00/0", "s/part-00/1"]
    assert together.rows["id"][-1] == "s/part-11/4"
    assert together.rows.filter(pl.col("id") == "s/part-08/0")["messages"][0][0]["role"] == "system"


def _small_files(folder: Path, spoil: str) -> None:
    """Twelve small Alpaca files in every layout a run of them may have: CRLF, a byte-order mark, no final line
    end, blank and whitespace-only lines, gzip, a malformed record with a field no other record has. `spoil` adds
    one thing to file 5 that joining cannot take: a `system` field, a text id, an unparsable line, or only blank
    lines (no record: nothing to cut its table by)."""
    folder.mkdir()
    for f in range(12):
        records = [
            {"id": f * 100 + i, "instruction": f"file {f} question {i}", "input": "", "output": f"answer {i}"}
            for i in range(4 + f % 3)
        ]
        if f == 3:
            records[1] = {**records[1], "output": "", "note": "only here"}
        if f == 5 and spoil == "system":
            records[2]["system"] = "be brief"
        if f == 5 and spoil == "text id":
            records[0]["id"] = "five"
        lines = [json.dumps(r) for r in records]
        if f == 5 and spoil == "unparsable":
            lines.insert(1, '{"instruction": "cut')
        if f == 5 and spoil == "no record":
            lines = ["", " \t"]
        if f == 2:
            lines.insert(2, "")
            lines.insert(1, " \t\r")
        text = "\r\n".join(lines) if f == 4 else "\n".join(lines)
        end = "" if f in (6, 11) else "\r\n" if f == 4 else "\n"
        data = (b"\xef\xbb\xbf" if f == 7 else b"") + (text + end).encode()
        if f in (2, 6, 7):  # gzip files join the run too, their text measured by the gzip trailer
            (folder / f"part-{f:02d}.jsonl.gz").write_bytes(gzip.compress(data))
        else:
            (folder / f"part-{f:02d}.jsonl").write_bytes(data)


@pytest.mark.parametrize("spoil", ["nothing", "system", "text id", "unparsable", "no record"])
def test_small_json_lines_files_parsed_together_equal_each_file_read_alone(tmp_path, monkeypatch, spoil):
    """After the first file of a run of small JSON-lines files, the others are parsed as one text with its
    schema and cut back by file (polars spends ~0.5 ms per parse, most of a small file's cost). Rows, ids,
    counts and quarantined records (quoted whole, from their own file) must be those of reading each file
    alone; what the borrowed schema cannot take sends the run back to being read file by file."""
    _small_files(tmp_path / "parts", spoil)
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            "name: p\nsources:\n  s: {path: 'parts/part-*', format: alpaca, take: all, on_error: quarantine}\n",
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    joined: list[bool] = []  # whether each run of small files could be parsed as one text

    def reading(use_joined: bool):
        def read(*args, **kwargs):
            tables = mixer.io.read_small_files(*args, **kwargs)
            joined.append(tables is not None)
            return tables if use_joined else None  # None: the run is read file by file, as before joining

        return read

    monkeypatch.setattr(mixer.load, "read_small_files", reading(False))
    alone = merge_chunks(list(load_chunks(source)))
    monkeypatch.setattr(mixer.load, "read_small_files", reading(True))
    together = merge_chunks(list(load_chunks(source)))
    assert joined == [spoil == "nothing"] * 2  # one run: files 1-11 after file 0
    assert together.rows.equals(alone.rows)
    assert together.counts == alone.counts
    assert together.rejects.equals(alone.rejects)
    unparsable = spoil == "unparsable"
    empty = 6 if spoil == "no record" else 0  # file 5's records
    assert together.counts == {"read": 60 + unparsable - empty, "malformed": 1 + unparsable}
    assert together.rows["id"][:2].to_list() == ["s/0", "s/1"] and together.rows["id"][-1] == "s/1105"
    reject = together.rejects.row(0, named=True)
    assert (reject["file"], reject["row"], reject["reason"]) == (
        str(tmp_path / "parts" / "part-03.jsonl"),
        2,
        "empty 'output'",
    )
    assert json.loads(reject["record"])["note"] == "only here"


@pytest.mark.parametrize("spoil", ["nothing", "number as text", "empty array", "json lines", "numeric ids"])
def test_small_json_arrays_parsed_together_equal_each_file_read_alone(tmp_path, monkeypatch, spoil):
    """Small JSON arrays (how exports are often split) are joined into one array the same way: each file's
    elements found by the comma scan, not by parsing, though strings hold brackets, commas and escaped quotes.
    A number in a text field is read as its text either way. What joining cannot take (an empty array, JSON
    lines under `.json`, a schema with numbers, which polars' array reader would bend) sends the run back to
    being read file by file."""
    folder = tmp_path / "parts"
    folder.mkdir()
    for f in range(9):
        records = [
            {"instruction": f'file {f}, "item" [{i}]', "input": "} ], {" if i == 1 else "", "output": f"answer\\ {i}"}
            for i in range(3 + f % 3)
        ]
        if f == 3:
            records[1]["output"] = ""  # malformed: quarantined with its own file and row
        if f == 5 and spoil == "number as text":
            records[0]["input"] = 7
        if spoil == "numeric ids":
            records = [{"id": f * 100 + i, **r} for i, r in enumerate(records)]
        text = json.dumps(records, indent=2 if f % 2 else None)
        if f == 5 and spoil == "empty array":
            text = " [ ] "
        if f == 5 and spoil == "json lines":
            text = "\n".join(json.dumps(r) for r in records)
        data = (b"\xef\xbb\xbf" if f == 4 else b"") + (text + "\n" * (f % 2)).encode()
        if f == 6:
            (folder / f"part-{f}.json.gz").write_bytes(gzip.compress(data))
        else:
            (folder / f"part-{f}.json").write_bytes(data)
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            "name: p\nsources:\n  s: {path: 'parts/part-*', format: alpaca, take: all, on_error: quarantine}\n",
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    joined: list[bool] = []
    read = mixer.io.read_small_files
    monkeypatch.setattr(mixer.load, "read_small_files", lambda *a, **k: joined.append(read(*a, **k) is not None))
    alone = merge_chunks(list(load_chunks(source)))  # the stand-in returns a bool, never tables: file by file
    monkeypatch.setattr(mixer.load, "read_small_files", read)
    together = merge_chunks(list(load_chunks(source)))
    assert joined == [spoil in ("nothing", "number as text")]  # one run: files 1-8 after file 0
    assert together.rows.equals(alone.rows)
    assert together.counts == alone.counts
    assert together.rejects.equals(alone.rejects)
    rows = sum(3 + f % 3 for f in range(9)) - (spoil == "empty array") * (3 + 5 % 3)
    assert together.counts == {"read": rows, "malformed": 1}
    reject = together.rejects.row(0, named=True)
    assert (reject["file"], reject["row"]) == (str(folder / "part-3.json"), 2)
    assert together.rows["messages"][0][0]["content"] == 'file 0, "item" [0]'


BOTH_TURN_KINDS = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
LACKING = {  # (format, the records of three small files, what the second is refused for)
    "field": (
        "alpaca",
        [
            [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}],
            [{"instruction": "e", "response": "f"}],
            [{"instruction": "g", "output": "h"}],
        ],
        r"no field 'output' \(the file has: instruction, response\)",
    ),
    "turn keys": (
        "sharegpt",
        [
            [{"conversations": BOTH_TURN_KINDS}, {"conversations": [{"role": "user", "content": "q"}]}],
            [{"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
            [{"conversations": BOTH_TURN_KINDS}],
        ],
        r"conversation turns have keys \['content', 'role'\]",
    ),
}


@pytest.mark.parametrize("kind", ["jsonl", "json"])
@pytest.mark.parametrize("lacking", sorted(LACKING))
def test_a_small_file_without_a_field_or_turn_key_is_refused_for_it_as_when_read_alone(tmp_path, kind, lacking):
    """A small file whose records all lack a field the adapter needs (it calls it `response`), or whose turns
    all lack its keys (`role`/`content` for `from`/`value`), is refused with the names it has, as when read
    alone, though the file before it lends a schema with them: joined, its rows were parsed with nulls there
    and each reported as malformed. Found by fuzzing runs of small files joined against read alone."""
    fmt, files, refusal = LACKING[lacking]
    folder = tmp_path / "parts"
    folder.mkdir()
    for f, records in enumerate(files):
        text = "".join(json.dumps(r) + "\n" for r in records) if kind == "jsonl" else json.dumps(records)
        (folder / f"part-{f}.{kind}").write_text(text)
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            f"name: p\nsources:\n  s: {{path: 'parts/part-*', format: {fmt}, take: all, on_error: quarantine}}\n",
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    with pytest.raises(MixerError, match=r"part-1\.jsonl?: " + refusal):
        merge_chunks(list(load_chunks(source)))


def test_small_sharegpt_files_parsed_together_by_pyarrow_equal_each_file_read_alone(tmp_path, monkeypatch):
    """Conversations take pyarrow's reader when a schema is borrowed (`borrowed_schema.arrow_json`); it skips the same
    blank and whitespace lines polars does, so a run of small ShareGPT files is cut back by file the same way."""
    folder = tmp_path / "parts"
    folder.mkdir()
    for f in range(8):
        records = [
            {
                "id": f"c{f}-{i}",
                "conversations": [{"from": "human", "value": f"q{f}.{i}"}, {"from": "gpt", "value": "a"}],
            }
            for i in range(3 + f % 2)
        ]
        if f == 5:
            records[1]["conversations"][1]["value"] = ""  # malformed: an empty reply
        lines = [json.dumps(r) for r in records]
        lines.insert(1, "  " if f % 2 else "")
        newline = "\r\n" if f == 3 else "\n"
        (folder / f"part-{f}.jsonl").write_text(newline.join(lines) + newline, newline="")
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            "name: p\nsources:\n  s: {path: 'parts/*.jsonl', format: sharegpt, take: all, on_error: quarantine}\n",
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    arrow = []
    parse = mixer.borrowed_schema.arrow_json
    monkeypatch.setattr(mixer.borrowed_schema, "arrow_json", lambda *a: arrow.append(parse(*a)) or arrow[-1])
    together = merge_chunks(list(load_chunks(source)))
    assert len(arrow) == 1 and arrow[0] is not None and arrow[0].height == 25  # files 1-7, parsed as one
    monkeypatch.setattr(mixer.load, "read_small_files", lambda *a, **k: None)
    alone = merge_chunks(list(load_chunks(source)))
    assert together.rows.equals(alone.rows) and together.counts == alone.counts == {"read": 28, "malformed": 1}
    assert together.rejects.select("file", "row").rows() == [(str(folder / "part-5.jsonl"), 2)]
    assert together.rows["id"].to_list()[:4] == ["s/c0-0", "s/c0-1", "s/c0-2", "s/c1-0"]


def test_turns_where_no_role_has_a_value_are_malformed_rows_not_a_type_error(tmp_path):
    """Records polars cannot type as one table (here one `conversations` is an object) are read one by one,
    and a turn without the role key gets a null role. When no turn of the chunk has one, polars types the role
    as null, not text, and the ShareGPT adapter stopped the build with a polars type error (found by fuzzing
    chunked reading against whole-file reading)."""
    records = [
        {"id": "a", "conversations": {"k": "v"}},
        {"id": "b", "conversations": [{"role": "human", "content": "q"}, {"role": "gpt", "content": "a"}]},
        {"id": "c", "conversations": [{"value": "q"}, {"value": "a"}]},
    ]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = load_recipe(
        write_recipe(
            tmp_path, "name: p\nsources:\n  s: {path: s.jsonl, format: sharegpt, take: all, on_error: quarantine}\n"
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    pool = merge_chunks(list(load_chunks(source)))
    assert pool.rows.height == 0 and pool.counts == {"read": 3, "malformed": 3}
    assert pool.rejects["reason"].to_list() == [
        "field 'conversations' is an object, expected a list of {from, value}",
        "a turn without a role",
        "a turn without a role",
    ]


def _alpaca_source(tmp_path: Path, records: list[dict], on_error: str = "error"):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = load_recipe(
        write_recipe(
            tmp_path, f"name: a\nsources:\n  a: {{path: a.jsonl, format: alpaca, take: all, on_error: {on_error}}}\n"
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    return source


def test_later_chunks_keep_fields_and_types_the_first_chunk_did_not_have(tmp_path, monkeypatch):
    """Chunks after the first are parsed with the schema of the one before; nothing an adapter reads may be
    lost by that: a `system` field first seen late, an id that turns from number to text, a new field."""
    parsed_fresh = []
    infer = mixer.io._json_lines
    monkeypatch.setattr(mixer.io, "_json_lines", lambda *a: parsed_fresh.append(a[2]) or infer(*a))
    records = [{"id": i, "instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(40)]
    records += [{"id": i, "instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(40, 80)]
    records[50]["system"] = "be brief"
    records[65]["id"] = "text-id"
    source = _alpaca_source(tmp_path, records)

    whole = merge_chunks(list(load_chunks(source, chunk_bytes=1 << 30)))
    parsed_fresh.clear()
    chunks = list(load_chunks(source, chunk_bytes=300))
    small = merge_chunks(chunks)
    assert small.rows.equals(whole.rows)
    assert small.rows["messages"][50].to_list()[0] == {"role": "system", "content": "be brief"}
    assert small.rows["id"][65] == "a/text-id" and small.rows["id"][66] == "a/66"
    # the other chunks borrowed a schema: only the first, the one with `system` and the one with a text id did not
    assert len(chunks) > 15 and len(parsed_fresh) == 3 and parsed_fresh[0] == 0


@pytest.mark.parametrize("layout", ["lines", "array"])
def test_a_turn_key_that_was_null_in_every_record_before_keeps_its_values_later(tmp_path, layout):
    """A field that no record of a chunk gives a value is typed null; polars reads the values of such a field
    inside lists (a turn's role) as null when a later chunk borrows that schema, and valid conversations
    were quarantined as "a turn without a role" (found by fuzzing chunked against whole-file reading). A
    chunk where such a field has a value is parsed fresh. (polars' array reader refuses such a value, so
    arrays were read right; they are checked all the same.)"""
    first = [{"id": f"n{i}", "conversations": [{"from": None, "value": "q"}]} for i in range(5)]
    later = [
        {"id": f"r{i}", "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
        for i in range(30)
    ]
    records = first + later
    path = tmp_path / ("s.jsonl" if layout == "lines" else "s.json")
    text = "".join(json.dumps(r) + "\n" for r in records) if layout == "lines" else json.dumps(records, indent=1)
    path.write_text(text)
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            f"name: p\nsources:\n  s: {{path: {path.name}, format: sharegpt, take: all, on_error: quarantine}}\n",
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    whole = merge_chunks(list(load_chunks(source, chunk_bytes=1 << 30)))
    chunks = list(load_chunks(source, chunk_bytes=300))
    small = merge_chunks(chunks)
    assert len(chunks) > 5
    assert small.counts == whole.counts == {"read": 35, "malformed": 5}
    assert small.rows.equals(whole.rows)
    assert small.rows["messages"][29].to_list() == [
        {"role": "user", "content": "q29"},
        {"role": "assistant", "content": "a29"},
    ]


def test_a_chunk_where_the_null_typed_key_is_null_again_still_borrows_the_schema(tmp_path, monkeypatch):
    """The check above looks for the key with a value other than null. It first matched `"from": null` too, as
    `json.dumps` writes it (its blank was given back to the lookahead), so every such chunk was parsed fresh."""
    borrowed = []  # per chunk after the first: whether it was parsed with the schema of the chunk before
    parse_like = mixer.borrowed_schema.parse_like
    monkeypatch.setattr(
        mixer.borrowed_schema,
        "parse_like",
        lambda *a, **k: borrowed.append((frame := parse_like(*a, **k)) is not None) or frame,
    )
    nulls = [{"conversations": [{"from": None, "value": f"q{i}"}]} for i in range(15)]
    valid = [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}] * 5
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in nulls + valid))
    recipe = load_recipe(
        write_recipe(tmp_path, "name: p\nsources:\n  s: {path: s.jsonl, format: sharegpt, take: all, on_error: skip}\n")
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    pool = merge_chunks(list(load_chunks(source, chunk_bytes=300)))
    assert pool.counts == {"read": 20, "malformed": 15}
    # rows 6-11 (roles null again) borrow; rows 12-17 (the first roles) are parsed fresh
    assert borrowed[:2] == [True, False]


@pytest.mark.parametrize("layout", ["lines", "array"])
def test_a_malformed_record_in_a_borrowed_chunk_is_quoted_with_all_its_fields(tmp_path, layout):
    records = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(60)]
    records[45] = {"instruction": "q45", "input": "", "output": "", "note": "seen only here"}
    source = _alpaca_source(tmp_path, records, on_error="quarantine")
    if layout == "array":
        array = tmp_path / "a.json"
        array.write_text(json.dumps(records, indent=1))
        source.files[0].path.unlink()
        source = dataclasses.replace(source, files=(dataclasses.replace(source.files[0], path=array),))
    pool = merge_chunks(list(load_chunks(source, chunk_bytes=300)))
    [reject] = pool.rejects.to_dicts()
    assert reject["row"] == 46 and reject["reason"] == "empty 'output'"
    assert json.loads(reject["record"]) == records[45]


@pytest.mark.parametrize("shuffle", [True, False])
def test_tiny_chunks_parts_and_buckets_give_the_same_bytes(tmp_path, monkeypatch, shuffle):
    # long answers: a shard spans several parquet pages, whose boundaries must not depend on bucket layout
    rows = [
        {"instruction": f"task {i}", "input": "", "output": f"result {i} " + "lorem ipsum " * 300} for i in range(300)
    ]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # b repeats 40 of a's rows (exact dedup drops them) and has 160 of its own
    more = rows[:40] + [{"instruction": f"other {i}", "input": "x", "output": f"y {i}"} for i in range(160)]
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in more))
    recipe = write_recipe(
        tmp_path,
        f"""
        name: buckets
        seed: 11
        sources:
          a: {{path: a.jsonl, format: alpaca, fraction: 1.7}}
          b: {{path: b.jsonl, format: alpaca, take: 150}}
        mixture: {{shuffle: {str(shuffle).lower()}, dedup: exact}}
        output: {{shard_rows: 397}}
        """,
    )
    one_pass = build(recipe, QUIET, out=tmp_path / "one").out_dir
    monkeypatch.setattr(mixer.load, "CHUNK_BYTES", 700)
    monkeypatch.setattr(mixer.stage, "PART_ROWS", 11)
    monkeypatch.setattr(mixer.assemble, "BUCKET_ROWS", 13)
    small = build(recipe, QUIET, out=tmp_path / "small", force=True).out_dir

    def digest(out: Path) -> dict[str, str]:
        files = [*sorted((out / "data").glob("*.parquet")), out / "stats.json"]
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    assert digest(small) == digest(one_pass)
    manifest = json.loads((small / "manifest.json").read_text())
    assert manifest == json.loads((one_pass / "manifest.json").read_text())
    assert manifest["totals"] == {"rows": 660, "est_tokens": manifest["totals"]["est_tokens"], "shards": 2}
    assert manifest["sources"]["b"]["counts"]["dedup"] == 40
    mix = pl.read_parquet(small / "data" / "*.parquet")
    assert mix.height == 660 and mix["meta"].struct.field("repeat").max() == 1
    if not shuffle:  # sources in recipe order, each in its selection order, upsampled repeats after the first pass
        assert mix["dataset"].to_list() == ["a"] * 510 + ["b"] * 150
    assert not (small / ".staging").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp dir left


def test_shard_bytes_do_not_depend_on_thread_count(tmp_path):
    rows = [
        {"instruction": f"task {i}", "input": "", "output": f"result {i} " + "dolor sit " * 400} for i in range(400)
    ]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_recipe(tmp_path, "name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, fraction: 1.5}\n")
    digests = []
    for threads in ("1", "3"):
        out = tmp_path / f"out{threads}"
        done = run_mixer(
            "build", "recipe.yaml", "--out", str(out), "--force", cwd=tmp_path, env={"POLARS_MAX_THREADS": threads}
        )
        assert done.returncode == 0, done.stderr
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "data").glob("*.parquet")})
    assert digests[0] == digests[1] and len(digests[0]) == 1


def test_shard_bytes_do_not_depend_on_how_many_sources_stage_at_once(tmp_path, monkeypatch):
    """Sources stage LOAD_WORKERS at a time, largest first, and finish in any order; exact dedup must still
    settle them in recipe order (the earlier source keeps a shared row), so one at a time gives the same bytes."""
    shared = [{"instruction": f"shared {i}", "input": "", "output": f"answer {i}"} for i in range(30)]
    text = "name: w\nseed: 5\nsources:\n"
    for name, own in (("small", 20), ("large", 400), ("middle", 120), ("tiny", 5)):
        rows = shared + [{"instruction": f"{name} {i}", "input": "", "output": "x " * 50} for i in range(own)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        text += f"  {name}: {{path: {name}.jsonl, format: alpaca, take: all}}\n"
    recipe = write_recipe(tmp_path, text + "mixture: {shuffle: true, dedup: exact}\n")
    monkeypatch.setattr(mixer.load, "CHUNK_BYTES", 2000)  # several chunks each, so the threads interleave
    built = {}
    for workers in (1, 3):
        monkeypatch.setattr(mixer.pipeline, "LOAD_WORKERS", workers)
        out = build(recipe, QUIET, out=tmp_path / f"out{workers}", force=True).out_dir
        manifest = json.loads((out / "manifest.json").read_text())
        shards = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "data").glob("*.parquet")}
        built[workers] = (shards, {name: s["counts"].get("dedup", 0) for name, s in manifest["sources"].items()})
    assert built[1] == built[3]
    assert built[3][1] == {"small": 0, "large": 30, "middle": 30, "tiny": 30}


def test_gzip_and_crlf_files_read_in_chunks_like_plain_ones(tmp_path):
    import gzip

    lines, _ = sharegpt_lines()
    lines = [line for line in lines if line != BROKEN_LINE]
    (tmp_path / "plain.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "crlf.jsonl").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    (tmp_path / "packed.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    text = "name: s\nsources:\n" + "".join(
        f"  {name}: {{path: {name}.{suffix}, format: sharegpt, take: all}}\n"
        for name, suffix in (("plain", "jsonl"), ("crlf", "jsonl"), ("packed", "jsonl.gz"))
    )
    recipe = load_recipe(write_recipe(tmp_path, text))
    sources = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    loaded = [merge_chunks(list(load_chunks(source, chunk_bytes=150))) for source in sources]
    plain, crlf, packed = (pool.rows.drop("dataset", "id", "meta") for pool in loaded)
    assert plain.height == 60 and crlf.equals(plain) and packed.equals(plain)
    assert [pool.rows["id"][25] for pool in loaded] == ["plain/c0#1", "crlf/c0#1", "packed/c0#1"]


def test_a_utf8_byte_order_mark_is_skipped_and_a_utf16_file_is_named(tmp_path):
    """Windows tools start files with a byte-order mark. Without skipping it, polars and json reject the
    first record; a UTF-16 file would be reported line by line as invalid JSON."""
    lines, _ = sharegpt_lines()
    text = "\n".join(line for line in lines if line != BROKEN_LINE) + "\n"
    conversations = json.dumps([json.loads(line) for line in text.splitlines() if line])
    files = {
        "plain.jsonl": text.encode(),
        "marked.jsonl": mixer.io.UTF8_BOM + text.encode(),
        "marked_gz.jsonl.gz": gzip.compress(mixer.io.UTF8_BOM + text.encode()),
        "marked_array.json": mixer.io.UTF8_BOM + conversations.encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    body = "".join(f"  {name.split('.')[0]}: {{path: {name}, format: sharegpt, take: all}}\n" for name in files)
    recipe = load_recipe(write_recipe(tmp_path, "name: s\nsources:\n" + body))
    sources = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    own_ids = pl.col("id").str.split("/").list.last()  # ids start with the source's name
    plain, *marked = (
        merge_chunks(list(load_chunks(source, chunk_bytes=150))).rows.drop("dataset", "meta").with_columns(own_ids)
        for source in sources
    )
    assert plain.height == 60
    for rows in marked:
        assert rows.equals(plain)

    (tmp_path / "wide.jsonl").write_bytes(text.encode("utf-16"))  # with its byte-order mark, as Windows writes it
    recipe = load_recipe(
        write_recipe(tmp_path, "name: w\nsources:\n  w: {path: wide.jsonl, format: sharegpt, take: all}\n")
    )
    (source,) = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    with pytest.raises(MixerError) as failed:
        list(load_chunks(source, chunk_bytes=150))
    assert (
        failed.value.message
        == f"{tmp_path / 'wide.jsonl'}: the file is UTF-16LE (it starts with that byte-order mark); mixer reads UTF-8"
    )
    wide, utf8 = tmp_path / "wide.jsonl", tmp_path / "utf8-wide.jsonl"
    assert failed.value.hint == f"convert it first: iconv -f UTF-16 -t UTF-8 {wide} > {utf8}"
    if shutil.which("iconv"):  # the hint's command does what it says
        subprocess.run(failed.value.hint.removeprefix("convert it first: "), shell=True, check=True)
        assert utf8.read_text(encoding="utf-8") == text
    (tmp_path / "my wide.jsonl.gz").write_bytes(gzip.compress(text.encode("utf-16")))
    recipe.path.write_text("name: w\nsources:\n  w: {path: my wide.jsonl.gz, format: sharegpt, take: all}\n")
    (source,) = resolve_recipe(load_recipe(recipe.path), data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    with pytest.raises(MixerError) as failed:
        list(load_chunks(source))
    command = failed.value.hint.removeprefix("convert it first: ")
    assert (
        command
        == f"gzip -dc '{tmp_path}/my wide.jsonl.gz' | iconv -f UTF-16 -t UTF-8 > '{tmp_path}/utf8-my wide.jsonl'"
    )
    if shutil.which("iconv"):
        subprocess.run(command, shell=True, check=True)
        assert (tmp_path / "utf8-my wide.jsonl").read_text(encoding="utf-8") == text


class RecordedProgress:
    """Stands in for rich's Progress: what each task was told to expect, and how far it was advanced."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.done: dict[str, float] = {}

    def __enter__(self) -> RecordedProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float) -> str:
        self.totals[description], self.done[description] = total, 0.0
        return description

    def advance(self, task: str, amount: float = 1) -> None:
        self.done[task] += amount


def test_progress_follows_the_bytes_read_and_the_rows_sorted_and_written(tmp_path, monkeypatch):
    """A 10M-row build spends minutes reading and sorting: its bars must move with the bytes and rows, and
    end full (gzip files count their compressed bytes, whole-file formats count at once)."""
    lines, _ = sharegpt_lines()
    text = "\n".join(line for line in lines if line != BROKEN_LINE) + "\n"
    (tmp_path / "plain.jsonl").write_text(text)
    (tmp_path / "packed.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "whole.json").write_text(json.dumps([json.loads(line) for line in text.splitlines() if line]))
    heard: list[int] = []
    for name in ("plain.jsonl", "packed.jsonl.gz", "whole.json"):
        heard.clear()
        list(mixer.io.read_chunks(tmp_path / name, 300, on_read=heard.append))
        assert sum(heard) == (tmp_path / name).stat().st_size, name
        assert len([size for size in heard if size]) > (1 if name == "plain.jsonl" else 0), name

    body = "".join(
        f"  {name.split('.')[0]}: {{path: {name}, format: sharegpt, fraction: 1.5}}\n"
        for name in ("plain.jsonl", "packed.jsonl.gz", "whole.json")
    )
    recipe = write_recipe(tmp_path, f"name: p\nsources:\n{body}output: {{shard_rows: 40}}\n")
    recorded = RecordedProgress()
    monkeypatch.setattr(mixer.pipeline, "make_progress", lambda enabled: recorded)
    monkeypatch.setattr(mixer.load, "CHUNK_BYTES", 300)
    monkeypatch.setattr(mixer.stage, "PART_ROWS", 16)
    result = build(recipe, QUIET, out=tmp_path / "o")
    assert result.manifest["totals"]["rows"] == 270  # 1.5 x 60 rows x 3 sources
    megabytes = sum((tmp_path / name).stat().st_size for name in ("plain.jsonl", "packed.jsonl.gz", "whole.json")) / 1e6
    assert recorded.totals["reading inputs (MB)"] == pytest.approx(megabytes)
    assert recorded.done["reading inputs (MB)"] == pytest.approx(megabytes)
    for task in ("sorting rows into buckets", "writing shards"):
        assert recorded.totals[task] == recorded.done[task] == 270, task


def test_small_files_share_staged_parts(tmp_path, monkeypatch):
    """A source of a thousand small files (a sharded export) staged one part per file, and every part then cost
    a file, a read and a gather while filling buckets: 10.3 s for 100K rows in 1,000 files, 1.6 s in one."""
    lines, _ = sharegpt_lines()
    good = [line for line in lines if line and line != BROKEN_LINE]
    for i in range(12):
        (tmp_path / "shards").mkdir(exist_ok=True)
        (tmp_path / "shards" / f"part-{i:02d}.jsonl").write_text("\n".join(good[i * 5 : i * 5 + 5]) + "\n")
    recipe = load_recipe(
        write_recipe(tmp_path, "name: s\nsources:\n  s: {path: 'shards/*.jsonl', format: sharegpt, take: all}\n")
    )
    (source,) = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    whole = merge_chunks(list(load_chunks(source))).rows.drop("__order")
    monkeypatch.setattr(mixer.stage, "PART_ROWS", 25)
    staged = mixer.stage.stage_chunks(source, load_chunks(source), tmp_path / "staged", "s")
    assert len(source.files) == 12 and whole.height == 60
    assert staged.starts == [0, 25, 50]  # 12 files, 3 parts
    positions = pl.Series(range(60), dtype=pl.UInt32)
    assert staged.rows_at(positions).drop("id").equals(whole.drop("id"))
    # the columns every row of the source shares are staged once, not per row, and put back when read
    assert list(pl.read_ipc_schema(staged.parts[0])) == ["id", "messages", "__lang"]
    assert staged.rows_at(positions.reverse()).drop("id").equals(whole.reverse().drop("id"))


def _tricky_records(seed: int, n: int) -> list[dict]:
    """Records whose strings hold everything that could fool a scan for the array's commas."""
    rng = random.Random(seed)
    atoms = ['"', "\\", "\\\\", '\\"', "]", "[", "{", "}", ",", "\n", "é", "日本", " ", "a", '"]', "},{", "\t"]

    def text() -> str:
        return "".join(rng.choice(atoms) for _ in range(rng.randint(0, 12)))

    return [
        {
            "id": i,
            "text": text(),
            "turns": [{"from": text(), "value": text()} for _ in range(rng.randint(0, 3))],
            "tail": text() + "\\",
        }
        for i in range(n)
    ]


def _array_elements(data: bytes, size: int, *, guess: bool = True) -> tuple[list, int]:
    """The elements of the chunks `ArrayChunks` cuts `data` into, read as `io` reads them (each chunk parsed
    before the next is asked for, a guessed chunk that does not parse cut again), and how many were."""
    fh = io.BytesIO(data)
    chunks = mixer.json_array.ArrayChunks(fh, size, fh.read(size), guess=guess)
    elements, rescans = [], 0
    for chunk in chunks:
        try:
            elements.append(json.loads(chunk))
        except ValueError:
            assert chunks.guessed, "a chunk cut by the scan must parse"
            chunks.rescan()
            rescans += 1
    return [e for chunk in elements for e in chunk], rescans


@pytest.mark.parametrize("guess", [False, True])
@pytest.mark.parametrize("indent", [None, 2])
def test_a_json_array_is_split_into_whole_elements_at_any_block_size(indent, guess):
    """Strings holding quotes, escaped quotes, runs of backslashes, brackets and commas, cut at every block
    boundary: the chunks hold exactly the array's elements, in order, whether every cut is found by the scan
    or guessed from the separator between the first two elements."""
    records = _tricky_records(5, 60)
    data = json.dumps(records, indent=indent, ensure_ascii=False).encode()
    for size in [1, 2, 3, 4, 5, 7, 8, 11, 13, 17, 64, 333, 5000, 1 << 20]:
        fh = io.BytesIO(data)
        chunks = list(mixer.json_array.ArrayChunks(fh, size, fh.read(size), guess=guess))
        assert [r for chunk in chunks for r in json.loads(chunk)] == records, size
        assert len(chunks) > 1 or size >= len(data) // 2, size


@pytest.mark.parametrize("indent", [None, 2])
def test_json_array_cuts_are_guessed_after_the_first_and_scanned_again_when_a_guess_is_wrong(
    tmp_path, monkeypatch, indent
):
    """The scan for commas costs more than parsing the chunks (1.06 s for 297 MB of ShareGPT), so after the
    first cut the separator between two elements is looked for instead. In trees, whose replies open with the
    same key as the records, a guess can fall inside an element: that chunk does not parse and is cut again."""
    scanned = []
    separators = mixer.json_array._separators
    monkeypatch.setattr(mixer.json_array, "_separators", lambda *a: scanned.append(1) or separators(*a))
    flat = [{"id": i, "text": f'x{i}, {{"id": {i}}}'} for i in range(300)]
    data = json.dumps(flat, indent=indent).encode()
    assert _array_elements(data, 500) == (flat, 0)
    assert len(scanned) == 1  # the first block only: the rest are cut at the separator it showed

    trees = [{"id": i, "replies": [{"id": f"{i}.{j}", "replies": []} for j in range(i % 4)]} for i in range(300)]
    data = json.dumps(trees, indent=indent).encode()
    scanned.clear()
    elements, rescans = _array_elements(data, 500)
    assert elements == trees
    if indent is None:  # a reply was taken for a record once, then the scan cut the rest
        assert rescans == 1 and len(scanned) > 10
    else:  # the separator holds the indent of the records, deeper for replies
        assert rescans == 0 and len(scanned) == 1
    assert _array_elements(data, 500, guess=False) == (trees, 0)
    monkeypatch.setattr(mixer.json_array, "_separators", separators)
    path = tmp_path / "trees.json"
    path.write_bytes(data)
    tables = list(mixer.io.read_chunks(path, 500))
    assert len(tables) > 10 and pl.concat([t.frame for t in tables]).equals(mixer.io.read_table(path).frame)


def test_guessed_json_array_cuts_yield_every_element_of_random_trees_in_every_layout():
    """Records whose replies open with the same key as they do, strings holding separators, brackets, quotes
    and escapes, in compact, spaced and indented layouts with LF or CRLF, cut at block sizes from 3 bytes up:
    a guess that falls inside an element is always caught by the parse and cut again."""
    rng = random.Random(1)
    atoms = ['"', "\\", '\\"', "]", "[", "{", "}", ",", "\n", "é", " ", "a", '"]', "},{", '}, {"id": 1', "\t"]

    def text() -> str:
        return "".join(rng.choice(atoms) for _ in range(rng.randint(0, 8)))

    def record(depth: int = 0) -> dict:
        replies = [record(depth + 1) for _ in range(rng.randint(0, 3))] if depth < 2 and rng.random() < 0.5 else []
        return {"id": text(), **({"replies": replies} if replies else {}), "x": text()}

    rescans = 0
    for _ in range(40):
        records = [record() for _ in range(rng.randint(1, 30))]
        indent = rng.choice([None, 1, 2, 4])
        separators = rng.choice([(",", ":"), (", ", ": ")]) if indent is None else None
        data = json.dumps(records, indent=indent, separators=separators, ensure_ascii=rng.random() < 0.5).encode()
        if rng.random() < 0.3:
            data = data.replace(b"\n", b"\r\n")
        for size in (3, 40, 400):
            elements, again = _array_elements(data, size)
            assert elements == records, (indent, separators, size)
            rescans += again
    assert rescans > 5  # guesses did fall inside elements


@pytest.mark.parametrize("name", ["code_alpaca/code_alpaca_2k.json", "sharegpt/dummy_conversation.json"])
def test_real_json_array_exports_read_in_guessed_chunks_equal_a_whole_read(shared_data, monkeypatch, name):
    """The real exports (indented by `json.dump`), cut into ~40 chunks: after the first, every cut is found at
    the separator the first showed, none needs the scan again, and the records are those of one read."""
    path = shared_data / name
    scanned = []
    separators = mixer.json_array._separators
    monkeypatch.setattr(mixer.json_array, "_separators", lambda *a: scanned.append(1) or separators(*a))
    tables = list(mixer.io.read_chunks(path, path.stat().st_size // 40))
    assert len(tables) >= 30 and len(scanned) <= 2
    assert pl.concat([t.frame for t in tables], how="diagonal_relaxed").equals(mixer.io.read_table(path).frame)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'[{"a": 1}, {"a": 2}', "the array is not closed (is the file cut short?)"),
        (b'[{"a": "]"}, {"a": "unclosed}]', "the array is not closed (is the file cut short?)"),
        (b'[{"a": 1}] {"b": 2}', "text follows the array's closing bracket"),
        (b'[{"a": 1}, {"a": 2}, {"a": 3}] {"a": 4}, {"a": 5}]', "text follows the array's closing bracket"),
        (b'[{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}, {"a": 5}', "the array is not closed (is the file cut short?)"),
    ],
)
def test_a_json_array_that_does_not_close_is_named(text, reason):
    """Also when the cuts after the first are guessed: the end of the file is then looked at by the scan."""
    for size in (4, 12, 40):
        with pytest.raises(mixer.json_array.NotAnArray, match=re.escape(reason)):
            _array_elements(text, size)


def test_a_large_json_array_source_builds_like_the_same_json_lines(tmp_path, monkeypatch):
    """ShareGPT, Alpaca and Code-Alpaca ship as JSON arrays, which polars parses whole (1.3 GB of peak for a
    272 MB export): they are now read in chunks like JSON lines, and build the same rows."""
    lines, _ = sharegpt_lines()
    good = [json.loads(line) for line in lines if line and line != BROKEN_LINE]
    (tmp_path / "lines.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    (tmp_path / "array.json").write_text(json.dumps(good, indent=1))
    (tmp_path / "packed.json.gz").write_bytes(gzip.compress(json.dumps(good).encode()))
    monkeypatch.setattr(mixer.load, "CHUNK_BYTES", 300)
    built = {}
    for name in ("lines.jsonl", "array.json", "packed.json.gz"):
        recipe = write_recipe(tmp_path, f"name: a\nsources:\n  s: {{path: {name}, format: sharegpt, fraction: 0.5}}\n")
        (source,) = resolve_recipe(load_recipe(recipe), data_dir=None, sample=False, cache_dir=tmp_path / "cache")
        assert len(list(load_chunks(source, chunk_bytes=300))) > 3, name  # in chunks, not whole
        built[name] = pl.read_parquet(build(recipe, QUIET, out=tmp_path / name.replace(".", "_")).out_dir / "data")
    assert built["lines.jsonl"].height == 30
    assert built["array.json"].equals(built["lines.jsonl"])
    assert built["packed.json.gz"].equals(built["lines.jsonl"])


@pytest.mark.parametrize("ids", ["text", "numbers"])
def test_json_array_chunks_borrow_a_schema_without_numbers_and_build_what_a_whole_read_builds(
    tmp_path, monkeypatch, ids
):
    """Chunks of a JSON array after the first are parsed with the schema of the one before, but polars' array
    reader truncates 7.5 into an integer column where its lines reader refuses it: a schema with numbers is
    never borrowed, or the id 7.5 would become 7, a repeat of another row's."""
    records = [
        {
            "id": f"c{i}" if ids == "text" else i,
            "conversations": [{"from": "human", "value": f"q {i}"}, {"from": "gpt", "value": f"a {i}"}],
        }
        for i in range(60)
    ]
    records[45]["system"] = "be brief"  # a mapped field first seen late
    records[50]["id"] = "late text" if ids == "text" else 7.5
    (tmp_path / "s.json").write_text(json.dumps(records, indent=1))
    recipe = write_recipe(tmp_path, "name: a\nsources:\n  s: {path: s.json, format: sharegpt, take: all}\n")
    (source,) = resolve_recipe(load_recipe(recipe), data_dir=None, sample=False, cache_dir=tmp_path / "cache")

    borrowed = []
    parse_like = mixer.borrowed_schema.parse_like
    monkeypatch.setattr(
        mixer.borrowed_schema, "parse_like", lambda *a, **k: borrowed.append(parse_like(*a, **k)) or borrowed[-1]
    )
    small = merge_chunks(list(load_chunks(source, chunk_bytes=400)))
    whole = merge_chunks(list(load_chunks(source, chunk_bytes=1 << 30)))
    assert small.rows.equals(whole.rows) and small.rows.height == 60
    assert small.rows["id"][50] == ("s/late text" if ids == "text" else "s/7.5")
    assert small.rows["messages"][45].to_list()[0] == {"role": "system", "content": "be brief"}
    taken = [frame for frame in borrowed if frame is not None]
    assert len(borrowed) > 15
    assert (len(taken) > 15) if ids == "text" else not taken  # chunks of text ids borrow; of number ids never


def test_a_parquet_file_is_read_in_slices_with_the_types_of_a_whole_read(tmp_path):
    """A hub export of a few GB of parquet was decompressed whole; slices must keep every row, its position
    and the column types of reading the file at once (lists of structs, nulls, numbers)."""
    records = _tricky_records(9, 90)
    frame = pl.DataFrame(records).with_columns(
        pl.when(pl.col("id") % 7 == 0).then(None).otherwise(pl.col("text")).alias("text")
    )
    path = tmp_path / "export.parquet"
    frame.write_parquet(path, row_group_size=20)
    whole = mixer.io.read_table(path).frame
    tables = list(mixer.io.read_chunks(path, 700))
    assert len(tables) > 3
    assert pl.concat([t.frame for t in tables]).equals(whole)
    (single,) = mixer.io.read_chunks(path, 1 << 30)  # small enough: one read
    assert single.frame.equals(whole)


@pytest.mark.parametrize("name", ["export.csv", "export.csv.gz"])
def test_a_csv_file_is_read_in_batches_that_equal_a_whole_read(tmp_path, name):
    """A CSV of a few GB was read whole. Batches must keep quoted commas, quotes and line breaks inside
    fields, empty fields, a byte-order mark and each row's position, gzipped or not."""
    rng = random.Random(3)
    atoms = ["a", " ", ",", '"', "\n", "é", "x y", ""]
    rows = [
        {"instruction": "".join(rng.choice(atoms) for _ in range(rng.randint(0, 9))), "output": f"o{i}"}
        for i in range(400)
    ]
    path = tmp_path / name
    text = b"\xef\xbb\xbf" + pl.DataFrame(rows).write_csv().encode()
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    whole = mixer.io.read_table(path).frame
    heard: list[int] = []
    tables = list(mixer.io.read_chunks(path, 700, on_read=heard.append))
    assert len(tables) > 3
    assert pl.concat([t.frame for t in tables]).equals(whole)
    assert len(heard) == len(tables) and 0 < sum(heard) <= path.stat().st_size  # progress, never past the file
    assert whole.columns == ["__row", "instruction", "output"] and whole.height == 400
    assert whole["output"][-1] == "o399" and whole["__row"][-1] == 399


def test_a_headerless_tsv_in_batches_equals_a_whole_read_and_a_ragged_row_is_named(tmp_path, shared_data):
    """The real FLAN CoT files: headerless, unquoted (fields hold bare quotes). A row with a field too many,
    far into a large file, is reported at its line as in a whole read."""
    path = shared_data / "flan_cot" / "gsm8k_train.tsv"
    whole = mixer.io.read_table(path, header=False).frame
    tables = list(mixer.io.read_chunks(path, 64 << 10, header=False))
    assert len(tables) > 40
    assert pl.concat([t.frame for t in tables]).equals(whole)
    assert whole.columns == ["__row", "column_1", "column_2", "column_3"] and whole.height == 7473
    lines = path.read_bytes().split(b"\n")
    lines[5000] += b"\textra"
    ragged = tmp_path / "ragged.tsv"
    ragged.write_bytes(b"\n".join(lines))
    with pytest.raises(MixerError) as info:
        list(mixer.io.read_chunks(ragged, 64 << 10, header=False))
    assert info.value.message == f"{ragged}: cannot read tsv file: line 5001: 4 fields, where the first row has 3"


def test_quotes_like_csv_needs_every_opening_quote_to_close_as_csv_does_and_one_to_be_needed():
    from mixer.tsv_quoting import quotes_like_csv

    assert quotes_like_csv(b'a\t"He said ""hi""."\n')  # a quote doubled inside
    assert quotes_like_csv(b'"two\nlines"\tb\r\n"x\ty"\tc')  # a line break, a tab
    assert not quotes_like_csv(b'a\t"yes"\n')  # quotes no writer needed: kept, as before
    assert not quotes_like_csv(b'"Gamey" is a word\tno\n')  # FLAN's bare quotes: text after the closing one
    assert not quotes_like_csv(b'a\t"He said ""hi""."\n"Gamey" is a word\tno\n')  # one bare quote keeps it as written
    assert not quotes_like_csv(b'a\t"never closed\n')
    assert quotes_like_csv(b'a\t"""hi"""\nb\t"x""y"\nc\t"damaged\n')  # a quoted file with one damaged field
    assert not quotes_like_csv(b'say "hi" ""now""\tb\n')  # quotes inside a field that does not open with one
    head = b'a\t"He said ""hi""."\nb\t"cut short'
    assert quotes_like_csv(head, complete=False) and not quotes_like_csv(head)


@pytest.mark.parametrize("name", ["quoted.tsv", "quoted.tsv.gz"])
def test_a_tsv_written_with_csv_quoting_reads_as_its_writer_meant_whole_and_in_chunks(tmp_path, name):
    """pandas, `datasets` and Python's csv module write TSV with CSV's quoting. Read as written, a reply with
    a quote kept its quotes doubled (`"He said ""hi""."`) without a word, and one with a line break was cut
    into two records, the second refused as "empty 'output'"."""
    rows = [
        {"instruction": f"question {i}", "input": "" if i % 3 else "tab\there", "output": output}
        for i, output in enumerate(['He said "hi".', "line one\nline two", "plain", '"quoted" start', "x\r\ny"] * 600)
    ]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), delimiter="\t")
    writer.writeheader()
    writer.writerows(rows)
    data = text.getvalue().encode()
    assert b'"He said ""hi""."' in data and b'"line one\nline two"' in data
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    whole = mixer.io.read_table(path).frame
    assert whole.drop("__row").to_dicts() == [{k: v or None for k, v in row.items()} for row in rows]  # "" is null
    tables = list(mixer.io.read_chunks(path, 16 << 10))
    assert len(tables) > 3 and pl.concat([t.frame for t in tables]).equals(whole)

    broken = tmp_path / "broken.tsv"  # a quoted TSV is checked as CSV is when polars cannot read it
    broken.write_bytes(data + b'question x\t\t"never closed\nmore\n')
    with pytest.raises(MixerError) as info:
        mixer.io.read_table(broken)
    line = data.count(b"\n") + 1
    assert (
        info.value.message
        == f"{broken}: cannot read tsv file: line {line}: a quoted field starts here and is never closed"
    )


def test_real_flan_cot_written_again_with_csv_quoting_reads_the_same(tmp_path, shared_data):
    """FLAN's TSVs hold bare quotes (creak's claims open with one) and are read as written; the same rows
    written by Python's csv module, which quotes those fields, read the same."""
    from mixer.tsv_quoting import quotes_like_csv

    for file in ("creak_train.tsv", "strategyqa_train.tsv"):
        path = shared_data / "flan_cot" / file
        assert not quotes_like_csv(path.read_bytes())
        original = mixer.io.read_table(path, header=False).frame
        text = io.StringIO(newline="")
        csv.writer(text, delimiter="\t", lineterminator="\n").writerows(original.drop("__row").rows())
        again = tmp_path / file
        again.write_text(text.getvalue(), newline="")
        assert again.read_bytes() != path.read_bytes()  # the writer quoted some fields
        assert mixer.io.read_table(again, header=False).frame.equals(original)


def test_real_gsm8k_read_in_small_chunks_with_borrowed_schemas_equals_one_read(tmp_path, shared_data, monkeypatch):
    fresh = []
    infer = mixer.io._json_lines
    monkeypatch.setattr(mixer.io, "_json_lines", lambda *a: fresh.append(a[2]) or infer(*a))
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            f"name: g\nsources:\n  g: {{path: {shared_data}/gsm8k/train.jsonl, format: alpaca, take: all,"
            " fields: {instruction: question, output: answer}}\n",
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    whole = merge_chunks(list(load_chunks(source, chunk_bytes=1 << 30)))
    fresh.clear()
    chunks = list(load_chunks(source, chunk_bytes=64 << 10))
    assert len(chunks) == 64 and fresh == [0]  # 4 MB in 64 KB pieces; only the first infers a schema
    assert merge_chunks(chunks).rows.equals(whole.rows) and whole.rows.height == 7473


def test_a_wanted_name_seen_only_as_a_value_does_not_stop_borrowing_a_schema():
    schema = pl.Schema({"id": pl.String, "conversations": pl.List(pl.Struct({"from": pl.String, "value": pl.String}))})
    columns, keys = {"conversations", "id", "system"}, {"from", "value", "role"}
    as_value = b'{"id": "a", "conversations": [{"from": "system", "value": "be \\"system\\": brief, \\"role\\": x"}]}\n'
    frame = mixer.borrowed_schema.parse_like(as_value, schema, columns, keys)
    assert frame is not None and frame.columns == ["id", "conversations"]
    assert frame["conversations"][0][0]["from"] == "system"
    as_column = b'{"id": "a", "system" : "be brief", "conversations": []}\n'
    assert mixer.borrowed_schema.parse_like(as_column, schema, columns, keys) is None  # a mapped column holds a value
    as_key = b'{"id": "a", "conversations": [{"role" : "user", "from": "human", "value": "hi"}]}\n'
    assert mixer.borrowed_schema.parse_like(as_key, schema, columns, keys) is None  # a turn key the schema would drop


def test_nested_chunks_parsed_by_pyarrow_equal_polars_and_what_it_refuses_goes_to_polars(tmp_path, monkeypatch):
    """Chunks of conversations after the first are parsed by pyarrow with the borrowed schema. Whatever it
    accepts must equal polars' parse, and every value it refuses (a number, boolean or date-like text where
    polars has rules of its own, a duplicate key, a lone surrogate, a line longer than its block) must reach
    polars' path: the tables, ids and lines must be those of reading without pyarrow."""
    monkeypatch.setattr(mixer.borrowed_schema, "JSON_BLOCK", 4096)

    def turn(who, value):
        return {"from": who, "value": value}

    lines = []
    for i in range(300):
        record = {"id": f"c{i}", "conversations": [turn("human", f"q {i} \u00e9\U0001f600"), turn("gpt", f"a {i}")]}
        lines.append(json.dumps(record, ensure_ascii=i % 2 == 0))
    lines[40] = json.dumps({"id": 41, "conversations": [turn("human", "q"), turn("gpt", "a")]})  # a number id
    lines[80] = json.dumps({"id": "x", "conversations": [turn("human", "q"), turn("gpt", 7)]})  # a number value
    lines[120] = json.dumps({"id": "d", "conversations": [turn("human", "2023-02-05T10:00:00"), turn("gpt", "a")]})
    lines[160] = '{"id": "dup", "id": "dup2", "conversations": [{"from": "human", "value": "q"}]}'
    lines[200] = (
        '{"id": "s", "conversations": [{"from": "human", "value": "x\\ud800y"}, {"from": "gpt", "value": "a"}]}'
    )
    lines[240] = json.dumps({"id": "long", "conversations": [turn("human", "w " * 5000), turn("gpt", "a")]})
    lines[260] = json.dumps({"id": "extra", "conversations": [turn("human", "q") | {"lang": "en"}], "score": 1.5})
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    columns, keys = ("conversations", "id", "system"), ("from", "value")

    accepted = []
    arrow = mixer.borrowed_schema.arrow_json
    monkeypatch.setattr(mixer.borrowed_schema, "arrow_json", lambda *a: accepted.append(arrow(*a)) or accepted[-1])
    with_arrow = list(mixer.io.read_chunks(path, 600, columns=columns, keys=keys))
    monkeypatch.setattr(mixer.borrowed_schema, "arrow_json", lambda *a: None)
    without = list(mixer.io.read_chunks(path, 600, columns=columns, keys=keys))

    assert len(with_arrow) == len(without) > 50
    for a, b in zip(with_arrow, without, strict=True):
        assert a.frame.equals(b.frame) and a.frame.schema == b.frame.schema
        assert a.unparsable == b.unparsable and a.misshapen == b.misshapen
    taken = [frame for frame in accepted if frame is not None]
    assert len(taken) > 40 and len(taken) < len(accepted)  # most chunks went through pyarrow, not all
    assert pl.concat([t.frame for t in with_arrow], how="diagonal_relaxed").height == 300


def test_each_step_after_selection_holds_only_the_keys_it_reads(tmp_path, monkeypatch):
    # at 10M input rows every 8-byte key column is 80 MB at the build's peak, so what a step no longer reads goes
    rows = [{"instruction": f"task {i % 90}", "input": "", "output": f"result {i % 90}"} for i in range(120)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe(
        tmp_path,
        """
        name: trimmed
        sources:
          a: {path: a.jsonl, format: alpaca, fraction: 1.5}
        mixture: {dedup: near}
        """,
    )
    seen: dict[str, object] = {}
    select, fill = mixer.pipeline.select, mixer.assemble._fill_source

    def recording_select(staged, *args):
        seen["staged"] = staged[0].keys.columns
        selections = select(staged, *args)
        seen["selected"] = selections[0].staged.keys.height
        return selections

    def recording_fill(tag, selection, *args):
        seen["filling"] = (selection.staged.keys.height, selection.rows.columns)
        return fill(tag, selection, *args)

    monkeypatch.setattr(mixer.pipeline, "select", recording_select)
    monkeypatch.setattr(mixer.assemble, "_fill_source", recording_fill)
    out = build(recipe, QUIET, out=tmp_path / "out").out_dir
    assert seen == {
        "staged": ["__pos", "id", "chars", "grams"],  # prompts are hashed for the selected rows alone, in the fill
        "selected": 0,
        "filling": (0, ["__pos", "__index", "__repeat", "id", "__sort"]),
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"]["a"]["counts"]["dedup"] == 30 and manifest["totals"]["rows"] == 135


@pytest.mark.parametrize("chunk_bytes", [1, 5, 7, 64, 10_000])
def test_line_blocks_end_at_the_first_line_end_past_each_chunk_like_read_then_readline(
    tmp_path, monkeypatch, chunk_bytes
):
    monkeypatch.setattr(mixer.io, "LINE_PROBE", 3)  # lines longer than the probe make it read on
    contents = {
        "lines": b'{"a": 1}\n{"a": 22}\n\n{"a": 333}\n' + b"x" * 40 + b"\n",
        "no final newline": b"first\n" + b"y" * 30 + b"\nlast",
        "one long line": b"z" * 100,
        "only newlines": b"\n\n\n",
        "empty": b"",
    }
    for name, content in contents.items():
        plain, packed = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.jsonl.gz"
        plain.write_bytes(content)
        packed.write_bytes(gzip.compress(content))
        expected, source = [], io.BytesIO(content)
        while True:  # the reference: a block, then the rest of its last line
            block = source.read(chunk_bytes)
            if block and not block.endswith(b"\n"):
                block += source.readline()
            expected.append(block)
            if not block:
                break
        with open(plain, "rb") as fh:
            assert list(mixer.io._line_blocks(fh, chunk_bytes)) == expected, name
        with gzip.open(packed, "rb") as fh:
            assert list(mixer.io._line_blocks(fh, chunk_bytes)) == expected, name
        with monkeypatch.context() as without_pread, open(plain, "rb") as fh:  # as on Windows
            without_pread.delattr(mixer.io.os, "pread")
            assert list(mixer.io._line_blocks(fh, chunk_bytes)) == expected, name
        assert b"".join(expected) == content and expected[-1] == b""


def test_one_ahead_keeps_order_makes_one_item_ahead_only_when_allowed_and_stops_with_its_consumer():
    """Reading a file's next chunk while the current one is converted: the items and their order must not
    change, no more than one item may be made ahead (memory), none at all when no core is to spare, an error
    of the producer must reach the consumer, and a consumer that stops early must not leave the thread
    running."""
    import threading
    import time

    from mixer.threads import one_ahead

    made: list[int] = []

    def items(n: int):
        for i in range(n):
            made.append(i)
            yield i

    assert list(one_ahead(items(50))) == list(range(50))

    for spare, expected in ((True, 2), (False, 1)):  # items made while the first is in use
        made.clear()
        reader = one_ahead(items(10), lambda spare=spare: spare)
        assert next(reader) == 0
        deadline = time.monotonic() + 10
        while len(made) < expected and time.monotonic() < deadline:  # a busy machine may be slow to get there
            time.sleep(0.01)
        time.sleep(0.3)  # and it must stop there
        assert len(made) == expected
        reader.close()

    def failing():
        yield 1
        raise MixerError("line 2: invalid JSON")

    reader = one_ahead(failing())
    assert next(reader) == 1
    with pytest.raises(MixerError, match="line 2: invalid JSON"):
        next(reader)

    before = threading.active_count()
    reader = one_ahead(items(1000))
    next(reader)
    reader.close()  # a consumer stopped by an error or Ctrl-C
    assert threading.active_count() == before


def _oasst_source(tmp_path: Path, path: Path, options: str = ""):
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            f"name: o\nsources:\n  o: {{path: {path}, format: oasst, take: all, on_error: quarantine{options}}}\n",
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    return source


def _whole_trees(path: Path, top_k: int | None) -> pl.DataFrame:
    """The trees export read whole into one polars frame, converted in one call: what every build did before."""
    adapter = mixer.load.get_adapter("oasst")
    ctx = mixer.load.Context({}, {"top_k_reply": top_k}, str(path))
    return adapter.convert(mixer.io.read_table(path).frame, ctx)


@pytest.mark.parametrize("top_k", [None, 1])
def test_real_oasst_trees_read_in_chunks_equal_the_whole_file(tmp_path, shared_data, top_k):
    """polars took ~190 ms per MB to infer and build the trees export's nested columns, and as long again to turn
    them back into Python trees, all of the file at once (346 MB: 119 s and 3.8 GB). It is now read in chunks of
    Python objects. 52 messages of this file sit in two trees each, 400 lines apart at most: a message is one
    conversation however the file is cut."""
    path = shared_data / "oasst" / "oasst2_filtered.trees.jsonl"
    whole = _whole_trees(path, top_k).filter(pl.col("__reason").is_null())
    source = _oasst_source(tmp_path, path, f", options: {{top_k_reply: {top_k or 'null'}}}")
    chunks = list(load_chunks(source, chunk_bytes=16 << 10))
    assert len(chunks) > 100
    pool = merge_chunks(chunks)
    assert pool.rows.height == whole.height == {None: 511, 1: 115}[top_k]
    assert pool.rows["id"].to_list() == ("o/" + whole["native_id"]).to_list()  # no shared message twice (id#1)
    assert pool.rows["messages"].equals(whole["messages"])


def test_oasst_trees_in_tiny_chunks_keep_shared_messages_once_and_name_bad_records(tmp_path):
    def node(mid: str, role: str, text: str, replies=(), rank=None) -> dict:
        return {"message_id": mid, "role": role, "text": text, "rank": rank, "replies": list(replies)}

    shared = node("a1", "assistant", "shared answer")
    trees = [
        node("p1", "prompter", "first question", [shared, node("a2", "assistant", "other answer", rank=1)]),
        node("p2", "prompter", "second question", [node("a3", "assistant", "third answer")]),
        node("p1", "prompter", "first question", [shared]),  # the same message again, in another tree
    ]
    lines = [json.dumps({"message_tree_id": t["message_id"], "prompt": t}) for t in trees]
    lines[1:1] = ["", '{"message_tree_id": "cut", "prompt": {"message_id"', '{"message_tree_id": "none"}']
    path = tmp_path / "t.trees.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    chunks = list(load_chunks(_oasst_source(tmp_path, path), chunk_bytes=1))  # every record a chunk of its own
    pool = merge_chunks(chunks)
    assert pool.rows["id"].to_list() == ["o/a1", "o/a2", "o/a3"]
    assert [[m["content"] for m in c] for c in pool.rows["messages"].to_list()] == [
        ["first question", "shared answer"],
        ["first question", "other answer"],
        ["second question", "third answer"],
    ]
    assert pool.counts == {"read": 5, "malformed": 2}
    rejects = pool.rejects.select("row", "reason").rows()
    assert rejects[0] == (3, "line 3: invalid JSON: Expecting ':' delimiter at column 51")
    assert rejects[1] == (3, "no `prompt` object (the tree of a *.trees.jsonl record)")
    assert json.loads(pool.rejects["record"][1]) == {"message_tree_id": "none"}


def test_small_trees_files_are_read_record_by_record_not_joined(tmp_path, monkeypatch):
    """Small JSON-lines files of one source are parsed together by polars, but OpenAssistant's trees are read
    as Python objects (polars' nested inference was what made them slow): a run of small trees files must not
    be joined, and gives the rows of the same trees in one file."""

    def tree(i: int) -> str:
        answer = {"message_id": f"a{i}", "role": "assistant", "text": f"answer {i}", "replies": []}
        prompt = {"message_id": f"p{i}", "role": "prompter", "text": f"question {i}", "replies": [answer]}
        return json.dumps({"message_tree_id": f"p{i}", "prompt": prompt}) + "\n"

    parts = tmp_path / "parts"
    parts.mkdir()
    for f, trees in enumerate([range(0, 2), range(2, 4), range(4, 5)]):
        (parts / f"part-{f}.trees.jsonl").write_text("".join(tree(i) for i in trees))
    (tmp_path / "all.trees.jsonl").write_text("".join(tree(i) for i in range(5)))
    joined = []
    monkeypatch.setattr(mixer.load, "read_small_files", lambda *a, **k: joined.append(a) or None)
    split = merge_chunks(list(load_chunks(_oasst_source(tmp_path, tmp_path / "parts" / "*.trees.jsonl"))))
    whole = merge_chunks(list(load_chunks(_oasst_source(tmp_path, tmp_path / "all.trees.jsonl"))))
    assert joined == []
    assert split.rows.height == 5 and split.counts == whole.counts == {"read": 5, "malformed": 0}
    assert split.rows.select("messages").equals(whole.rows.select("messages"))


def test_a_trees_file_whose_first_line_is_broken_is_still_read_in_chunks(tmp_path):
    trees = [
        {
            "prompt": {
                "message_id": f"p{i}",
                "role": "prompter",
                "text": f"q{i}",
                "replies": [{"message_id": f"a{i}", "role": "assistant", "text": f"a{i}", "replies": []}],
            }
        }
        for i in range(3)
    ]
    path = tmp_path / "t.trees.jsonl"
    path.write_text('{"prompt": \n' + "".join(json.dumps(t) + "\n" for t in trees))
    chunks = list(load_chunks(_oasst_source(tmp_path, path), chunk_bytes=1))
    assert len(chunks) == 3  # one per tree, the broken line's counts carried by the next
    pool = merge_chunks(chunks)
    assert pool.rows["id"].to_list() == ["o/a0", "o/a1", "o/a2"]
    assert pool.counts == {"read": 4, "malformed": 1}


def test_records_read_by_orjson_equal_pythons_json_and_what_it_refuses_goes_to_json(monkeypatch):
    """Lines parsed one by one (OpenAssistant's trees, lines polars refuses) go to orjson first. Whatever it
    reads must equal Python's json, to the bits of every float; what it refuses (NaN, lone surrogates, integers
    past 64 bits, broken lines, other top-level values) must get json's result or error as before."""
    lines = [
        '{"a": 1, "a": 2, "b": [1.5, -0.0, 0.1, 5e-324, 1e308, 18446744073709551615, -9223372036854775808]}',
        '{"t": "caf\\u00e9 \\ud83d\\ude00 \\n\\t \\"q\\" \u2028", "n": null, "e": {}, "l": [[], [{}]]}\r',
        '{"nan": NaN, "inf": -Infinity}',
        '{"lone": "\\ud800"}',
        '{"big": 18446744073709551616, "neg": -9223372036854775809, "huge": 1e400}',
        '{"cut": ',
        "[1, 2]",
        '"text"',
        "\ufeff" + '{"bom": 1}',
        '{"replies": ' + "[" * 100_000 + "]" * 100_000 + "}",  # json's limit: ~1,000 levels, ~10,000 from 3.13
    ]
    data = "\n".join(lines).encode("utf-8") + b"\n" + b'{"bad": "\xff"}\n'
    fast = []
    parse = mixer.record_reader.fast_record
    monkeypatch.setattr(mixer.record_reader, "fast_record", lambda raw: fast.append(parse(raw)) or fast[-1])
    records, indexes, bad, spanned = mixer.record_reader.json_records(data)
    monkeypatch.setattr(mixer.record_reader, "fast_record", lambda raw: None)
    reference = mixer.record_reader.json_records(data)
    assert repr(records) == repr(reference[0]) and (indexes, bad, spanned) == reference[1:]
    assert [record is not None for record in fast] == [True, True] + [False] * 9  # orjson took the two it reads
    assert indexes == [0, 1, 2, 3, 4] and spanned == 11
    assert [reason.split(":")[0] for _, reason, _ in bad] == [
        "invalid JSON",
        "expected a JSON object, got a list",
        "expected a JSON object, got text",
        "invalid JSON",
        "nested more deeply than Python's json reads",
        "not UTF-8",
    ]


def test_a_record_nested_deeper_than_json_reads_is_a_malformed_line(tmp_path):
    deep = '{"prompt": ' + '{"replies": [' * 50_000 + "]}" * 50_000 + "}"  # past json's limit on every Python
    good = {
        "prompt": {
            "message_id": "p",
            "role": "prompter",
            "text": "q",
            "replies": [{"message_id": "a", "role": "assistant", "text": "a", "replies": []}],
        }
    }
    path = tmp_path / "t.trees.jsonl"
    path.write_text(json.dumps(good) + "\n" + deep + "\n")
    pool = merge_chunks(list(load_chunks(_oasst_source(tmp_path, path))))
    assert pool.rows["id"].to_list() == ["o/a"]
    assert pool.rejects.select("row", "reason").rows() == [(2, "line 2: nested more deeply than Python's json reads")]


def test_trees_of_the_wrong_shape_are_malformed_rows_not_a_crash(tmp_path):
    """A record of the trees export is free-form JSON: replies that are not a list of messages used to end the
    build with an AttributeError traceback."""

    def tree(n: int, **reply) -> dict:
        answer = {"message_id": f"a{n}", "role": "assistant", "text": "fine", "replies": []} | reply
        return {"prompt": {"message_id": f"p{n}", "role": "prompter", "text": "q", "replies": [answer]}}

    records = [
        {"prompt": {"message_id": "p0", "role": "prompter", "text": "q", "replies": "oops"}},
        {"prompt": {"message_id": "p1", "role": "prompter", "text": "q", "replies": [None]}},
        tree(2, text=42),
        tree(3, message_id=7),
        tree(4, rank="best"),
        tree(5),
    ]
    path = tmp_path / "odd.trees.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    pool = merge_chunks(list(load_chunks(_oasst_source(tmp_path, path))))
    assert pool.rows["id"].to_list() == ["o/a5"]
    assert pool.rejects.select("row", "reason").rows() == [
        (1, "a message whose `replies` is not a list of messages"),
        (2, "a message whose `replies` is not a list of messages"),
        (3, "a message whose `role`, `text` or `lang` is not text"),
        (4, "a message without a text `message_id`"),
        (5, "a message whose `rank` is not a number"),
    ]
