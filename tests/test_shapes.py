"""Records whose conversations have another shape than their neighbours': polars types a field once per chunk,
so one such record made a whole file refused, and OpenAI content parts became JSON inside the training text."""

from __future__ import annotations

import dataclasses
import json

import polars as pl
import pytest

from mixer.build import Options, build
from mixer.errors import MixerError
from mixer.load import load_chunks, merge_chunks
from mixer.resolve import resolve_recipe
from mixer.validate import load_recipe

from conftest import write_recipe

QUIET = Options(progress=False)


def turn(who: str, value) -> dict:
    return {"from": who, "value": value}


def pair(i: int) -> list[dict]:
    return [turn("human", f"question {i}"), turn("gpt", f"answer {i}")]


def mixed_sharegpt() -> list[dict]:
    """40 records; 7 of them of another shape than the rest, 2 of those usable (text content parts)."""
    records = [{"id": f"c{i}", "conversations": pair(i)} for i in range(40)]
    records[3]["conversations"] = "a conversation pasted as text"
    records[9]["conversations"] = 42
    records[14]["conversations"] = ["human: hi", "gpt: hello"]
    parts = [{"type": "text", "text": "Describe"}, {"type": "text", "text": "this."}]
    records[20]["conversations"] = [turn("human", parts), turn("gpt", [{"type": "text", "text": "It is a cat."}])]
    records[25]["conversations"] = [turn("human", [{"type": "image_url", "image_url": {"url": "x.png"}}])]
    records[30]["conversations"] = [turn("human", {"text": "an object"}), turn("gpt", "b")]
    records[33]["conversations"] = [{"from": 1, "value": "q"}, turn("gpt", "a")]
    records[36]["conversations"] = [turn("human", [{"type": "text", "text": "one part"}]), turn("gpt", "ok")]
    return records


EXPECTED_REJECTS = [
    (4, "field 'conversations' is text, expected a list of {from, value}"),
    (10, "field 'conversations' is a number, expected a list of {from, value}"),
    (15, "turn 1 of 'conversations' is text, expected an object"),
    (26, "turn 1 of 'conversations': content part 1 is of type 'image_url'; a text mixture takes only 'text' parts"),
    (31, "turn 1 of 'conversations': content is an object, expected text or a list of content parts"),
    (34, "unknown role '1'"),
]


def _source(tmp_path, file: str, fmt: str = "sharegpt", on_error: str = "quarantine", take: str = "all"):
    recipe = load_recipe(
        write_recipe(
            tmp_path, f"name: s\nsources:\n  s: {{path: {file}, format: {fmt}, take: {take}, on_error: {on_error}}}\n"
        )
    )
    [source] = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    return source


@pytest.mark.parametrize("chunk_bytes", [1 << 30, 300])
@pytest.mark.parametrize("layout", ["jsonl", "json"])
def test_records_of_another_shape_are_malformed_rows_and_text_parts_are_joined(tmp_path, layout, chunk_bytes):
    records = mixed_sharegpt()
    path = tmp_path / f"s.{layout}"
    if layout == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1))
    pool = merge_chunks(list(load_chunks(_source(tmp_path, path.name), chunk_bytes=chunk_bytes)))

    assert pool.counts == {"read": 40, "malformed": 6}
    assert [(r["row"], r["reason"]) for r in pool.rejects.iter_rows(named=True)] == EXPECTED_REJECTS
    assert json.loads(pool.rejects["record"][3]) == records[25]  # quoted whole and as it was
    by_id = dict(zip(pool.rows["id"].to_list(), pool.rows["messages"].to_list(), strict=True))
    assert len(by_id) == 34
    assert by_id["s/c20"] == [
        {"role": "user", "content": "Describe\nthis."},
        {"role": "assistant", "content": "It is a cat."},
    ]
    assert by_id["s/c36"][0] == {"role": "user", "content": "one part"}
    assert by_id["s/c21"] == [{"role": "user", "content": "question 21"}, {"role": "assistant", "content": "answer 21"}]


