"""Datasets as `datasets` leaves them on disk: `save_to_disk` folders and Arrow IPC files read as sources."""

from __future__ import annotations

import json

import datasets
import polars as pl
import pyarrow as pa
import pytest

from mixer.build import Options, build
from mixer.errors import MixerError
from mixer.io import read_chunks, read_table
from mixer.validate import validate_file

from conftest import write_recipe


def _built(tmp_path, name: str, source: str, **options) -> pl.DataFrame:
    recipe = write_recipe(
        tmp_path, f"name: {name}\nsources:\n  chats: {source}\nmixture: {{shuffle: false}}\n", f"{name}.yaml"
    )
    out = build(recipe, Options(progress=False, cache_dir=tmp_path / "cache", **options), out=tmp_path / name).out_dir
    return pl.read_parquet(out / "data").sort("id")


def test_a_saved_dataset_reads_as_its_json_does_from_the_real_sharegpt_file(shared_data, tmp_path):
    """A `save_to_disk` folder was "a directory: name its files, e.g. '*.jsonl'", and its `.arrow` files an
    unsupported type; listing the folder would have read `state.json` as data. The real ShareGPT file, saved by
    `datasets` in three shards, must give the rows its JSON gives: by `path:` and from the data dir."""
    real = shared_data / "sharegpt" / "dummy_conversation.json"
    datasets.Dataset.from_list(json.loads(real.read_text())).save_to_disk(
        str(tmp_path / "data" / "chats"), num_shards=3
    )
    assert len(list((tmp_path / "data" / "chats").glob("*.arrow"))) == 3

    from_json = _built(tmp_path, "json", f"{{path: {real}, format: sharegpt, take: all}}")
    from_folder = _built(tmp_path, "folder", "{path: data/chats, format: sharegpt, take: all}")
    from_data_dir = _built(
        tmp_path, "datadir", "{hub: org/chats, format: sharegpt, take: all}", data_dir=tmp_path / "data"
    )
    assert from_json.height == 500
    assert from_folder.select("id", "messages").equals(from_json.select("id", "messages"))
    assert from_data_dir.select("id", "messages").equals(from_json.select("id", "messages"))

    (tmp_path / "data" / "chats" / "data-00001-of-00003.arrow").rename(tmp_path / "one_shard_moved.arrow")
    recipe = write_recipe(tmp_path, "name: f\nsources:\n  chats: {path: data/chats, format: sharegpt, take: all}\n")
    ((message, hint),) = [(d.message, d.hint) for d in validate_file(recipe)]
    assert (message, hint) == (
        f"'data/chats' is a directory (relative to {tmp_path})",
        "its state.json names Arrow files that are not there, or none: save the dataset again",
    )

    lock = json.loads((tmp_path / "folder.lock").read_text())
    assert [f["path"] for f in lock["sources"]["chats"]["files"]] == [
        f"data/chats/data-0000{i}-of-00003.arrow" for i in range(3)
    ]


def test_arrow_files_read_whole_or_in_chunks_give_the_same_rows_in_either_ipc_format(tmp_path):
    """`datasets` writes the stream format; polars and Feather write the file format, with a footer."""
    frame = pl.DataFrame({"instruction": [f"question {i}" for i in range(2500)], "output": ["answer"] * 2500})
    stream = tmp_path / "stream.arrow"
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, frame.to_arrow().schema) as writer:
        for batch in frame.to_arrow().to_batches(max_chunksize=1000):  # as `datasets` batches its rows
            writer.write_batch(batch)
    footed = tmp_path / "file.arrow"
    frame.write_ipc(footed)
    for path in (stream, footed):
        whole = read_table(path).frame
        assert whole.drop("__row").equals(frame) and whole["__row"].to_list() == list(range(2500))
        chunks = [table.frame for table in read_chunks(path, chunk_bytes=20_000)]
        assert len(chunks) > 1 and pl.concat(chunks).equals(whole)

    empty = tmp_path / "empty.arrow"
    frame.head(0).write_ipc(empty)
    (table,) = read_chunks(empty, chunk_bytes=20_000)
    assert (table.frame.height, table.frame.columns) == (0, ["__row", "instruction", "output"])


def test_a_dataset_dict_folder_is_refused_with_its_splits_named(tmp_path):
    rows = datasets.Dataset.from_list([{"instruction": f"q{i}", "input": "", "output": "a"} for i in range(4)])
    datasets.DatasetDict({"train": rows, "test": rows.select(range(2))}).save_to_disk(str(tmp_path / "data" / "pairs"))

    recipe = write_recipe(tmp_path, "name: d\nsources:\n  pairs: {path: data/pairs, format: alpaca, take: all}\n")
    ((line, col, message, hint),) = [(d.line, d.col, d.message, d.hint) for d in validate_file(recipe)]
    assert (line, col, message) == (3, 17, f"'data/pairs' is a directory (relative to {tmp_path})")
    assert hint == (
        "it is a DatasetDict saved by `datasets` (splits: train, test): name one split's folder, e.g. data/pairs/train"
    )
    assert _built(tmp_path, "split", "{path: data/pairs/test, format: alpaca, take: all}").height == 2

    recipe = write_recipe(tmp_path, "name: d\nsources:\n  pairs: {hub: org/pairs, format: alpaca, take: all}\n")
    with pytest.raises(MixerError) as refused:
        build(
            recipe,
            Options(progress=False, cache_dir=tmp_path / "cache", data_dir=tmp_path / "data"),
            out=tmp_path / "o",
        )
    assert refused.value.message == f"source 'pairs': {tmp_path / 'data' / 'pairs'} holds more than one split"
    assert refused.value.hint.endswith(
        f"name one split's folder in the recipe, e.g. `path: {tmp_path / 'data' / 'pairs'}/train`"
    )


def test_a_benchmark_saved_by_datasets_decontaminates_as_its_jsonl_does(shared_data, tmp_path):
    """The real GSM8K test set, saved with `save_to_disk`, finds the 4 GSM8K train questions its JSON-lines file
    finds; a benchmark kept in several Arrow files (it is read from one file) is told how to save it."""
    test = shared_data / "gsm8k" / "test.jsonl"
    saved = datasets.Dataset.from_list([json.loads(line) for line in test.read_text().splitlines()])
    saved.save_to_disk(str(tmp_path / "gsm8k_test"))
    saved.save_to_disk(str(tmp_path / "gsm8k_shards"), num_shards=2)
    train = shared_data / "gsm8k" / "train.jsonl"
    hits = {}
    for benchmark in (test, "gsm8k_test"):
        source = f"{{path: {train}, format: alpaca, fields: {{instruction: question, output: answer}}, take: all}}"
        recipe = write_recipe(
            tmp_path,
            f"name: d\nsources:\n  gsm: {source}\n"
            f"mixture: {{decontaminate: {{benchmarks: [{{name: gsm8k, path: {benchmark}}}], mode: remove}}}}\n",
        )
        manifest = build(
            recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "o", force=True
        ).manifest
        hits[str(benchmark)] = [(h["rows"], h["examples"]) for h in manifest["decontamination"]["hits"]]
    assert hits[str(test)] == hits["gsm8k_test"] and hits[str(test)][0][0] == 4

    recipe.write_text(recipe.read_text().replace("path: gsm8k_test}", "path: gsm8k_shards}"))
    with pytest.raises(MixerError) as refused:
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "o", force=True)
    assert refused.value.message == f"benchmark gsm8k: {tmp_path / 'gsm8k_shards'} is a folder, not a file"
    assert refused.value.hint == "a benchmark is read from one file, and 2 hold this one: save it with num_shards=1"
