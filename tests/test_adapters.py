"""Adapters on the bundled samples and on the real public files: exact counts, role order, no empty turns."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from mixer.adapters import FORMATS, get_adapter
from mixer.adapters.base import Context
from mixer.build import Options, build
from mixer.errors import MixerError
from mixer.io import read_chunks, read_table
from mixer.load import load_pool
from mixer.registry import load_registry
from mixer.resolve import resolve_source
from mixer.validate import load_recipe

from conftest import run_mixer, write_recipe


def convert(path, fmt, fields=None, options=None):
    adapter = get_adapter(fmt)
    table = read_table(path, header=not adapter.headerless)
    ctx = Context({**adapter.fields, **(fields or {})}, {**adapter.options, **(options or {})}, str(path))
    return adapter.convert(table.frame, ctx)


def assert_well_formed(frame: pl.DataFrame) -> None:
    good = frame.filter(pl.col("__reason").is_null())
    for messages in good["messages"].to_list():
        roles = [m["role"] for m in messages]
        body = roles[1:] if roles[0] == "system" else roles
        assert body == ["user", "assistant"] * (len(body) // 2), roles
        assert all(m["content"].strip() for m in messages)


# (registry entry, rows in the sample file, usable rows, first-row roles)
SAMPLES = [
    ("alpaca", 36, 36, ["user", "assistant"]),
    ("gpt4_alpaca", 30, 30, ["user", "assistant"]),
    ("code_alpaca", 37, 37, ["user", "assistant"]),
    ("flan_v2", 40, 40, ["user", "assistant"]),
    ("cot", 36, 36, ["user", "assistant"]),
    ("dolly", 30, 30, ["user", "assistant"]),
    ("oasst1", 12, 12, ["user", "assistant", "user", "assistant"]),
    ("sharegpt", 30, 27, ["system", "user", "assistant", "user", "assistant"]),
    ("lima", 24, 24, ["user", "assistant", "user", "assistant"]),
    ("wizardlm_evol_instruct_v2", 30, 30, ["user", "assistant"]),
    ("open_orca", 30, 30, ["system", "user", "assistant"]),
    ("science", 24, 24, ["user", "assistant"]),
    ("tulu_hardcoded", 14, 14, ["user", "assistant"]),
]


@pytest.mark.parametrize(("name", "rows", "usable", "first_roles"), SAMPLES)
def test_bundled_samples(name, rows, usable, first_roles):
    entry = load_registry()[name]
    frame = convert(entry.sample, entry.format, entry.fields, entry.options)
    assert frame.height == rows
    assert frame.filter(pl.col("__reason").is_null()).height == usable
    assert [m["role"] for m in frame["messages"][0]] == first_roles
    assert_well_formed(frame)


def test_hub_revisions_are_commits_or_still_the_moving_main():
    import re

    revisions = {name: entry.hub.revision for name, entry in load_registry().items() if entry.hub}
    pinned = {name for name, rev in revisions.items() if re.fullmatch(r"[0-9a-f]{40}", rev)}
    assert pinned == {
        "alpaca",
        "dolly",
        "lima",
        "oasst1",
        "science",
        "sharegpt",
        "tulu_hardcoded",
        "ultrafeedback",
        "wizardlm_evol_instruct_v2",
    }
    # the others follow main, which recipe.lock pins per recipe to the commit first read
    assert {rev for name, rev in revisions.items() if name not in pinned} == {"main"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "sampel: s.jsonl\n",
            "missing sample; unknown key(s) sampel (known: citation, description, expected_rows, "
            "fields, format, homepage, hub, license, name, on_error, options, sample)",
        ),
        ("sample: s.jsonl\nhub: {id: x/y}\n", "hub: missing revision"),
    ],
)
def test_a_registry_entry_with_missing_or_unknown_keys_names_them(tmp_path, text, problem):
    """A user adding a dataset to sources/ got `invalid registry entry: 'sample'` for a misspelt key."""
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndescription: d\nformat: alpaca\nlicense: mit\ncitation: c\nexpected_rows: 3\n" + text)
    with pytest.raises(MixerError) as failed:
        load_registry(tmp_path)
    assert failed.value.message == f"{path}: invalid registry entry: {problem}"


def test_every_registry_entry_has_a_tested_sample():
    tested = {s[0] for s in SAMPLES} | {"ultrafeedback"}
    assert tested == set(load_registry())


def test_sharegpt_reasons_and_trimming():
    frame = convert(load_registry()["sharegpt"].sample, "sharegpt")
    reasons = dict(frame.select("native_id", "__reason").filter(pl.col("__reason").is_not_null()).iter_rows())
    assert reasons == {
        "sg_bad_gpt_first": "needs a user turn and an assistant turn",  # [gpt, human] minus the trailing human
        "sg_bad_empty_reply": "empty message",
        "sg_bad_double_human": "turns do not alternate user/assistant",
    }
    trimmed = frame.filter(pl.col("native_id") == "sg_006")["messages"][0]
    assert [m["role"] for m in trimmed][-1] == "assistant"  # the unanswered "thanks" was cut


def test_conversation_rules_give_every_role_sequence_the_reason_of_the_first_rule_it_breaks(tmp_path):
    """Every sequence of up to six system/user/assistant turns, against the rules written out in Python: an
    optional leading system turn, then user and assistant alternating from user, ending with assistant."""

    def expected(roles: tuple[str, ...]) -> str | None:
        body = roles[1:] if roles[:1] == ("system",) else roles
        if not roles:
            return "empty conversation"
        if len(body) < 2:
            return "needs a user turn and an assistant turn"
        if body[0] == "assistant":
            return "first turn is from the assistant"
        if any(role != ("user", "assistant")[i % 2] for i, role in enumerate(body)):
            return "turns do not alternate user/assistant"
        return None if body[-1] == "assistant" else "last turn is not from the assistant"

    sequences = [s for n in range(7) for s in itertools.product(("system", "user", "assistant"), repeat=n)]
    path = tmp_path / "m.jsonl"
    path.write_text(
        "".join(json.dumps({"messages": [{"role": r, "content": "x"} for r in s]}) + "\n" for s in sequences)
    )
    reasons = convert(path, "messages", options={"trim_trailing_user": False})["__reason"].to_list()
    assert len(sequences) == 1093
    assert reasons == [expected(s) for s in sequences]


def test_a_messages_files_system_field_is_its_system_turn_where_a_row_has_none(tmp_path):
    """A `system` prompt kept beside the turns (as ShareGPT exports keep theirs) was dropped without a word,
    and `fields: {system: ...}` was refused: the format had no such field."""
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    own = [{"role": "system", "content": "Own"}, *turns]
    records = [
        {"system": "Be brief.", "messages": turns},
        {"system": " ", "messages": turns},
        {"system": "Outer", "messages": own},  # the row's own system turn is kept, as `system:` keeps it
        {"messages": turns},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    frame = convert(path, "messages")
    assert frame["__reason"].null_count() == 4
    assert frame["messages"].to_list() == [[{"role": "system", "content": "Be brief."}, *turns], turns, own, turns]
    renamed = tmp_path / "r.jsonl"
    renamed.write_text(json.dumps({"prompt_system": "Be brief.", "messages": turns}) + "\n")
    mapped = convert(renamed, "messages", fields={"system": "prompt_system"})
    assert mapped["messages"].to_list() == [[{"role": "system", "content": "Be brief."}, *turns]]
    sharegpt = tmp_path / "s.jsonl"  # ShareGPT alike: its row with both had two system turns, and was refused
    turns_of = [{"from": "system", "value": "Own"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    sharegpt.write_text(json.dumps({"system": "Outer", "conversations": turns_of}) + "\n")
    assert convert(sharegpt, "sharegpt")["messages"].to_list() == [own]


def test_system_first_puts_a_system_turn_first_where_a_conversation_has_none_and_leaves_the_rest_as_they_are():
    """Built in long form (a row per turn, grouped back) since `concat_list` of structs took 3.7 s per million
    rows; checked here against the rule written out in Python, over every case that long form could get wrong:
    a null conversation, an empty one, a null turn, a row led by its own system turn, and rows left out."""
    from mixer.adapters.base import blank, system_first

    rng = random.Random(7)
    roles = ["system", "user", "assistant", None]
    conversations = [None, [], [None]] + [
        [
            None if rng.random() < 0.05 else {"role": rng.choice(roles), "content": rng.choice(["a", None])}
            for _ in range(rng.randint(1, 4))
        ]
        for _ in range(400)
    ]
    systems = [rng.choice([None, "", " ", "s", "t"]) for _ in conversations]
    schema = {"messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String})), "system": pl.String}
    frame = pl.DataFrame({"messages": conversations, "system": systems}, schema=schema)

    def expected(turns, system, where):
        led = bool(turns) and turns[0] is not None and turns[0]["role"] == "system"
        if turns is None or led or not where:
            return turns
        return [{"role": "system", "content": system}, *turns]

    field = system_first(frame, "messages", pl.col("system"), where=~blank(pl.col("system")))
    wanted = [expected(t, s, s is not None and s.strip() != "") for t, s in zip(conversations, systems, strict=True)]
    assert field["messages"].to_list() == wanted and field["system"].to_list() == systems
    recipe = system_first(frame, "messages", pl.lit("r"))
    assert recipe["messages"].to_list() == [expected(t, "r", True) for t in conversations]


def test_sharegpt_drops_a_leading_reply_when_asked_as_fastchat_does_and_the_error_says_how(tmp_path):
    """Scraped ShareGPT pages often open with the end of a reply; FastChat's training drops such a first turn.
    They were refused as "turns do not alternate user/assistant", with a hint to skip them."""
    conversations = [
        [("gpt", "Hello!"), ("human", "q"), ("gpt", "a")],
        [("system", "s"), ("gpt", "Hello!"), ("human", "q"), ("gpt", "a")],
        [("gpt", "x"), ("gpt", "y"), ("human", "q"), ("gpt", "a")],  # one turn is dropped, not every reply
        [("gpt", "only")],
        [("human", "q"), ("gpt", "a")],
    ]
    path = tmp_path / "s.jsonl"
    path.write_text(
        "".join(json.dumps({"conversations": [{"from": f, "value": v} for f, v in c]}) + "\n" for c in conversations)
    )
    first = "first turn is from the assistant"
    assert convert(path, "sharegpt")["__reason"].to_list() == [
        first,
        first,
        first,
        "needs a user turn and an assistant turn",
        None,
    ]
    trimmed = convert(path, "sharegpt", options={"trim_leading_assistant": True})
    assert trimmed["__reason"].to_list() == [None, None, first, "empty conversation", None]
    roles = [[m["role"] for m in c] for c in trimmed["messages"].to_list()]
    assert roles[:2] == [["user", "assistant"], ["system", "user", "assistant"]]

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsources:\n  chats: {path: s.jsonl, format: sharegpt, take: all}\n")
    with pytest.raises(MixerError) as refused:
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "out")
    assert refused.value.hint.startswith(
        "a ShareGPT page often opens with the end of a reply: set `options: {trim_leading_assistant: true}` to "
        "drop such a first turn, as FastChat's training does, or set `on_error: skip`"
    )
    recipe.write_text(recipe.read_text().replace("take: all", "take: all, options: {trim_leading_assistant: true}"))
    with pytest.raises(MixerError) as still:  # set: the two rows it cannot mend are named, without that advice
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "out")
    assert still.value.message.startswith("sources.chats: 2 malformed record(s)")
    assert still.value.hint.startswith("fix the data, or set `on_error: skip`")


def test_sharegpt_turn_keys_are_options_and_a_trailing_user_turn_is_trimmed_or_refused(tmp_path):
    """ShareGPT exports differ in their turn keys (`from`/`value`, or `role`/`content` as LLaMA-Factory's
    sharegpt format allows); a conversation cut after a user turn is trimmed to its last reply by default."""
    path = tmp_path / "s.jsonl"
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "?"},
    ]
    path.write_text(json.dumps({"conversations": turns}) + "\n")
    keys = {"role_key": "role", "content_key": "content"}
    trimmed = convert(path, "sharegpt", options=keys)
    assert trimmed["messages"].to_list() == [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    ]
    kept = convert(path, "sharegpt", options={**keys, "trim_trailing_user": False})
    assert kept["__reason"].to_list() == ["last turn is not from the assistant"]
    with pytest.raises(MixerError, match=r"conversation turns have keys \['content', 'role'\], expected 'from'"):
        convert(path, "sharegpt")


def test_an_unknown_role_is_named(tmp_path):
    """Tool-use turns (LLaMA-Factory's function_call and observation, OpenAI's tool) are not SFT turns here;
    the reason used to be "unknown role" without saying which."""
    path = tmp_path / "s.jsonl"
    turns = [
        [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{}"}, {"from": "gpt", "value": "a"}],
        [{"value": "q"}, {"from": "gpt", "value": "a"}],
        [{"from": "Human", "value": "q"}, {"from": "GPT", "value": "a"}],
    ]
    path.write_text("".join(json.dumps({"conversations": t}) + "\n" for t in turns))
    assert convert(path, "sharegpt")["__reason"].to_list() == [
        "unknown role 'function_call'",
        "a turn without a role",
        None,
    ]
    path = tmp_path / "m.jsonl"
    messages = [
        {"role": "user", "content": "q"},
        {"role": "tool", "content": "x"},
        {"role": "assistant", "content": "a"},
    ]
    path.write_text(json.dumps({"messages": messages}) + "\n")
    assert convert(path, "messages")["__reason"].to_list() == ["unknown role 'tool'"]

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsources:\n  chats: {path: m.jsonl, format: messages, take: all}\n")
    with pytest.raises(MixerError) as refused:  # the hint says why, where it only said "fix the data"
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "out")
    assert refused.value.hint == (
        "a row's turns are system, user and assistant; tool-use turns (tool, function, observation) have no place "
        "in them: set `on_error: skip` (drop and count) or `on_error: quarantine` (also write them to rejects/) on "
        "source 'chats'"
    )


def test_oasst_flat_table_top1_and_all_paths():
    sample = load_registry()["oasst1"].sample
    top1 = convert(sample, "oasst", options={"top_k_reply": 1})
    every = convert(sample, "oasst", options={"top_k_reply": None})
    assert (top1.height, every.height) == (12, 23)
    # tree 05: its best reply is deleted, so the path follows the next-ranked one
    tree5 = top1.filter(pl.col("native_id").str.starts_with("05-"))
    assert tree5["native_id"].to_list() == ["05-a1"]
    # tree 03: the unanswered follow-up question is trimmed away
    tree3 = top1.filter(pl.col("native_id").str.starts_with("03-"))
    assert [m["role"] for m in tree3["messages"][0]] == ["user", "assistant"]
    assert set(top1["lang"].to_list()) == {"en", "es", "de", "fr", "zh"}


def test_oasst_flat_table_follows_rank_not_file_order_and_ignores_the_metadata_columns(tmp_path):
    """The walk reads a few columns of the flat table; the nested metadata (labels, emojis) is left in polars."""
    meta = {"labels": {"quality": {"value": 0.5, "count": 3}}, "emojis": {"+1": 2}}
    messages = [
        {"message_id": "p", "parent_id": None, "role": "prompter", "text": "question", "lang": "de", **meta},
        {"message_id": "worse", "parent_id": "p", "role": "assistant", "text": "worse", "rank": 1, **meta},
        {"message_id": "best", "parent_id": "p", "role": "assistant", "text": "best", "rank": 0, **meta},
    ]
    path = tmp_path / "flat.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in messages))
    top1 = convert(path, "oasst", options={"top_k_reply": 1})
    assert top1.select("native_id", "lang").rows() == [("best", "de")]
    assert [m["content"] for m in top1["messages"][0]] == ["question", "best"]


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_oasst_flat_table_exported_as_csv_or_tsv_reads_as_the_json_table_does(tmp_path, delimiter):
    """A CSV or TSV holds every value as text: "" for a root's parent, "1.0" for a rank (as pandas writes a
    column with gaps), "False" for deleted. The table was refused ("`rank` is not a number"), and with ranks
    given as numbers every message counted as deleted, since any text is true."""
    sample = load_registry()["oasst1"].sample
    records = [json.loads(line) for line in sample.read_text().splitlines()]
    columns = list(dict.fromkeys(key for record in records for key in record))

    def text(value: object) -> str:
        return "" if value is None else str(float(value)) if type(value) is int else str(value)

    def export(path: Path, rows: list[dict]) -> Path:
        with path.open("w", newline="") as file:
            writer = csv.writer(file, delimiter=delimiter)
            writer.writerow(columns)
            writer.writerows([text(record.get(c)) for c in columns] for record in rows)
        return path

    path = export(tmp_path / ("flat.csv" if delimiter == "," else "flat.tsv"), records)
    assert "False" in path.read_text() and "1.0" in path.read_text()
    for top_k in (1, None):
        expected = convert(sample, "oasst", options={"top_k_reply": top_k}).drop("__row")
        assert convert(path, "oasst", options={"top_k_reply": top_k}).drop("__row").equals(expected)

    odd = export(tmp_path / ("odd.csv" if delimiter == "," else "odd.tsv"), [{**records[0], "deleted": "maybe"}])
    (tmp_path / "odd.jsonl").write_text(json.dumps({**records[0], "deleted": 0.5}) + "\n")
    for path in (odd, tmp_path / "odd.jsonl"):
        assert convert(path, "oasst")["__reason"].to_list() == ["a message whose `deleted` is not true or false"]


def test_preference_strips_prompt_from_pairs():
    frame = convert(load_registry()["ultrafeedback"].sample, "preference")
    assert frame.height == 24
    row = frame.row(0, named=True)
    assert [m["role"] for m in row["prompt"]] == ["user"]
    assert [m["role"] for m in row["chosen"]] == ["assistant"]
    assert [m["role"] for m in row["rejected"]] == ["assistant"]
    assert row["native_id"] == "uf_000"


def test_a_preference_pair_without_its_own_prompt_takes_the_chosen_conversations(tmp_path):
    """A record with no prompt where the others of its file have one was kept with a null prompt (found by
    fuzzing: read alone, in a chunk with no prompt field, it took the chosen conversation's). A prompt that
    is empty text is an empty prompt, as an empty list is; turns without a role are refused by name."""
    user, reply, other = [{"role": "user", "content": "q"}], [{"role": "assistant", "content": "a"}], "b"
    records = [
        {"prompt": user, "chosen": reply, "rejected": other},
        {"chosen": [{"role": "user", "content": "own"}, *reply], "rejected": other},
        {"prompt": None, "chosen": reply, "rejected": other},
        {"prompt": [{"role": "user", "content": " "}], "chosen": reply, "rejected": other},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    frame = convert(path, "preference")
    assert frame["__reason"].to_list() == [None, None, "empty prompt", "empty prompt"]
    assert frame["prompt"][1].to_list() == [{"role": "user", "content": "own"}]
    assert frame["chosen"][1].to_list() == reply
    # no turn of the file has a content: typed null, which stopped the build ("list join with non-string dtype")
    path.write_text(json.dumps({"prompt": "q", "chosen": [{"role": "assistant", "content": None}], "rejected": "b"}))
    assert convert(path, "preference")["__reason"].to_list() == ["empty chosen reply"]
    path.write_text(json.dumps({"chosen": [{"content": "a"}], "rejected": "b"}) + "\n")
    with pytest.raises(
        MixerError, match=r"the turns of 'chosen' have keys \['content'\], expected 'role' and 'content'"
    ):
        convert(path, "preference")


def test_hh_rlhf_transcripts_are_read_as_turns(tmp_path):
    """Anthropic's HH-RLHF pairs are two transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") and no prompt:
    each was one assistant turn holding the whole dialogue, so every pair was "empty prompt". A prompt field that
    ends in "Assistant:" (sets derived from it) gives its turns too; a plain reply beside it stays a reply."""
    records = [
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant: 4.",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant: 5.",
        },
        {"prompt": "\n\nHuman: Name a colour.\n\nAssistant:", "chosen": " Blue.", "rejected": "No."},
    ]
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    frame = convert(path, "preference")
    assert frame["__reason"].to_list() == [None, None]
    turns = lambda column, row: [(m["role"], m["content"]) for m in frame[column][row]]  # noqa: E731
    assert turns("prompt", 0) == [("user", "Hi"), ("assistant", "Hello!"), ("user", "2+2?")]
    assert (turns("chosen", 0), turns("rejected", 0)) == ([("assistant", "4.")], [("assistant", "5.")])
    assert turns("prompt", 1) == [("user", "Name a colour.")]
    assert (turns("chosen", 1), turns("rejected", 1)) == ([("assistant", " Blue.")], [("assistant", "No.")])


def test_llama_factory_history_is_the_conversation_before_the_instruction(tmp_path):
    """LLaMA-Factory's alpaca format carries the exchanges before this one as `history`: left unread, a follow-up
    question ("And the second?") was trained without what it follows. A history that is not pairs of texts is a
    malformed record; one chunk of mixed shapes (polars types the field as text) reads as a uniform one does."""
    good = {
        "instruction": "And the second?",
        "input": "",
        "output": "Two.",
        "system": "Be brief.",
        "history": [["Count to one.", "One."], ["Good.", 2.0]],
    }
    records = [good, {"instruction": "Hi", "output": "Hello", "history": []}, {"instruction": "Q", "output": "A"}]
    broken = [
        {"instruction": "Q", "output": "A", "history": [["only one"]]},
        {"instruction": "Q", "output": "A", "history": "x"},
    ]
    turns = [
        ("system", "Be brief."),
        ("user", "Count to one."),
        ("assistant", "One."),
        ("user", "Good."),
        ("assistant", "2"),
        ("user", "And the second?"),
        ("assistant", "Two."),
    ]
    for name, written in [("uniform", records + broken[:1]), ("mixed", records + broken)]:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in written))
        frame = convert(path, "alpaca")
        assert [(m["role"], m["content"]) for m in frame["messages"][0]] == turns, name
        assert [len(m) for m in frame["messages"].to_list()[1:3]] == [2, 2]
        wrong = "a 'history' entry is not [instruction, response]"
        assert frame["__reason"].to_list() == [None, None, None, wrong, *([wrong] if name == "mixed" else [])]


def test_openais_developer_role_is_the_system_turn(tmp_path):
    """OpenAI's chat format names the system turn `developer` for its o1 and later models; such rows were
    refused for an unknown role, and chat templates know only `system`."""
    turns = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"messages": [*turns, {"role": "assistant", "content": "Hello"}]}) + "\n")
    frame = convert(path, "messages")
    assert [m["role"] for m in frame["messages"][0]] == ["system", "user", "assistant"]
    assert frame["__reason"].to_list() == [None]


def test_field_mapping_and_input_joining(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "Add 2 and 3.", "ctx": "numbers", "a": "5"}\n{"q": "Hi", "ctx": "", "a": ""}\n')
    frame = convert(path, "alpaca", fields={"instruction": "q", "input": "ctx", "output": "a"})
    assert frame["messages"][0].to_list() == [
        {"role": "user", "content": "Add 2 and 3.\n\nnumbers"},
        {"role": "assistant", "content": "5"},
    ]
    assert frame["__reason"].to_list() == [None, "empty 'a'"]


def test_numbers_objects_and_lists_in_text_fields(tmp_path):
    path = tmp_path / "typed.jsonl"
    path.write_text('{"id": 7, "instruction": {"task": "sum"}, "input": 12, "output": true}\n')
    frame = convert(path, "alpaca")
    assert frame["native_id"].to_list() == ["7"]
    assert frame["messages"][0].to_list() == [
        {"role": "user", "content": '{"task":"sum"}\n\n12'},
        {"role": "assistant", "content": "true"},
    ]
    # a record without the object field: no text, not the text "null" (polars encodes a missing object so)
    path.write_text('{"instruction": "q", "input": {"k": "v"}, "output": "a"}\n{"instruction": "r", "output": "b"}\n')
    frame = convert(path, "alpaca")
    assert [m[0]["content"] for m in frame["messages"].to_list()] == ['q\n\n{"k":"v"}', "r"]
    path.write_text('{"instruction": ["a", "b"], "output": "1"}\n')
    with pytest.raises(MixerError, match=r"field 'instruction' holds List\(String\) values, expected text") as info:
        convert(path, "alpaca")
    assert "fields: {instruction: <field>}" in info.value.hint


@pytest.mark.parametrize("layout", ["lines", "lines with a broken one", "array"])
def test_a_field_polars_finds_no_type_for_is_text_not_a_refused_file(tmp_path, layout):
    """A list in one record and a number in the next: polars refuses the chunk ("failed to determine
    supertype"), and so did Python's path after it, so a metadata field no adapter reads refused the file."""
    records = [
        {"instruction": "a", "input": [1, 2], "output": "x", "meta": [1]},
        {"instruction": "b", "input": 5, "output": "y", "meta": 5},
        {"instruction": "c", "input": "", "output": "z", "meta": {"k": "v"}},
    ]
    path = tmp_path / ("m.json" if layout == "array" else "m.jsonl")
    if layout == "array":
        path.write_text(json.dumps(records))
    else:
        broken = '{"instruction": "d", "output": \n' if layout.endswith("one") else ""
        path.write_text("".join(json.dumps(r) + "\n" for r in records) + broken)
    frame = convert(path, "alpaca")
    assert frame["__reason"].to_list() == [None, None, None]
    assert [m[0]["content"] for m in frame["messages"].to_list()] == ["a\n\n[1, 2]", "b\n\n5", "c"]


def test_whole_numbers_read_as_floats_keep_their_integer_text(tmp_path):
    """One record with a fraction makes polars type the whole field as float: the id 49 and the answer 42 of
    its neighbours became "49.0" and "42.0", but "49" and "42" in a chunk without one. A record with text in
    the field makes polars type it as text, writing numbers its own way (no exponent: 1e-07 is "0.0000001");
    a float field's numbers are written that way too, so a number's text does not depend on its chunk."""
    records = (
        '{"id": 49, "instruction": "a", "output": 42}\n{"id": 7.5, "instruction": "b", "output": 3.5}\n'
        '{"id": 1e300, "instruction": "c", "output": -0.0}\n{"id": 2.5e-7, "instruction": "d", "output": 1e16}\n'
    )
    ids = ["49", "7.5", "1" + "0" * 300, "0.00000025"]
    outputs = ["42", "3.5", "-0", "10000000000000000"]
    path = tmp_path / "n.jsonl"
    path.write_text(records)
    frame = convert(path, "alpaca")
    assert frame["native_id"].to_list() == ids
    assert [m[1]["content"] for m in frame["messages"].to_list()] == outputs
    path.write_text('{"id": "t", "instruction": "e", "output": "text"}\n' + records)  # typed as text
    frame = convert(path, "alpaca")
    assert frame["native_id"].to_list() == ["t", *ids]
    assert [m[1]["content"] for m in frame["messages"].to_list()] == ["text", *outputs]


def test_a_headerless_file_under_a_format_with_a_header_says_so(tmp_path):
    """A FLAN CoT TSV has no header row: read as `flan`, its first record became its field names, and the
    error quoted a whole question as a field. It now says the first row looks like data and names `cot`."""
    path = tmp_path / "gsm8k_train.tsv"
    question = "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May."
    path.write_text(f"{question}\t72\tNatalia sold 48 / 2 = 24 clips in May.\nA second question here?\t1\tBecause.\n")
    with pytest.raises(MixerError) as info:
        convert(path, "flan")
    assert info.value.message == (
        f"{path}: no field 'inputs'; the first row looks like data, not field names "
        "(Natalia sold clips to 48 of her friends…, 72, Natalia sold 48 / 2 = 24 clips in May.)"
    )
    assert "format: cot" in info.value.hint
    assert convert(path, "cot").height == 2

    named = tmp_path / "named.tsv"
    named.write_text("question\tanswer\nWhat is 2 + 2?\t4\n")
    with pytest.raises(MixerError, match=r"no field 'inputs' \(the file has: question, answer\)"):
        convert(named, "flan")


@pytest.mark.parametrize(("name", "text"), [("empty.jsonl", "{}\n{}\n"), ("empty.json", "[{}, {}]")])
def test_a_file_of_empty_records_is_said_to_have_no_fields(tmp_path, name, text):
    """Found by fuzzing the bundled samples: such a file was said to have "the file has: " (nothing), with the
    hint to map the field to one of the file's fields, of which it has none."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MixerError) as info:
        convert(path, "flan")
    assert info.value.message == f"{path}: no field 'inputs'; its records have no fields at all (each one is {{}})"
    assert info.value.hint == "check that this is the file you meant, and the step that wrote it"


@pytest.mark.parametrize(
    ("header", "shown", "mapped"),
    [
        (b"instruction,input,output\r\r\n", r"'output\r'", r'"output\r"'),
        (b"instruction,input,output \n", "'output '", '"output "'),
        (b"instruction,input,output\x00\n", r"'output\x00'", r'"output\u0000"'),
        (b"instruction,input,\xef\xbb\xbfoutput\n", r"'\ufeffoutput'", r'"\ufeffoutput"'),
    ],
)
def test_a_field_name_with_invisible_characters_is_shown_escaped_with_the_mapping_that_reads_it(
    tmp_path, header, shown, mapped
):
    """Found by fuzzing CSV headers: a header's `output\\r` was printed as `output` (the terminal swallows the
    carriage return), so the message said "no field 'output' (the file has: instruction, input, output)"."""
    path = tmp_path / "a.csv"
    path.write_bytes(header + b"q,,a\n")
    with pytest.raises(MixerError) as info:
        convert(path, "alpaca")
    assert info.value.message == (
        f"{path}: no field 'output'; the file has {shown}, which is 'output' with spaces or invisible characters"
    )
    assert info.value.hint == (
        f"fix the field's name in the file, or map it in the recipe: fields: {{output: {mapped}}}"
    )
    (mapping,) = yaml.safe_load(f"{{output: {mapped}}}").values()  # the hint's mapping, as a recipe reads it
    assert convert(path, "alpaca", {"output": mapping})["messages"].to_list()[0][-1] == {
        "role": "assistant",
        "content": "a",
    }
    path.write_bytes(header.replace(b"output", b"outpt") + b"q,,a\n")  # not the name: listed, escaped alike
    with pytest.raises(MixerError, match="no field 'output' \\(the file has: instruction, input, ") as info:
        convert(path, "alpaca")
    assert info.value.message.endswith(f"{shown.replace('output', 'outpt')})")


@pytest.mark.parametrize(
    ("name", "separator", "hint"),
    [
        ("a.csv", "\t", "name the file a.tsv, and its path in the recipe too"),
        ("a.tsv.gz", ",", "name the file a.csv.gz, and its path in the recipe too"),
        ("a.csv", ";", "write it again with commas"),
        ("a.tsv", "|", "write it again with commas"),
    ],
)
def test_a_file_separated_otherwise_than_its_name_says_is_named_with_the_step_that_reads_it(
    tmp_path, name, separator, hint
):
    """A tab-separated `.csv` (or a spreadsheet's `;` CSV) reads as one field named after the whole header, and
    the message said "no field 'instruction' (the file has: instruction;input;output)" with a hint to map it."""
    path = tmp_path / name
    text = f"instruction{separator}input{separator}output\nq{separator}{separator}a\n".encode()
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    with pytest.raises(MixerError) as info:
        convert(path, "alpaca")
    header = repr(f"instruction{separator}input{separator}output")
    assert info.value.message == (
        f"{path}: no field 'instruction'; the file's header is one field, {header}: its fields are separated by "
        f"{separator!r}, and mixer reads a .csv file as separated by commas and a .tsv file by tabs"
    )
    assert info.value.hint.startswith(hint)
    if hint.startswith("name the file"):  # the hint's step, taken: the file then reads
        fixed = tmp_path / hint.split()[3].rstrip(",")
        path.rename(fixed)
    else:
        command = re.search(r'python -c "(.*)"', info.value.hint).group(1)
        subprocess.run([sys.executable, "-c", command], cwd=tmp_path, check=True)
        fixed = tmp_path / "a.commas.csv"
    assert convert(fixed, "alpaca")["messages"].to_list() == [
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    ]


SHARE = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
ROLES = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


@pytest.mark.parametrize(
    ("fmt", "record", "message", "hint"),
    [
        (
            "messages",
            {"messages": SHARE},
            "conversation turns have keys ['from', 'value'], expected 'role' and 'content'",
            "these are ShareGPT's turns: read them as format: sharegpt with fields: {conversations: messages}",
        ),
        (
            "messages",
            {"messages": [{"role": "user"}, {"role": "assistant"}]},
            "conversation turns have keys ['role'], expected 'role' and 'content'",
            "for turns with other keys, use format: sharegpt with fields: {conversations: messages} and options: "
            "{role_key: ..., content_key: ...}",
        ),
        (
            "sharegpt",
            {"conversations": ROLES},
            "conversation turns have keys ['content', 'role'], expected 'from' and 'value'",
            "these are {role, content} turns: set options: {role_key: role, content_key: content}",
        ),
    ],
)
def test_turns_of_another_shape_are_named_with_the_reading_that_fits_them(tmp_path, fmt, record, message, hint):
    """Found by fuzzing parquet inputs: `format: messages` over turns that lack `role` or `content` in every
    record of a chunk (ShareGPT's {from, value} under a `messages` field) stopped the build in a polars
    traceback (StructFieldNotFoundError)."""
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(MixerError) as info:
        convert(path, fmt)
    assert (info.value.message, info.value.hint) == (f"{path}: {message}", hint)
    if fmt == "messages" and "from" in str(record):  # the hint's reading builds the row
        frame = convert(path, "sharegpt", {"conversations": "messages"})
        assert frame["messages"].to_list() == [ROLES]


def test_a_binary_conversation_column_is_a_malformed_row_not_a_traceback(tmp_path):
    """Found by fuzzing parquet inputs: a `messages` column of binary values failed to be quoted as JSON for the
    malformed rows (TypeError: bytes is not JSON serializable), and it would have been called null."""
    pl.DataFrame({"messages": [b"x", b"y"], "id": ["a", "b"]}).write_parquet(tmp_path / "b.parquet")
    recipe = write_recipe(
        tmp_path,
        f"name: b\nsources:\n  s: {{path: b.parquet, format: messages, take: all}}\noutput: {{dir: {tmp_path / 'o'}}}\n",
    )
    result = run_mixer("build", str(recipe))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "b.parquet: row 1: field 'messages' is binary data, expected a list of {role, content}" in result.stderr
    # quarantined beside a file of good rows, each record is quoted with its bytes as the text they decode to
    (tmp_path / "good.jsonl").write_text(json.dumps({"messages": ROLES}) + "\n")
    text = recipe.read_text().replace(
        "path: b.parquet, format: messages, take: all}",
        "path: [good.jsonl, b.parquet], format: messages, take: all, on_error: quarantine}",
    )
    recipe.write_text(text)
    result = run_mixer("build", str(recipe))
    assert result.returncode == 0, result.stderr
    rejects = [json.loads(line) for line in (tmp_path / "o" / "rejects" / "s.jsonl").read_text().splitlines()]
    assert [json.loads(r["record"]) for r in rejects] == [{"messages": "x"}, {"messages": "y"}]


def test_binary_columns_are_read_as_text_when_they_are_utf8_and_quoted_in_rejects(tmp_path):
    """Found by fuzzing parquet inputs: a file with a column of bytes anywhere (a struct of metadata, an id) and
    one malformed row stopped the build in a polars panic (it cannot write bytes as JSON) while quoting the row.
    Text some parquet writers store as bytes is read as text; bytes that are not UTF-8 are refused by name."""
    frame = pl.DataFrame(
        {
            "instruction": [b"q", b"r"],
            "output": ["a", None],
            "id": [b"i1", b"i2"],
            "meta": [{"k": b"x"}, {"k": b"\xff"}],
        }
    )
    frame.write_parquet(tmp_path / "b.parquet")
    recipe = write_recipe(
        tmp_path,
        "name: b\nsources:\n  s: {path: b.parquet, format: alpaca, take: all, on_error: quarantine}\n"
        f"output: {{dir: {tmp_path / 'o'}}}\n",
    )
    result = run_mixer("build", str(recipe))
    assert result.returncode == 0, result.stderr
    built = pl.read_parquet(tmp_path / "o" / "data" / "train-00000-of-00001.parquet")
    assert built["messages"].to_list() == [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
    (reject,) = [json.loads(line) for line in (tmp_path / "o" / "rejects" / "s.jsonl").read_text().splitlines()]
    assert (reject["row"], reject["reason"]) == (2, "empty 'output'")
    assert json.loads(reject["record"]) == {"instruction": "r", "output": None, "id": "i2", "meta": {"k": "\ufffd"}}
    pl.DataFrame({"instruction": [b"q", b"\xff"], "output": ["a", "b"]}).write_parquet(tmp_path / "c.parquet")
    with pytest.raises(MixerError) as info:
        convert(tmp_path / "c.parquet", "alpaca")
    assert info.value.message == (
        f"{tmp_path / 'c.parquet'}: field 'instruction' holds binary data that is not UTF-8 text, expected text for "
        "'instruction'"
    )
    pl.DataFrame({"instruction": [{"k": b"q"}], "output": ["a"]}).write_parquet(tmp_path / "s.parquet")
    with pytest.raises(MixerError, match=r"field 'instruction' holds Struct\(\{'k': Binary\}\) values, expected text"):
        convert(tmp_path / "s.parquet", "alpaca")


@pytest.mark.parametrize(
    ("name", "text", "found"),
    [
        ("n.json", '[{"messages": null, "id": "a"}, {"messages": null, "id": "b"}]', "empty (null) in every record"),
        (
            "n.jsonl",
            '{"messages": [], "id": "a"}\n{"messages": [null], "id": "b"}\n',
            "an empty list (or a list of nulls) in every record",
        ),
    ],
)
def test_a_conversation_field_empty_in_every_record_is_said_in_words(tmp_path, name, text, found):
    """Found by fuzzing CSV and parquet inputs: the message gave polars' type of such a field ("is Null", "is
    List(Null)")."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MixerError) as info:
        convert(path, "messages")
    assert info.value.message == f"{path}: field 'messages' is {found}, expected a list of {{role, content}}"
    if name.endswith(".jsonl"):  # a preference pair's reply alike (one that is null in every record is read as
        # null in each, a malformed row each)
        path.write_text(text.replace('"messages"', '"chosen"').replace('"id"', '"prompt"'))
        with pytest.raises(MixerError) as info:
            convert(path, "preference")
        assert info.value.message == f"{path}: field 'chosen' is {found}, expected text or a list of {{role, content}}"


def test_a_stages_own_data_is_named_where_the_recipe_declares_it(tmp_path):
    """Found by fuzzing a DPO stage's data: its errors named `sources.dpo`, a source the recipe does not have,
    and told to set `on_error` "on source 'dpo'"."""
    (tmp_path / "d.jsonl").write_text(
        '{"prompt": "p", "chosen": "c", "rejected": null}\n{"prompt": "p", "chosen": "c", "rejected": "r"}\n'
    )
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            "name: p\nstages:\n  - name: dpo\n    kind: dpo\n    model: org/m\n"
            "    data: {path: d.jsonl, format: preference, take: all}\n",
        )
    )
    data = recipe.stages[0].data
    with pytest.raises(MixerError) as info:
        load_pool(resolve_source(data, recipe.base_dir, data_dir=None, sample=False, cache_dir=tmp_path / "cache"))
    assert (
        info.value.message
        == f"stages.dpo.data: 1 malformed record(s):\n  {tmp_path / 'd.jsonl'}: row 1: empty rejected reply"
    )
    assert info.value.hint.endswith("(also write them to rejects/) on stages.dpo.data")
    (tmp_path / "d.jsonl").write_text("{}\n")
    with pytest.raises(MixerError, match=r"^stages\.dpo\.data: .*d\.jsonl: no field 'chosen'"):
        load_pool(resolve_source(data, recipe.base_dir, data_dir=None, sample=False, cache_dir=tmp_path / "cache"))