def test_with_on_error_error_the_misshapen_records_are_named(tmp_path):
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed_sharegpt()))
    recipe = write_recipe(tmp_path, "name: s\nsources:\n  s: {path: s.jsonl, format: sharegpt, take: all}\n")
    with pytest.raises(MixerError) as info:
        build(recipe, QUIET, out=tmp_path / "o")
    text = str(info.value)
    assert "sources.s: 6 malformed record(s)" in text
    assert "s.jsonl: row 4: field 'conversations' is text, expected a list of {from, value}" in text
    assert "... and 1 more" in text


def test_text_that_looks_like_json_stays_text(tmp_path):
    """Replies that are JSON documents send their chunk down the record-by-record path; it must give the
    rows polars' own path gives."""
    replies = ['{"name": "x", "tags": ["a"]}', "[1, 2, 3]", "[Verse 1] la la", "{not json"]
    records = [
        {"id": f"c{i}", "conversations": [turn("human", f"q {i}"), turn("gpt", r)]} for i, r in enumerate(replies)
    ]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pool = merge_chunks(list(load_chunks(_source(tmp_path, "s.jsonl"))))
    assert pool.counts == {"read": 4, "malformed": 0}
    assert [m[1]["content"] for m in pool.rows["messages"].to_list()] == replies


def test_parts_and_roles_that_polars_writes_as_broken_json_are_still_read_record_by_record(tmp_path):
    """polars writes the strings inside a nested value it typed as text without escaping their backslashes,
    so its text of content parts holding one did not parse as JSON: the parts went into the training text as
    that text. A role that is an object was named an unknown role instead of the object it is. (Both found by
    fuzzing chunked against whole-file reading.)"""
    records = [{"id": f"c{i}", "conversations": pair(i)} for i in range(4)]
    tricky = 'C:\\dir\\ and a "quote"\\'
    records[1]["conversations"][0]["value"] = [{"type": "text", "text": tricky}]
    records[2]["conversations"][0]["from"] = {"k": "v"}
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pool = merge_chunks(list(load_chunks(_source(tmp_path, "s.jsonl"))))
    assert pool.counts == {"read": 4, "malformed": 1}
    assert pool.rows["messages"][1].to_list()[0] == {"role": "user", "content": tricky}
    assert pool.rejects.select("row", "reason").rows() == [
        (3, "turn 1 of 'conversations': 'from' is an object, expected text")
    ]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_file_of_content_parts_is_read_as_text(tmp_path, kind):
    """Every record in OpenAI's content-part form: polars types content as a list of parts, which the
    messages adapter could not read at all."""
    records = [
        {
            "id": f"m{i}",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": f"part a {i}"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [{"type": "text", "text": f"reply {i}"}]},
            ],
        }
        for i in range(5)
    ]
    records[2]["messages"][0]["content"].append({"type": "input_audio", "input_audio": {"data": "AAAA"}})
    frame = pl.DataFrame(records)
    if kind == "jsonl":
        frame.write_ndjson(tmp_path / "m.jsonl")
    else:
        frame.write_parquet(tmp_path / "m.parquet")
    pool = merge_chunks(list(load_chunks(_source(tmp_path, f"m.{kind}", fmt="messages"))))
    assert pool.counts == {"read": 5, "malformed": 1}
    assert pool.rejects.select("row", "reason").rows() == [
        (3, "turn 1 of 'messages': content part 3 is of type 'input_audio'; a text mixture takes only 'text' parts")
    ]
    assert pool.rows["messages"][0].to_list() == [
        {"role": "user", "content": "part a 0\nb"},
        {"role": "assistant", "content": "reply 0"},
    ]
    assert pool.rows["id"].to_list() == ["s/m0", "s/m1", "s/m3", "s/m4"]


def test_preference_fields_may_mix_text_and_turn_lists(tmp_path):
    """A prompt given as text in one pair and as a list of turns in the next: polars typed the field as text
    and the list became the prompt's words."""
    pairs = [
        {"prompt": "plain prompt", "chosen": "good", "rejected": "bad"},
        {
            "prompt": [{"role": "user", "content": "listed prompt"}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "good too"}]}],
            "rejected": "worse",
        },
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    source = dataclasses.replace(_source(tmp_path, "p.jsonl", fmt="messages"), format="preference")  # a DPO stage's
    pool = merge_chunks(list(load_chunks(source)))
    assert pool.counts == {"read": 2, "malformed": 0}
    assert pool.rows["prompt"].to_list() == [
        [{"role": "user", "content": "plain prompt"}],
        [{"role": "user", "content": "listed prompt"}],
    ]
    assert pool.rows["chosen"][1].to_list() == [{"role": "assistant", "content": "good too"}]


