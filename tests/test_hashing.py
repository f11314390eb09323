"""The selection hash must never change silently: it decides which rows every recipe selects."""

import os

import numpy as np
import polars as pl
import pytest

from mixer.hashing import _fnv_scalar, _splitmix, stable_hash


def reference(text: str, salt: str) -> int:
    raw = salt.encode() + b"\x1f" + text.encode()
    return int(_splitmix(np.array([_fnv_scalar(raw)], dtype=np.uint64))[0])


def test_pinned_values():
    # Pinned once; if these change, every recipe's selection changes. Bump the major version if so.
    assert stable_hash(pl.Series(["a", "bc", "héllo"]), "x").to_list() == [
        14236484686518697136,
        11037263841401814231,
        18023119100239517492,
    ]


def test_vectorised_equals_scalar_reference():
    words = ["", "a", "flan_v2/123", "ünïcode ✓", "x" * 300, "sharegpt/sg_001#2", "y" * 70_000]
    words += [f"r{i}" * (i % 7) for i in range(50)]  # lengths rising and falling: strings are hashed longest first
    assert stable_hash(pl.Series(words), "42\x1fselect\x1fflan").to_list() == [
        reference(w, "42\x1fselect\x1fflan") for w in words
    ]


@pytest.mark.parametrize("size", [1, 7, 1 << 18])
def test_strings_are_keyed_the_same_whatever_the_slices_they_are_hashed_in(monkeypatch, size):
    """`stable_hash` keys HASH_SLICE strings at a time, to bound its memory: a slice's end never shows."""
    import mixer.hashing

    monkeypatch.setattr(mixer.hashing, "HASH_SLICE", size)
    words = [f"r{i}" * (i % 7) for i in range(40)] + ["ünïcode ✓", "x" * 300, None, "", "sharegpt/sg_001#2"]
    keys = stable_hash(pl.Series(words, dtype=pl.String), "s")
    assert keys.to_list() == [reference(w or "", "s") for w in words]
    assert keys.n_chunks() == 1 and stable_hash(pl.Series([], dtype=pl.String), "s").len() == 0


def test_slices_and_nulls():
    series = pl.Series([f"id/{i}" for i in range(1000)])
    full = stable_hash(series, "s")
    assert stable_hash(series.slice(500, 20), "s").to_list() == full.slice(500, 20).to_list()
    assert stable_hash(pl.Series([None, ""], dtype=pl.String), "s").n_unique() == 1
    assert full.n_unique() == 1000
    assert stable_hash(series, "t").to_list() != full.to_list()


def test_file_hashes_are_remembered_by_stat_and_recomputed_when_the_file_changes(tmp_path):
    import os

    from mixer.hashing import FileHashes, file_sha256

    data = tmp_path / "a.jsonl"
    data.write_text("one\n")
    old = data.stat().st_mtime_ns - 10_000_000_000
    os.utime(data, ns=(old, old))  # older than the racy window, so it may be cached
    store = tmp_path / "hashes.json"
    first = FileHashes(store)
    assert first.sha256(data) == file_sha256(data)
    first.save()
    assert str(data.resolve()) in store.read_text()

    data.write_text("two\n")  # same size, new content and mtime: the stat signature no longer matches
    assert FileHashes(store).sha256(data) == file_sha256(data) != first.known[str(data.resolve())]["sha256"]

    fresh = tmp_path / "b.jsonl"
    fresh.write_text("just written\n")
    racy = FileHashes(store)
    racy.sha256(fresh)
    assert str(fresh.resolve()) not in racy.known  # modified within the last seconds: never cached


def test_files_hashed_ahead_are_read_once_and_only_when_not_remembered(tmp_path, monkeypatch):
    import os

    from mixer import hashing
    from mixer.hashing import FileHashes

    files = []
    for name in ("a", "b", "c", "racy"):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(f"{name}\n" * 1000)
        if name != "racy":
            old = path.stat().st_mtime_ns - 10_000_000_000
            os.utime(path, ns=(old, old))
        files.append(path)
    a, b, c, racy = files
    expected = {p: hashing.file_sha256(p) for p in files}
    store = tmp_path / "hashes.json"
    remembered = FileHashes(store)
    remembered.sha256(a)
    remembered.save()

    reads: list[str] = []
    real = hashing.file_sha256
    monkeypatch.setattr(
        hashing, "file_sha256", lambda path, on_read=None: reads.append(path.name) or real(path, on_read)
    )
    hashes = FileHashes(store)
    hashes.hash_ahead([a, b, c, racy, b])
    assert sorted(reads) == ["b.jsonl", "c.jsonl", "racy.jsonl"]  # a is remembered, b is read once
    assert [hashes.sha256(p) for p in files] == [expected[p] for p in files]
    assert len(reads) == 3  # nothing read again
    assert str(racy.resolve()) not in hashes.known and str(c.resolve()) in hashes.known

    c.write_text("changed\n")  # after the read-ahead: its signature no longer matches, so it is read again
    assert hashes.sha256(c) == real(c) and reads[-1] == "c.jsonl"

    reads.clear()
    FileHashes(store).hash_ahead([c, a])  # one file to read: no threads, left to sha256
    assert reads == []