FITS = [  # (records of a file, the format it is read as, the format the hint names)
    ({"instruction": "q", "output": "a"}, "messages", "format: alpaca"),
    ({"instruction": "q", "response": "a"}, "alpaca", "format: dolly"),
    ({"conversations": [{"from": "human", "value": "q"}]}, "messages", "format: sharegpt"),
    ({"messages": [{"role": "user", "content": "q"}]}, "sharegpt", "format: messages"),
    ({"prompt": "q", "chosen": "a", "rejected": "b"}, "alpaca", "format: preference (the data of a dpo stage)"),
]


@pytest.mark.parametrize(("record", "fmt", "fits"), FITS)
def test_a_file_without_the_formats_field_is_told_which_format_its_fields_fit(tmp_path, record, fmt, fits):
    """Reading a ShareGPT file as `messages` (or Dolly as `alpaca`) said only that a field was missing."""
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(MixerError) as info:
        convert(path, fmt)
    assert info.value.message.startswith(f"{path}: no field ")
    assert f"(the file has: {', '.join(record)})" in info.value.message
    assert info.value.hint.startswith(f"its fields are those of {fits}; or map it in the recipe: fields: {{")


@pytest.mark.parametrize(
    ("record", "fmt", "message", "fits"),
    [
        ({"conversations": ["q", "a"]}, "sharegpt", "is List(String), expected a list of {from, value}", "turns"),
        ({"conversations": [{"from": "human", "value": "q"}]}, "turns", "expected a list of texts", "sharegpt"),
    ],
)
def test_a_field_of_another_type_is_told_which_format_fits(tmp_path, record, fmt, message, fits):
    """LIMA's alternating texts read as ShareGPT turns, and the other way round."""
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(MixerError) as info:
        convert(path, fmt)
    assert info.value.message.startswith(f"{path}: field 'conversations' is ")
    assert info.value.message.endswith(message)
    assert info.value.hint.startswith(f"its fields are those of format: {fits}; or map it in the recipe")