@pytest.mark.parametrize("chunk_bytes", [1 << 30, 150])
@pytest.mark.parametrize("others", ["text", "turns"])
def test_a_preference_reply_given_as_a_number_is_its_text(tmp_path, others, chunk_bytes):
    """Beside text replies polars types the field as text, and a number became its text; beside turn lists
    the chunk was read record by record, where it was "field 'rejected' is a number": the same pair kept or
    dropped by its neighbours (found by fuzzing chunked reading against whole). Numbers are written as polars
    writes them into text, never with an exponent."""
    reply = "b" if others == "text" else [{"role": "assistant", "content": "b"}]
    pairs = [
        {"prompt": "q", "chosen": "a", "rejected": reply},
        {"prompt": "sum?", "chosen": 7, "rejected": 2.5e-7},
        {"prompt": "ok?", "chosen": True, "rejected": 1e16},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    source = dataclasses.replace(_source(tmp_path, "p.jsonl", fmt="messages"), format="preference")
    pool = merge_chunks(list(load_chunks(source, chunk_bytes=chunk_bytes)))
    assert pool.counts == {"read": 3, "malformed": 0}
    assert [turns[0]["content"] for turns in pool.rows["chosen"].to_list()] == ["a", "7", "true"]
    assert [turns[0]["content"] for turns in pool.rows["rejected"].to_list()] == [
        "b",
        "0.00000025",
        "10000000000000000",
    ]


@pytest.mark.parametrize(
    ("conversations", "fmt", "fits"),
    [
        ([["hi", "hello"], ["q", "a"]], "sharegpt", "turns"),
        ([[turn("human", "hi"), turn("gpt", "yo")]], "turns", "sharegpt"),
    ],
)
def test_a_source_whose_every_record_is_malformed_is_told_the_format_its_fields_fit(tmp_path, conversations, fmt, fits):
    """LIMA's alternating texts read as ShareGPT turns (or the other way round) made every record malformed, and
    the hint said to fix the data; one usable record keeps that hint. JSON arrays (how ShareGPT exports ship)
    and parquet are looked at as JSON lines are."""
    hint = f"every record is malformed as {fmt}; the file's fields are those of format: {fits}"
    (tmp_path / "c.json").write_text(json.dumps([{"conversations": c} for c in conversations], indent=2))
    pl.DataFrame({"conversations": conversations}).write_parquet(tmp_path / "c.parquet")
    for name in ("c.json", "c.parquet"):
        with pytest.raises(MixerError) as refused:
            list(load_chunks(_source(tmp_path, name, fmt=fmt, on_error="error")))
        assert refused.value.hint == hint, name
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"conversations": c}) + "\n" for c in conversations))
    with pytest.raises(MixerError) as refused:
        list(load_chunks(_source(tmp_path, "c.jsonl", fmt=fmt, on_error="error")))
    assert refused.value.hint == hint
    good = {"conversations": [turn("human", "q"), turn("gpt", "a")] if fmt == "sharegpt" else ["q", "a"]}
    with (tmp_path / "c.jsonl").open("a") as fh:
        fh.write(json.dumps(good) + "\n")
    with pytest.raises(MixerError) as refused:
        list(load_chunks(_source(tmp_path, "c.jsonl", fmt=fmt, on_error="error")))
    assert refused.value.hint.startswith("fix the data, or set `on_error: skip`")


def test_a_file_of_empty_replies_is_told_it_fits_prompts_only_as_a_seed_pool(tmp_path):
    """Every output empty: as an evolve block's seeds (`take: 0`) the file is prompts; a source that adds rows
    was told so too, and validation then refused `format: prompts` there (prompts only seed blocks)."""
    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"instruction": f"q{i}", "output": ""}) + "\n" for i in range(3))
    )
    for take, hint in (
        ("0", "every record is malformed as alpaca; the file's fields are those of format: prompts"),
        # setting every record aside would leave no row: the hint is the data, or the format and fields
        ("all", "every record is malformed as alpaca: fix the data, or check that the source's `format:` and"),
    ):
        with pytest.raises(MixerError) as refused:
            list(load_chunks(_source(tmp_path, "a.jsonl", fmt="alpaca", on_error="error", take=take)))
        assert refused.value.hint.startswith(hint), take