@pytest.mark.parametrize("stored", ["[]", "null", "5", '{"K": 5}', '{"K": {"size": 3}}', "{"])
def test_a_hash_store_of_another_shape_is_ignored_and_rewritten(tmp_path, stored):
    """A hand edit or another version's file: each input is hashed again (a `.get` on a list crashed every
    command that resolves inputs)."""
    from mixer import hashing
    from mixer.hashing import FileHashes

    data = tmp_path / "a.jsonl"
    data.write_text("a\n")
    old = data.stat().st_mtime_ns - 10_000_000_000
    os.utime(data, ns=(old, old))
    store = tmp_path / "hashes.json"
    store.write_text(stored.replace("K", str(data.resolve())))
    hashes = FileHashes(store)
    assert hashes.sha256(data) == hashing.file_sha256(data)
    hashes.save()
    assert FileHashes(store).known[str(data.resolve())]["sha256"] == hashing.file_sha256(data)


def test_hashing_many_gigabytes_of_new_inputs_reports_its_progress(tmp_path, monkeypatch):
    """Past PROGRESS_BYTES of new inputs, hashing shows a bar fed by every block read: even one large file,
    which is otherwise left to be hashed when its hash is asked for."""
    from mixer import hashing
    from mixer.hashing import FileHashes

    big = tmp_path / "big.jsonl"
    big.write_bytes(b"x" * (3 << 20))
    advanced: list[float] = []

    class Bar:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def add_task(self, description, total):
            advanced.append(total)
            return 0

        def advance(self, task, amount):
            advanced.append(amount)

    monkeypatch.setattr("mixer.progress.make_progress", lambda enabled: Bar())
    monkeypatch.setattr(hashing, "PROGRESS_BYTES", 1 << 20)
    hashes = FileHashes(tmp_path / "hashes.json")
    hashes.hash_ahead([big], progress=False)
    assert advanced == [] and hashes.read_ahead == {}  # one file, no bar: hashed when asked for
    hashes.hash_ahead([big], progress=True)
    assert advanced[0] == pytest.approx(3 * 1.048576) and sum(advanced[1:]) == pytest.approx(advanced[0])
    assert hashes.read_ahead[str(big.resolve())]["sha256"] == hashing.file_sha256(big)


def test_resolving_a_recipe_finds_each_sources_files_and_resolves_each_path_once(tmp_path, monkeypatch):
    """A source of 1,000 files paid for finding them twice (to hash them ahead, then to resolve the source) and
    for resolving each path twice: ~0.06 s of a 0.44 s no-op rebuild."""
    from pathlib import Path

    import mixer.resolve
    from mixer.errors import MixerError
    from mixer.resolve import resolve_recipe
    from mixer.validate import load_recipe

    from conftest import write_recipe

    for folder, count in (("a", 3), ("b", 2)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            (tmp_path / folder / f"{i}.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    text = "name: r\nsources:\n"
    text += "  a: {path: 'a/*.jsonl', format: alpaca, take: all}\n  b: {path: 'b/*.jsonl', format: alpaca, take: all}\n"
    recipe = load_recipe(write_recipe(tmp_path, text))
    globs: list[str] = []
    expand = mixer.resolve.expand_paths
    monkeypatch.setattr(mixer.resolve, "expand_paths", lambda raw, base: globs.append(raw) or expand(raw, base))
    resolved_paths: list[Path] = []
    resolve = Path.resolve
    monkeypatch.setattr(Path, "resolve", lambda self, *a: resolved_paths.append(self) or resolve(self, *a))
    a, b = resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
    assert [len(a.files), len(b.files)] == [3, 2]
    assert globs == ["a/*.jsonl", "b/*.jsonl"]
    assert len([p for p in resolved_paths if p.suffix == ".jsonl"]) == 5

    for path in (tmp_path / "b").iterdir():  # a source without files is still reported, after the ones before
        path.unlink()
    with pytest.raises(MixerError, match=r"^sources\.b: no file matches \['b/\*\.jsonl'\]"):
        resolve_recipe(recipe, data_dir=None, sample=False, cache_dir=tmp_path / "cache")