def test_a_missing_field_names_no_format_when_none_fits_and_never_the_sources_own(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps({"question": "q", "reply": "a"}) + "\n")
    with pytest.raises(MixerError) as info:
        convert(path, "alpaca")
    assert info.value.hint == "map it in the recipe: fields: {instruction: <one of the file's fields>}"
    # a `messages` source whose field mapping names a field the file lacks: the file fits `messages` itself
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    adapter = get_adapter("messages")
    ctx = Context({**adapter.fields, "messages": "msgs"}, adapter.options, str(path), format="messages")
    with pytest.raises(MixerError) as info:
        adapter.convert(read_table(path).frame, ctx)
    assert info.value.message == f"{path}: no field 'msgs' for 'messages' (the file has: messages)"
    assert info.value.hint == "map it in the recipe: fields: {messages: <one of the file's fields>}"


def test_a_missing_field_the_file_has_in_another_case_is_named_in_the_hint(tmp_path):
    """WizardLM's test set writes `Instruction`: the hint names that field instead of a placeholder. Only a
    match but for case is named; a field that merely looks alike is not guessed."""
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps({"idx": 1, "Skill": "Math", "Instruction": "q"}) + "\n")
    with pytest.raises(MixerError) as info:
        convert(path, "prompts")
    assert info.value.message == f"{path}: no field 'instruction' (the file has: idx, Skill, Instruction)"
    assert info.value.hint == "map it in the recipe: fields: {instruction: Instruction}"
    path.write_text(json.dumps({"instructions": "q", "output": "a"}) + "\n")
    with pytest.raises(MixerError) as info:
        convert(path, "alpaca")
    assert info.value.hint == "map it in the recipe: fields: {instruction: <one of the file's fields>}"