@pytest.mark.parametrize("chunk_bytes", [1 << 30, 120])
def test_alternating_text_turns_of_another_shape_are_malformed_rows(tmp_path, chunk_bytes):
    """LIMA's format: a turn is its text. One record whose conversation is text, or whose turn is an object,
    made polars type the field as text and the adapter refuse the file."""
    records = [{"conversations": [f"question {i}", f"answer {i}"]} for i in range(12)]
    records[4]["conversations"] = "pasted as text"
    records[7]["conversations"] = ["hi", {"from": "gpt", "value": "hello"}]
    records[9]["conversations"] = ["what is 6 x 7?", 42]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pool = merge_chunks(list(load_chunks(_source(tmp_path, "t.jsonl", fmt="turns"), chunk_bytes=chunk_bytes)))
    assert pool.counts == {"read": 12, "malformed": 2}
    assert pool.rejects.select("row", "reason").rows() == [
        (5, "field 'conversations' is text, expected a list of texts"),
        (8, "turn 2 of 'conversations' is an object, expected text"),
    ]
    by_id = dict(zip(pool.rows["id"].to_list(), pool.rows["messages"].to_list(), strict=True))
    assert by_id["s/9"] == [{"role": "user", "content": "what is 6 x 7?"}, {"role": "assistant", "content": "42"}]
    assert by_id["s/0"] == [{"role": "user", "content": "question 0"}, {"role": "assistant", "content": "answer 0"}]


@pytest.mark.parametrize("chunk_bytes", [1 << 30, 300])
def test_a_broken_line_beside_records_of_another_shape(tmp_path, chunk_bytes):
    """polars refuses a chunk with a broken line; the line-by-line path after it must still sort the records
    by shape (and, without one to sort, keep building its frame from the parsed objects)."""
    records = [{"id": f"c{i}", "conversations": pair(i)} for i in range(12)]
    records[5]["conversations"] = "pasted as text"
    records[7]["conversations"][1]["value"] = [{"type": "text", "text": "from parts"}]
    lines = [json.dumps(r) for r in records]
    lines.insert(6, '{"id": "broken", "conversations": [')
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    pool = merge_chunks(list(load_chunks(_source(tmp_path, "s.jsonl"), chunk_bytes=chunk_bytes)))
    assert pool.counts == {"read": 13, "malformed": 2}
    reasons = [(r["row"], r["reason"].split(":")[0]) for r in pool.rejects.iter_rows(named=True)]
    assert reasons == [(6, "field 'conversations' is text, expected a list of {from, value}"), (7, "line 7")]
    by_id = dict(zip(pool.rows["id"].to_list(), pool.rows["messages"].to_list(), strict=True))
    assert by_id["s/c7"][1] == {"role": "assistant", "content": "from parts"}
    assert len(by_id) == 11


def flat_records(fmt: str) -> tuple[list[dict], str]:
    """14 records of a flat format, one reply a list; (records, the reply field's name)."""
    names = {"alpaca": ("instruction", "output"), "dolly": ("instruction", "response"), "flan": ("inputs", "targets")}
    ask, reply = names[fmt]
    records = [{ask: f"question {i}", reply: f"answer {i}"} for i in range(14)]
    records[5][reply] = ["first answer", "second answer"]
    records[9][reply] = "[1, 2, 3]"  # a text that looks like a list, as Code-Alpaca's do
    records[11][reply] = 'print({"output": [1]})'  # a text holding the field's name before a bracket
    return records, reply


