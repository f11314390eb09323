"""The fast reading paths must give what the plain one gives: a file read in chunks (each borrowing the schema
of the one before) what it gives read whole, and a run of small files parsed as one text what each gives read
alone. Rows, counts and rejects, for random records of each conversation format with the awkward parts real
exports have (nulls, missing keys, JSON-like text, content parts, broken lines), from fixed seeds.

Random files of this kind found five bugs where the paths disagreed (CHANGELOG, "Fixed"): turns quarantined
after a chunk where their role key was null, content parts written into the text as JSON, the text "null" for
a missing object, preference pairs kept with a null prompt, and small files lacking a field read as malformed
rows; numbers where text belongs found two more (a preference reply `7` kept on one path and malformed on
the other, and three ways of writing a float). Records with objects or lists where text belongs are left out:
polars writes those as text in its own way when a field mixes them (`{"k": "v"}` against `{"k":"v"}`), which
no path can undo.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import mixer.io
import mixer.load
from mixer.errors import MixerError
from mixer.load import load_chunks, merge_chunks
from mixer.resolve import resolve_recipe
from mixer.shapes import value_text
from mixer.validate import load_recipe

from conftest import write_recipe

FORMATS = ["alpaca", "sharegpt", "messages", "preference"]
PIECES = ['"', "\\", "[", "]", "{", "}", ",", ":", " ", "\n", "é", "\u2028", '}, {"id"', '"from"', "null"]


def _text(rng: random.Random, mixed: bool = False) -> str | float | None:
    """Text, or (`mixed`) now and then a number, which is text where text belongs, as polars writes it."""
    if rng.random() < 0.04:
        return rng.choice([None, "", " "])
    if mixed and rng.random() < 0.03:
        return rng.choice([7, -3, 2.0, 1.5, 2.5e-7, 1e16, True, False])
    return "".join(rng.choice(PIECES) if rng.random() < 0.3 else rng.choice("abc ") for _ in range(rng.randint(0, 24)))


def _turns(
    rng: random.Random, keys: tuple[str, str], roles: tuple[str, str], nulls: bool, mixed: bool = True
) -> list[dict]:
    role_key, content_key = keys
    turns = []
    for j in range(rng.randint(1, 4)):
        content: Any = _text(rng, mixed)
        if mixed and content_key == "content" and rng.random() < 0.1:  # OpenAI content parts
            content = [{"type": "text", "text": _text(rng) or "x"} for _ in range(rng.randint(1, 2))]
        turns.append({role_key: None if nulls else roles[j % 2], content_key: content})
    return turns


def _side(rng: random.Random, nulls: bool, mixed: bool) -> str | list[dict] | None:
    """A preference prompt or reply: text, or turns (always turns unless `mixed`)."""
    if mixed and rng.random() < 0.4:
        return _text(rng, mixed)
    return _turns(rng, ("role", "content"), ("user", "assistant"), nulls, mixed)


def _record(rng: random.Random, fmt: str, index: int, nulls: bool, mixed: bool) -> dict:
    """One record; `nulls`: its turns' roles are all null (the first records of some files are so); `mixed`:
    with content parts among text contents, and preference text among turn lists (which the joined parse of
    small files refuses, so some runs go without)."""
    record: dict[str, Any]
    if fmt == "alpaca":
        record = {
            "instruction": _text(rng, mixed),
            "input": _text(rng, mixed) if rng.random() < 0.5 else "",
            "output": _text(rng, mixed),
        }
        if rng.random() < 0.3:
            record["system"] = _text(rng, mixed)
    elif fmt == "sharegpt":
        record = {"conversations": _turns(rng, ("from", "value"), ("human", "gpt"), nulls, mixed)}
    elif fmt == "messages":
        record = {"messages": _turns(rng, ("role", "content"), ("user", "assistant"), nulls, mixed)}
    else:
        record = {"chosen": _side(rng, nulls, mixed), "rejected": _side(rng, nulls, mixed)}
        if rng.random() < 0.7:
            record["prompt"] = None if rng.random() < 0.1 else _side(rng, nulls, mixed)
    if rng.random() < 0.3:
        record["id"] = f"r{index}"
    return record


def _write(rng: random.Random, path: Path, records: list[dict], array: bool) -> Path:
    if array:
        text = json.dumps(records, indent=rng.choice([None, 1]), ensure_ascii=rng.random() < 0.5)
    else:
        lines = [json.dumps(r, ensure_ascii=rng.random() < 0.5) for r in records]
        if rng.random() < 0.15:
            lines.insert(rng.randrange(len(lines) + 1), '{"broken": ')
        if rng.random() < 0.15:
            lines.insert(rng.randrange(len(lines) + 1), " ")
        text = ("\r\n" if rng.random() < 0.2 else "\n").join(lines) + "\n"
    data = (b"\xef\xbb\xbf" if rng.random() < 0.1 else b"") + text.encode()
    if rng.random() < 0.2:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _records(rng: random.Random, fmt: str, count: int, mixed: bool = True) -> list[dict]:
    leading_nulls = rng.randint(1, 4) if fmt != "alpaca" and rng.random() < 0.3 else 0
    return [_record(rng, fmt, i, i < leading_nulls, mixed) for i in range(count)]


def _load(tmp_path: Path, fmt: str, pattern: str, chunk_bytes: int) -> tuple:
    """(status, rows, counts, rejects) or ("error", message) of loading the files `pattern` names."""
    stand_in = "alpaca" if fmt == "preference" else fmt  # preference data is a DPO stage's, not a mixture's
    text = f"name: p\nsources:\n  s: {{path: '{pattern}', format: {stand_in}, take: all, on_error: quarantine}}\n"
    [source] = resolve_recipe(
        load_recipe(write_recipe(tmp_path, text)), data_dir=None, sample=False, cache_dir=tmp_path / "cache"
    )
    source = dataclasses.replace(source, format=fmt)
    try:
        pool = merge_chunks(list(load_chunks(source, chunk_bytes=chunk_bytes)))
    except MixerError as exc:
        return ("error", str(exc))
    rejects = pool.rejects if pool.rejects is not None else pl.DataFrame()
    return ("ok", pool.rows, pool.counts, rejects.sort("file", "row", "reason") if rejects.height else rejects)


def _quoted(record: str) -> Any:
    """A quoted reject as what it says: its fields in any order, the ones it does not have (null) left out, and
    numbers as their text (a chunk polars typed as text quotes a number as the text it became)."""
    try:
        value = json.loads(record, parse_float=lambda text: value_text(float(text)), parse_int=str)
    except ValueError:
        return record  # a line that was not JSON, quoted as it was
    return {k: _numbers_as_text(v) for k, v in value.items() if v is not None} if isinstance(value, dict) else value


def _numbers_as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, list):
        return [_numbers_as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers_as_text(v) for k, v in value.items()}
    return value


def _assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0], (a[1] if a[0] == "error" else a[2], b[1] if b[0] == "error" else b[2])
    if a[0] == "error":
        assert a[1] == b[1]
        return
    assert a[2] == b[2]
    assert a[1].equals(b[1])
    if a[3].height or b[3].height:
        assert a[3].drop("record").equals(b[3].drop("record"))
        assert [_quoted(r) for r in a[3]["record"]] == [_quoted(r) for r in b[3]["record"]]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", ["lines", "array"])
def test_a_file_read_in_chunks_gives_what_it_gives_read_whole(tmp_path, fmt, layout):
    for seed in range(12):
        rng = random.Random(f"{fmt}-{layout}-{seed}")
        folder = tmp_path / f"{seed}"
        folder.mkdir()
        records = _records(rng, fmt, rng.randint(5, 40))
        _write(rng, folder / ("a.json" if layout == "array" else "a.jsonl"), records, layout == "array")
        whole = _load(folder, fmt, "a.*", 1 << 30)
        chunked = _load(folder, fmt, "a.*", rng.choice([300, 1000]))
        _assert_same(chunked, whole)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", ["lines", "array"])
def test_small_files_parsed_together_give_what_each_gives_read_alone(tmp_path, monkeypatch, fmt, layout):
    joined = 0
    for seed in range(12):
        rng = random.Random(f"small-{fmt}-{layout}-{seed}")
        folder = tmp_path / f"{seed}"
        (folder / "in").mkdir(parents=True)
        for f in range(rng.randint(2, 5)):
            records = _records(rng, fmt, rng.randint(1, 6), mixed=seed % 2 == 0)
            _write(
                rng, folder / "in" / (f"p{f}.json" if layout == "array" else f"p{f}.jsonl"), records, layout == "array"
            )
        parsed: list[bool] = []

        def read(*args, parsed=parsed, **kwargs):
            tables = mixer.io.read_small_files(*args, **kwargs)
            parsed.append(tables is not None)
            return tables

        monkeypatch.setattr(mixer.load, "read_small_files", read)
        together = _load(folder, fmt, "in/*", 1 << 30)
        monkeypatch.setattr(mixer.load, "read_small_files", lambda *a, **k: None)
        alone = _load(folder, fmt, "in/*", 1 << 30)
        _assert_same(together, alone)
        joined += any(parsed)
    assert joined  # the joined path ran for some of the runs, or this compared a path with itself