def test_a_seed_file_without_replies_read_with_a_mapped_instruction_is_told_it_fits_prompts(tmp_path):
    """WizardLM's test set as an evolve block's seeds (`take: 0`), read as alpaca with `fields: {instruction:
    Instruction}`, has no reply: the formats it fits are found with the source's own mapping, so the hint names
    `prompts`. By default names alone nothing fits, and the hint offered only a placeholder for `output`. A
    source that adds rows is never told `prompts`, which only seeds blocks: validation refused it after the
    user followed the hint."""
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps({"idx": 1, "Skill": "Math", "Instruction": "q"}) + "\n")
    adapter = get_adapter("alpaca")
    placeholder = "map it in the recipe: fields: {output: <one of the file's fields>}"
    for adds_rows, hint in (
        (False, f"its fields are those of format: prompts (no replies: seeds of an evolve block); or {placeholder}"),
        (True, placeholder),
    ):
        ctx = Context({**adapter.fields, "instruction": "Instruction"}, {}, str(path), adds_rows=adds_rows)
        with pytest.raises(MixerError) as info:
            adapter.convert(read_table(path).frame, ctx)
        assert info.value.message == f"{path}: no field 'output' (the file has: idx, Skill, Instruction)"
        assert info.value.hint == hint
    path.write_text(json.dumps({"instruction": "q", "source": "s"}) + "\n")  # by default names too
    with pytest.raises(MixerError) as info:
        convert(path, "alpaca")
    assert info.value.hint == placeholder