@pytest.mark.parametrize("chunk_bytes", [1 << 30, 200])
@pytest.mark.parametrize("layout", ["jsonl", "json"])
@pytest.mark.parametrize("fmt", ["alpaca", "dolly", "flan"])
def test_a_list_in_a_text_field_is_a_malformed_row_not_its_json_in_the_text(tmp_path, fmt, layout, chunk_bytes):
    """polars types a field that is text in most records and a list in one as text, and wrote the list's JSON
    (`["first answer", "second answer"]`) as the reply that was trained on."""
    records, reply = flat_records(fmt)
    path = tmp_path / f"f.{layout}"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) if layout == "jsonl" else json.dumps(records))
    pool = merge_chunks(list(load_chunks(_source(tmp_path, path.name, fmt=fmt), chunk_bytes=chunk_bytes)))
    assert pool.counts == {"read": 14, "malformed": 1}
    assert pool.rejects.select("row", "reason").rows() == [(6, f"field {reply!r} is a list, expected text")]
    assert json.loads(pool.rejects["record"][0]) == records[5]
    replies = [m[-1]["content"] for m in pool.rows.sort("id")["messages"].to_list()]
    assert sorted(replies) == sorted(r[reply] for i, r in enumerate(records) if i != 5)


@pytest.mark.parametrize("chunk_bytes", [1 << 30, 200])
def test_lists_outside_the_text_fields_and_texts_that_look_like_lists_keep_polars_path(tmp_path, chunk_bytes):
    """A list in another field (LLaMA-Factory's `history`, tags) or a text that looks like a list is no list
    in a text field: no record is set aside, and every text is as written."""
    records = [
        {"instruction": f"q {i}", "output": f"a {i}", "tags": ["x"], "history": [["hi", "hello"]]} for i in range(10)
    ]
    records[3]["output"] = '[{"output": ["not a field"]}]'
    records[6]["input"] = "[Verse 1]"
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pool = merge_chunks(list(load_chunks(_source(tmp_path, "a.jsonl", fmt="alpaca"), chunk_bytes=chunk_bytes)))
    assert pool.counts == {"read": 10, "malformed": 0}
    by_id = dict(zip(pool.rows["id"].to_list(), pool.rows["messages"].to_list(), strict=True))
    assert by_id["s/3"][-1]["content"] == '[{"output": ["not a field"]}]'
    assert by_id["s/6"][-2]["content"] == "q 6\n\n[Verse 1]"