def test_every_input_file_type(tmp_path):
    rows = pl.DataFrame({"instruction": ["a", "b"], "input": ["", "x"], "output": ["1", "2"]})
    rows.write_ndjson(tmp_path / "d.jsonl")
    rows.write_parquet(tmp_path / "d.parquet")
    rows.write_csv(tmp_path / "d.csv")
    rows.write_csv(tmp_path / "d.tsv", separator="\t")
    (tmp_path / "d.json").write_text(rows.write_json())
    import gzip

    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress((tmp_path / "d.jsonl").read_bytes()))
    for name in ("d.jsonl", "d.parquet", "d.csv", "d.tsv", "d.json", "d.jsonl.gz"):
        frame = convert(tmp_path / name, "alpaca")
        assert frame["messages"][1].to_list()[0]["content"] == "b\n\nx", name


def test_broken_jsonl_lines_are_located(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "1"}\n{"instruction": "b", "output": \n[1, 2]\nnull\n"a"\n')
    table = read_table(path)
    assert table.frame.height == 1
    assert [(line, reason.split(":")[0]) for line, reason, _ in table.unparsable] == [
        (2, "invalid JSON"),
        (3, "expected a JSON object, got a list"),  # a JSON value's kind in words, not Python's "list"
        (4, "expected a JSON object, got null"),  # which Python called "NoneType"
        (5, "expected a JSON object, got text"),
    ]


def test_formats_all_importable():
    assert {get_adapter(f).name for f in FORMATS} == set(FORMATS)


# ---- the real public files (../shared/data) ----


def test_real_code_alpaca(shared_data):
    frame = convert(shared_data / "code_alpaca" / "code_alpaca_2k.json", "alpaca")
    assert frame.height == 2017
    assert frame["__reason"].drop_nulls().to_list() == ["empty 'output'", "empty 'output'"]
    assert_well_formed(frame)


def test_real_sharegpt(shared_data):
    frame = convert(shared_data / "sharegpt" / "dummy_conversation.json", "sharegpt")
    assert frame.height == 500 and frame["__reason"].null_count() == 500
    assert frame["native_id"][0] == "identity_0"
    assert [m["role"] for m in frame["messages"][0]] == ["user", "assistant", "user", "assistant"]
    assert_well_formed(frame)


@pytest.mark.parametrize(
    ("file", "rows"),
    [
        ("aqua_train.tsv", 2728),
        ("creak_train.tsv", 6915),
        ("ecqa_train.tsv", 7112),
        ("gsm8k_train.tsv", 7473),
        ("qasc_train.tsv", 1084),
        ("sensemaking_train.tsv", 6070),
        ("strategyqa_train.tsv", 2061),
    ],
)
def test_real_flan_cot(shared_data, file, rows):
    frame = convert(shared_data / "flan_cot" / file, "cot")
    assert frame.height == rows
    assert frame["__reason"].null_count() == rows
    reply = frame["messages"][0][1]["content"]
    assert "\\n" not in reply and "\nSo the answer is " in reply
    assert_well_formed(frame)


def test_real_oasst_trees(shared_data):
    path = shared_data / "oasst" / "oasst2_filtered.trees.jsonl"
    every, top1 = convert(path, "oasst"), convert(path, "oasst", options={"top_k_reply": 1})
    assert (every.height, top1.height) == (511, 115)
    assert every["__reason"].null_count() == 511
    assert_well_formed(every)
    assert top1["native_id"].n_unique() == 115


def test_real_gsm8k_through_field_mapping(shared_data):
    frame = convert(
        shared_data / "gsm8k" / "train.jsonl", "alpaca", fields={"instruction": "question", "output": "answer"}
    )
    assert frame.height == 7473 and frame["__reason"].null_count() == 7473
    assert frame["messages"][0][1]["content"].endswith("#### 72")


@pytest.mark.parametrize(
    ("name", "data", "header", "reason"),
    [
        (
            "a.csv",
            b"instruction,output\nq1,a1\nq2,caf\xe9\n",
            True,
            "line 3: not UTF-8: byte 0xE9 at byte 7 of the line",
        ),
        ("b.tsv", b"q1\ta1\nq2\ta2\tstray\nq3\ta3\n", False, "line 2: 3 fields, where the first row has 2"),
        (
            "c.csv",
            b'instruction,output\n"q, quoted",a1\nq2,a2,stray\n',
            True,
            "line 3: 3 fields, where the first row has 2",
        ),
        # polars' error quoted the field, to the end of the file: "could not parse `"q2, a2"
        (
            "d.csv",
            b'instruction,output\nq1,a1\n"q2,a2\nq3,a3\n',
            True,
            "line 3: a quoted field starts here and is never closed",
        ),
        (
            "e.csv",
            b'instruction,output\nq1,a1\n"q2" more,a2\n',
            True,
            "line 3: text after a quoted field's closing quote",
        ),
    ],
)
def test_a_table_polars_cannot_read_is_reported_at_its_first_bad_line(tmp_path, name, data, header, reason):
    """polars' CSV errors name no line ("invalid utf-8 sequence", "found more fields than defined"): in a
    file of a million rows that is no help."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(MixerError) as info:
        read_table(path, header=header)
    assert info.value.message == f"{path}: cannot read {name[-3:]} file: {reason}"


def test_a_json_array_that_is_not_utf8_is_reported_where(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"instruction": "q", "output": "a"},\n {"instruction": "caf\xe9", "output": "b"}]\n')
    with pytest.raises(MixerError) as info:
        read_table(path)
    assert info.value.message == f"{path}: cannot parse JSON array: line 2: not UTF-8: byte 0xE9 at byte 22 of the line"


@pytest.mark.parametrize("name", ["cut.jsonl.gz", "cut.json.gz", "cut.csv.gz"])
def test_a_gzip_file_cut_short_is_named_not_aborted(tmp_path, name):
    """An interrupted download: gzip raises EOFError, which the command line reported as a bare "Aborted!"."""
    rows = [{"instruction": f"question {i} {i * 7919 % 104729}", "output": f"answer {i}"} for i in range(5000)]
    packed = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    path = tmp_path / name
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(MixerError) as info:
        list(read_chunks(path, 1 << 12))
    kind = name.split(".")[1]
    assert info.value.message == (
        f"{path}: cannot read {kind} file: the gzip data is damaged or cut short "
        "(Compressed file ended before the end-of-stream marker was reached)"
    )
    assert info.value.hint == "download or copy the file again; `gzip -t FILE` checks it"


def test_oasst_ids_and_languages_of_the_wrong_type_are_named_not_raised(tmp_path):
    """Found by feeding the adapter random trees: a `lang` that is a list ended the build in a polars error
    about its builder, and a flat table whose `parent_id` is a list in an unhashable-type traceback."""
    from mixer.build import Options, build

    def tree(i: int, lang: object) -> dict:
        answer = {"message_id": f"a{i}", "role": "assistant", "text": "yes", "replies": []}
        return {
            "prompt": {"message_id": f"p{i}", "role": "prompter", "text": f"q{i}", "lang": lang, "replies": [answer]}
        }

    (tmp_path / "t.trees.jsonl").write_text(
        "".join(json.dumps(tree(i, lang)) + "\n" for i, lang in enumerate(["en", ["x"]]))
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: o\nsources:\n  o: {path: t.trees.jsonl, format: oasst, take: all, on_error: quarantine}\n")
    result = build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "out")
    assert result.manifest["sources"]["o"]["counts"]["malformed"] == 1
    [reject] = [json.loads(line) for line in (tmp_path / "out" / "rejects" / "o.jsonl").read_text().splitlines()]
    assert (reject["row"], reject["reason"]) == (2, "a message whose `role`, `text` or `lang` is not text")
    flat = tmp_path / "flat.jsonl"
    flat.write_text(json.dumps({"message_id": "m", "parent_id": [], "role": "prompter", "text": "q"}) + "\n")
    with pytest.raises(MixerError, match=r"oasst message table: `parent_id` holds List\(Null\), not text ids"):
        convert(flat, "oasst")


def test_oasst_walk_survives_trees_deeper_than_recursion_and_a_repeated_message_id(tmp_path):
    """Both used to raise RecursionError with a traceback: a chain of 5,000 turns, and a flat table where a
    message id appears twice so that the second copy's replies lead back to it (a loop through the tree)."""
    from mixer.adapters.oasst import _paths

    node = {"message_id": "m4999", "role": "assistant", "text": "t", "replies": []}
    for depth in range(4998, -1, -1):
        node = {"message_id": f"m{depth}", "role": "prompter", "text": "t", "replies": [node]}
    assert [len(path) for path in _paths(node, None)] == [5000]

    messages = [
        {"message_id": "p", "parent_id": None, "role": "prompter", "text": "question"},
        {"message_id": "X", "parent_id": "p", "role": "assistant", "text": "answer"},
        {"message_id": "Y", "parent_id": "X", "role": "prompter", "text": "follow-up"},
        {"message_id": "X", "parent_id": "Y", "role": "assistant", "text": "answer again"},
    ]
    path = tmp_path / "flat.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in messages))
    frame = convert(path, "oasst")
    assert [[m["content"] for m in c] for c in frame["messages"].to_list()] == [
        ["question", "answer", "follow-up", "answer again"]
    ]


def test_prompts_are_user_turns_without_replies_as_in_the_real_wizardlm_test_instructions(shared_data, tmp_path):
    path = shared_data / "wizardlm" / "WizardLM_testset.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    frame = convert(path, "prompts", fields={"instruction": "Instruction"})
    assert frame.height == len(records) == 218 and frame["__reason"].null_count() == 218
    assert [m for ms in frame["messages"].to_list() for m in ms] == [
        {"role": "user", "content": r["Instruction"]} for r in records
    ]
    # the user turn is Alpaca's (an input after a blank line, a system turn first); an empty one is malformed
    own = tmp_path / "prompts.jsonl"
    own.write_text(
        json.dumps({"instruction": "Sum these.", "input": "1 2", "system": "Be brief."})
        + "\n"
        + json.dumps({"instruction": "  "})
        + "\n"
    )
    frame = convert(own, "prompts")
    assert frame["messages"][0].to_list() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Sum these.\n\n1 2"},
    ]
    assert frame["__reason"].to_list() == [None, "empty 'instruction'"]