def test_a_mapped_text_field_is_checked_under_its_own_name(tmp_path):
    records = [{"prompt": f"q {i}", "completion": f"a {i}"} for i in range(6)]
    records[2]["completion"] = ["a", "list"]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = write_recipe(
        tmp_path,
        "name: s\nsources:\n  s: {path: m.jsonl, format: alpaca, take: all, on_error: quarantine,\n"
        "      fields: {instruction: prompt, output: completion}}\n",
    )
    [source] = resolve_recipe(load_recipe(recipe), data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    pool = merge_chunks(list(load_chunks(source)))
    assert pool.counts == {"read": 6, "malformed": 1}
    assert pool.rejects.select("row", "reason").rows() == [(3, "field 'completion' is a list, expected text")]


def test_a_list_in_a_text_field_of_one_small_file_among_many(tmp_path):
    """Small files are parsed as one text with the first one's schema (mixer.io.read_small_files), where
    polars writes a later file's list as text too."""
    (tmp_path / "parts").mkdir()
    for n in range(4):
        records = [{"instruction": f"q {n}.{i}", "output": f"a {n}.{i}"} for i in range(3)]
        if n == 2:
            records[1]["output"] = ["a", "list"]
        (tmp_path / "parts" / f"p{n}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pool = merge_chunks(list(load_chunks(_source(tmp_path, "'parts/*.jsonl'", fmt="alpaca"))))
    assert pool.counts == {"read": 12, "malformed": 1}
    assert pool.rejects.select("file", "row", "reason").rows() == [
        (str(tmp_path / "parts" / "p2.jsonl"), 2, "field 'output' is a list, expected text")
    ]


def test_a_chunk_whose_every_text_field_is_a_list_is_malformed_record_by_record(tmp_path):
    """polars types such a chunk's field as a list, which the adapter refused for the whole source, with
    `on_error: quarantine` set and ten good records before it."""
    records = [{"instruction": f"q {i}", "output": f"a {i}"} for i in range(10)]
    records += [{"instruction": f"q {i}", "output": ["x", "y"]} for i in range(10, 20)]
    (tmp_path / "two.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pool = merge_chunks(list(load_chunks(_source(tmp_path, "two.jsonl", fmt="alpaca"), chunk_bytes=300)))
    assert pool.counts == {"read": 20, "malformed": 10}
    assert pool.rejects.select("row", "reason").rows() == [
        (row, "field 'output' is a list, expected text") for row in range(11, 21)
    ]


@pytest.mark.parametrize("on_error", ["skip", "quarantine"])
def test_a_source_whose_every_record_is_set_aside_says_so(tmp_path, on_error):
    """It said "no records in all.jsonl" of a file of three records, all malformed."""
    records = [{"instruction": f"q {i}", "output": ["x", "y"]} for i in range(3)]
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(MixerError) as refused:
        list(load_chunks(_source(tmp_path, "all.jsonl", fmt="alpaca", on_error=on_error)))
    assert str(refused.value).startswith("sources.s: 3 malformed record(s):\n")
    assert f"{tmp_path / 'all.jsonl'}: row 1: field 'output' is a list, expected text" in str(refused.value)
    assert refused.value.hint == (
        f"`on_error: {on_error}` set them all aside, which leaves the source no row: fix the data, or check that "
        "the source's `format:` and `fields:` fit it"
    )


def _csv(path, header, rows):
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.mark.parametrize("chunk_bytes", [1 << 30, 200])
def test_conversations_written_as_json_text_in_a_csv_are_read_as_turns(tmp_path, chunk_bytes):
    """A CSV can hold no list, so an export writes each conversation as its JSON: the source was refused
    ("field 'messages' is String") with a hint to map `messages` to another field."""
    turns = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(4)]
    rows = [[i, json.dumps(t)] for i, t in enumerate(turns)]
    rows[2][1] = "not a conversation"
    _csv(tmp_path / "m.csv", ["id", "messages"], rows)
    pool = merge_chunks(list(load_chunks(_source(tmp_path, "m.csv", fmt="messages"), chunk_bytes=chunk_bytes)))
    assert pool.counts == {"read": 4, "malformed": 1}
    assert pool.rejects.select("row", "reason").rows() == [
        (3, "field 'messages' is text, expected a list of {role, content}")
    ]
    by_id = dict(zip(pool.rows["id"].to_list(), pool.rows["messages"].to_list(), strict=True))
    assert by_id == {f"s/{i}": turns[i] for i in (0, 1, 3)}


def test_preference_replies_written_as_json_turns_are_turns_and_json_replies_stay_text(tmp_path):
    """Pairs exported to CSV write each reply's turns as JSON, which was read as one assistant reply holding
    that JSON. A reply that is JSON of something else is a reply."""

    def turns(text):
        return json.dumps([{"role": "assistant", "content": text}])

    rows = [["q1", turns("good"), turns("bad")], ["q2", '{"answer": 4}', "[1, 2]"]]
    _csv(tmp_path / "pairs.csv", ["prompt", "chosen", "rejected"], rows)
    source = dataclasses.replace(_source(tmp_path, "pairs.csv", fmt="messages"), format="preference")  # a DPO stage's
    pool = merge_chunks(list(load_chunks(source)))
    assert pool.counts == {"read": 2, "malformed": 0}
    pairs = {r["prompt"][0]["content"]: r for r in pool.rows.to_dicts()}
    assert (pairs["q1"]["chosen"], pairs["q1"]["rejected"]) == (
        [{"role": "assistant", "content": "good"}],
        [{"role": "assistant", "content": "bad"}],
    )
    assert (pairs["q2"]["chosen"], pairs["q2"]["rejected"]) == (
        [{"role": "assistant", "content": '{"answer": 4}'}],
        [{"role": "assistant", "content": "[1, 2]"}],
    )


def test_a_conversation_encoded_twice_in_json_lines_is_read(tmp_path):
    records = [{"id": f"c{i}", "conversations": json.dumps(pair(i))} for i in range(3)]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pool = merge_chunks(list(load_chunks(_source(tmp_path, "s.jsonl"))))
    assert pool.counts == {"read": 3, "malformed": 0}
    assert pool.rows.sort("id")["messages"][0].to_list() == [
        {"role": "user", "content": "question 0"},
        {"role": "assistant", "content": "answer 0"},
    ]