@pytest.mark.parametrize("name", ["squad.json", "export.jsonl"])
def test_records_wrapped_in_one_object_are_told_how_to_take_them_out(tmp_path, name):
    """`{"version": 1, "data": [...]}` (SQuAD's layout, and `datasets`' `field="data"`) was told to map
    `instruction` to `version` or `data`."""
    path = tmp_path / name
    path.write_text(json.dumps({"version": 1, "data": [{"instruction": "q", "output": "a"}]}))
    with pytest.raises(MixerError) as info:
        convert(path, "alpaca")
    assert info.value.message == (
        f"{path}: no field 'instruction'; the records are in the list 'data' of the file's top-level object "
        "(the file has: version, data)"
    )
    stem = name.split(".")[0]
    assert info.value.hint == (
        "mixer reads a JSON array or JSON lines of records: take the list out and read that file, e.g. python -c "
        f"\"import json; json.dump(json.load(open('{name}'))['data'], open('{stem}.records.json', 'w'))\""
    )


def test_a_field_inside_an_object_is_told_to_be_flattened_first(tmp_path):
    """`fields: {instruction: data.q}` named a field inside an object, which `fields:` does not reach: the error
    said only that the file has `data`."""
    path = tmp_path / "nested.jsonl"
    path.write_text(json.dumps({"data": {"q": "question", "a": "answer"}}) + "\n")
    with pytest.raises(MixerError) as info:
        convert(path, "alpaca", fields={"instruction": "data.q", "output": "data.a"})
    assert info.value.message == (
        f"{path}: no field 'data.q' for 'instruction' (the file has: data); `fields:` names the file's own fields, "
        "and 'data' holds an object"
    )
    assert (
        info.value.hint
        == "flatten the records first, e.g. jq -c '{instruction: .data.q}' (with the other fields) into a new file"
    )
