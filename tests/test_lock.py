"""recipe.lock: portable file labels, and moving hub revisions (`main`) pinned to the commit actually read.

The hub is never contacted: `HfApi.dataset_info` and `datasets.load_dataset` are replaced by fakes that
record what they were asked, which is what these tests check.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import datasets
import huggingface_hub
import polars as pl
import pytest

import mixer.resolve
from mixer.benchmark_sets import BBH_TASKS
from mixer.build import Options, build
from mixer.errors import MixerError
from mixer.hashing import file_sha256

from conftest import REPO, run_mixer, write_recipe

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def alpaca_rows(n: int, prefix: str = "task") -> list[dict]:
    return [{"instruction": f"{prefix} {i}", "input": "", "output": f"answer {i}"} for i in range(n)]


def write_alpaca(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_lock_labels_are_portable_and_a_moved_tree_builds_locked(tmp_path):
    """A lock committed on one machine must check on another: no absolute paths of this checkout in it."""
    project = tmp_path / "one"
    write_alpaca(project / "data" / "mine.jsonl", alpaca_rows(12))
    (project / "hub-data").mkdir()
    (project / "recipes").mkdir()
    (project / "hub-data" / "dolly.jsonl").write_text(
        "".join(
            json.dumps({"instruction": f"q{i}", "context": "", "response": f"r{i}", "category": "qa"}) + "\n"
            for i in range(8)
        ),
        encoding="utf-8",
    )
    recipe = write_recipe(
        project / "recipes",
        """
        name: portable
        sources:
          mine: {path: ../data/mine.jsonl, format: alpaca, take: 10}
          dolly: {source: dolly, take: all}
        """,
    )
    build(recipe, Options(progress=False, data_dir=project / "hub-data"), out=project / "out")
    lock = json.loads(recipe.with_suffix(".lock").read_text())
    assert lock["sources"]["mine"]["files"][0]["path"] == "../data/mine.jsonl"
    assert lock["sources"]["dolly"]["files"][0]["path"] == "data-dir:dolly.jsonl"
    assert str(tmp_path) not in recipe.with_suffix(".lock").read_text()

    moved = tmp_path / "two"
    shutil.copytree(project, moved)
    result = run_mixer(
        "build",
        str(moved / "recipes" / "recipe.yaml"),
        "--locked",
        "--data-dir",
        str(moved / "hub-data"),
        "--out",
        str(moved / "out2"),
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 18 rows" in result.stdout


class FakeHub:
    """The hub's view of one dataset: which commit `main` is at, and every call made to it."""

    def __init__(self, monkeypatch, commit: str, rows=None) -> None:
        self.commit = commit
        self.resolved: list[str] = []
        self.loaded: list[str] = []
        self.data_files: list[str | None] = []
        self.configs: list[str | None] = []
        self.splits: list[str | None] = []
        self.cards: list[str] = []
        self.license: str | list[str] | None = None  # what the dataset card declares
        hub = self

        def dataset_info(_api, repo_id, revision=None, **_):
            if revision is not None and len(revision) == 40:  # a commit's card, read for its license
                hub.cards.append(f"{repo_id}@{revision}")
            else:
                hub.resolved.append(f"{repo_id}@{revision}")
            card = {"license": hub.license} if hub.license else None
            return huggingface_hub.hf_api.DatasetInfo(id=repo_id, sha=hub.commit, cardData=card)

        def load_dataset(repo_id, name=None, revision=None, split=None, data_files=None, **_):
            hub.loaded.append(f"{repo_id}@{revision}")
            hub.configs.append(name)
            hub.data_files.append(data_files)
            hub.splits.append(split)
            chosen = rows(name) if callable(rows) else rows
            return datasets.Dataset.from_list(chosen or alpaca_rows(6, prefix=f"at {revision[:4]}"))

        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.delenv("HF_DATASETS_OFFLINE")
        monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
        monkeypatch.setattr(mixer.resolve, "hub_unreachable", lambda: None)  # no connection to the real hub


def _hub_refusing_connections(monkeypatch) -> Callable:
    """A machine without network: every connection to the hub (`https://hub.example`) is refused, by a closed
    loopback port, never the named host. Returns the real `socket.create_connection`."""
    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    for name in mixer.resolve.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    connect = socket.create_connection

    def refuse(address: tuple[str, int], timeout: float):
        assert address == ("hub.example", 443)
        return connect(("127.0.0.1", port), timeout=1)

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    mixer.resolve.hub_unreachable.cache_clear()
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the download must not start"))
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda *a, **k: pytest.fail("no call to the hub"))
    return connect


def test_an_unreachable_hub_fails_at_once_without_the_download_retries(tmp_path, monkeypatch):
    """With no network, `datasets` retries five times with backoff (~25 s) per hub source before failing; one
    connection to the hub's host tells at once. A proxy in between makes that connection meaningless."""
    connect = _hub_refusing_connections(monkeypatch)
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  d: {source: dolly, take: 5}\n")
    started = time.monotonic()
    with pytest.raises(MixerError) as failed:
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "o")
    assert time.monotonic() - started < 10
    assert (
        "from the hub (OSError: cannot reach hub.example:443: [Errno 111] Connection refused)" in failed.value.message
    )
    mixer.resolve.hub_unreachable.cache_clear()
    with socket.socket() as mirror:  # a mirror over plain http on a port of its own, reachable
        mirror.bind(("127.0.0.1", 0))
        mirror.listen()
        monkeypatch.setattr(socket, "create_connection", connect)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{mirror.getsockname()[1]}")
        assert mixer.resolve.hub_unreachable() is None
    mixer.resolve.hub_unreachable.cache_clear()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert mixer.resolve.hub_unreachable() is None  # through a proxy, a direct connection says nothing
    mixer.resolve.hub_unreachable.cache_clear()


def test_every_source_the_hub_cannot_supply_is_named_at_once_with_the_files_to_put_instead(tmp_path, monkeypatch):
    """Offline, a recipe of eleven hub sources took eleven runs to learn which files to supply, and the hint
    asked for `cot.jsonl` where the format's files are TSV. A moving revision (`main`) no longer asks the hub for
    its commit before the connection check either."""
    _hub_refusing_connections(monkeypatch)
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          d: {source: dolly, take: 5}
          c: {source: code_alpaca, take: 5}
          own: {path: own.jsonl, format: alpaca, take: all}
          t: {source: cot, take: 5}
        """,
    )
    (tmp_path / "own.jsonl").write_text("".join(json.dumps(row) + "\n" for row in alpaca_rows(3)))
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    with pytest.raises(MixerError) as failed:
        build(recipe, options, out=tmp_path / "o")
    mixer.resolve.hub_unreachable.cache_clear()
    assert failed.value.message.splitlines() == [
        "3 sources cannot be read; the hub cannot supply them "
        "(OSError: cannot reach hub.example:443: [Errno 111] Connection refused):",
        "  sources.d: databricks/databricks-dolly-15k@bdd27f4d94b9c1f951818a7da7fd7aeea5dbff1a",
        "  sources.c: sahil2801/CodeAlpaca-20k@main",
        "  sources.t: SirNeural/flan_v2@main",
    ]
    assert "put them in one folder as dolly.jsonl, code_alpaca.json, cot.tsv (" in (failed.value.hint or "")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("dolly.jsonl", "code_alpaca.json", "cot.tsv"):  # the bundled samples, under the names asked for
        (data / name).write_bytes((REPO / "sources" / "samples" / name).read_bytes())
    result = build(recipe, Options(progress=False, cache_dir=tmp_path / "cache", data_dir=data), out=tmp_path / "o")
    sources = result.manifest["sources"]
    assert {name: (s["origin"], s["counts"]["written"]) for name, s in sources.items()} == {
        "d": ("data_dir", 5),
        "c": ("data_dir", 5),
        "own": ("path", 3),
        "t": ("data_dir", 5),
    }


def test_sources_failing_for_different_reasons_keep_each_reason_on_its_line():
    offline = mixer.resolve.HubUnavailable("sources.a", "x/a@main", "OSError: offline mode", "h")
    missing = mixer.resolve.HubUnavailable("sources.b", "x/b@main", "HTTPError: 404", "h")
    failures = [
        mixer.resolve.Unsupplied(offline, "a.jsonl", "h", sampled=True),
        MixerError("sources.c: no file matches ['c/*.jsonl']"),
        mixer.resolve.Unsupplied(missing, "b.tsv", "h", sampled=True),
    ]
    error = mixer.resolve.unsupplied_at_once(failures, "sources", mixer.resolve.sources_hint)
    assert error.message.splitlines() == [
        "3 sources cannot be read:",
        "  sources.a: x/a@main (OSError: offline mode)",
        "  sources.c: no file matches ['c/*.jsonl']",
        "  sources.b: x/b@main (HTTPError: 404)",
    ]
    assert (error.hint or "").startswith("download them elsewhere and put them in one folder as a.jsonl, b.tsv (")


def test_a_moving_revision_is_read_at_one_commit_which_the_lock_pins(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch, COMMIT_A)
    recipe = write_recipe(tmp_path, "name: hub\nsources:\n  code: {source: code_alpaca, take: all}\n")
    options = Options(progress=False, cache_dir=tmp_path / "cache")

    build(recipe, options, out=tmp_path / "o")
    assert hub.resolved == ["sahil2801/CodeAlpaca-20k@main"] and hub.loaded == [f"sahil2801/CodeAlpaca-20k@{COMMIT_A}"]
    entry = json.loads(recipe.with_suffix(".lock").read_text())["sources"]["code"]
    assert entry["revision"] == COMMIT_A
    assert entry["files"][0]["path"] == f"hub:sahil2801/CodeAlpaca-20k@{COMMIT_A}"
    assert (tmp_path / "cache" / "code_alpaca" / f"{COMMIT_A}.parquet").is_file()
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["sources"]["code"]["revision"] == COMMIT_A

    hub.commit = COMMIT_B  # main moves on the hub
    assert build(recipe, options, out=tmp_path / "o").status == "up-to-date"
    assert len(hub.resolved) == 1, "the lock pins the commit: main is not asked again"

    result = build(recipe, Options(progress=False, cache_dir=tmp_path / "cache", refresh=True), out=tmp_path / "o")
    assert result.status == "built"
    assert (
        hub.resolved[-1] == "sahil2801/CodeAlpaca-20k@main" and hub.loaded[-1] == f"sahil2801/CodeAlpaca-20k@{COMMIT_B}"
    )
    assert json.loads(recipe.with_suffix(".lock").read_text())["sources"]["code"]["revision"] == COMMIT_B

    with pytest.raises(MixerError, match="--refresh"):
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache", refresh=True), locked=True)


def test_a_hub_dataset_named_in_the_recipe_is_read_pinned_and_cached_as_a_registry_entry_is(tmp_path, monkeypatch):
    """`{hub: org/name, format: ...}`: any dataset on the hub, without a registry entry. Its branch is pinned by
    the lock; each split has its own cached copy; a data dir's file named after the source comes first."""
    chats = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(8)
    ]
    hub = FakeHub(monkeypatch, COMMIT_A, rows=chats)
    text = """
        name: own
        sources:
          robots: {hub: HuggingFaceH4/no_robots, format: messages, take: 5}
          held_out: {hub: {id: HuggingFaceH4/no_robots, split: test}, format: messages, take: all}
        """
    recipe = write_recipe(tmp_path, text)
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    result = build(recipe, options, out=tmp_path / "o")
    assert {n: s["counts"]["written"] for n, s in result.manifest["sources"].items()} == {"robots": 5, "held_out": 8}
    assert (hub.splits, hub.loaded) == (["train", "test"], [f"HuggingFaceH4/no_robots@{COMMIT_A}"] * 2)
    locked = json.loads(recipe.with_suffix(".lock").read_text())["sources"]["robots"]
    assert {k: locked[k] for k in ("registry", "hub", "origin", "revision")} == {
        "registry": None,
        "hub": "HuggingFaceH4/no_robots",
        "origin": "hub",
        "revision": COMMIT_A,
    }
    assert locked["files"][0]["path"] == f"hub:HuggingFaceH4/no_robots@{COMMIT_A}"
    # the card declares no license: unknown, asked once per cached copy (two splits, two copies)
    assert result.manifest["sources"]["robots"]["license"] == "unknown" and len(hub.cards) == 2

    hub.commit = COMMIT_B  # main moves on; offline, the pinned and cached copies still build
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert build(recipe, options, out=tmp_path / "o", force=True).status == "built"
    assert len(hub.resolved) == 2 and len(hub.loaded) == 2
    with pytest.raises(MixerError) as unread:  # nothing cached: no bundled sample to offer either
        build(recipe, Options(progress=False, cache_dir=tmp_path / "empty", sample=True), out=tmp_path / "s")
    assert unread.value.message.startswith("2 sources cannot be read")
    assert (unread.value.hint or "").endswith(
        "put them in one folder as robots.jsonl, held_out.jsonl (.jsonl, .json, .parquet, .arrow, .csv or .tsv, "
        "text gzipped or not; or a folder of such files, or one `save_to_disk` wrote, named after the source), then "
        "pass --data-dir DIR or set MIXER_DATA_DIR; or give `path:` in the recipe"
    )
    monkeypatch.delenv("HF_HUB_OFFLINE")

    # another repository under the same source name is not read at the commit the lock holds for the first
    write_recipe(tmp_path, text.replace("robots: {hub: HuggingFaceH4/no_robots", "robots: {hub: org/other"))
    build(recipe, options, out=tmp_path / "o")
    assert hub.resolved[-1] == "org/other@main" and hub.loaded[-1] == f"org/other@{COMMIT_B}"

    data = tmp_path / "data"
    data.mkdir()
    (data / "robots.jsonl").write_text("".join(json.dumps(chat) + "\n" for chat in chats[:6]))
    result = build(recipe, Options(progress=False, cache_dir=tmp_path / "cache", data_dir=data), out=tmp_path / "o")
    assert result.manifest["sources"]["robots"]["origin"] == "data_dir" and len(hub.loaded) == 3


def test_a_hub_dataset_takes_the_license_its_card_declares_unless_the_recipe_gives_one(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch, COMMIT_A, rows=[{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)])
    hub.license = ["cc-by-4.0", "odc-by"]
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  d: {hub: org/data, format: alpaca, take: all}\n")
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    assert build(recipe, options, out=tmp_path / "o").manifest["sources"]["d"]["license"] == "cc-by-4.0, odc-by"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline, the license kept beside the cached copy answers
    rebuilt = build(recipe, options, out=tmp_path / "o", force=True)
    assert rebuilt.manifest["sources"]["d"]["license"] == "cc-by-4.0, odc-by" and len(hub.cards) == 1
    recipe.write_text(recipe.read_text().replace("take: all}", "take: all, license: mit}"))
    assert build(recipe, options, out=tmp_path / "o").manifest["sources"]["d"]["license"] == "mit"


def test_a_split_the_hub_dataset_lacks_is_the_recipes_to_fix_not_the_networks(tmp_path, monkeypatch):
    """`datasets` refuses a split or config the dataset does not have; the hint was to download the file
    elsewhere, as for no network."""
    FakeHub(monkeypatch, COMMIT_A)

    def load_dataset(repo_id, split=None, **_):
        raise ValueError(f"Unknown split \"{split}\". Should be one of ['train_sft', 'test_sft'].")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  r: {hub: org/chats, format: messages, take: 5}\n")
    with pytest.raises(MixerError) as failed:
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "o")
    assert failed.value.message == (
        'sources.r: cannot load org/chats@main from the hub (ValueError: Unknown split "train". Should be one of '
        "['train_sft', 'test_sft'].)"
    )
    assert failed.value.hint == (
        "name a split (and config) the dataset has, listed above: hub: {id: org/chats, split: ..., config: ...}"
    )


def test_offline_without_a_lock_reads_the_commit_last_resolved_here(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch, COMMIT_A)
    options = Options(progress=False, cache_dir=tmp_path / "cache", sample=False)
    first = write_recipe(tmp_path, "name: one\nsources:\n  code: {source: code_alpaca, take: 3}\n", name="one.yaml")
    build(first, options, out=tmp_path / "o1")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    other = write_recipe(tmp_path, "name: two\nsources:\n  code: {source: code_alpaca, take: 4}\n", name="two.yaml")
    build(other, options, out=tmp_path / "o2")
    assert len(hub.resolved) == 1 and len(hub.loaded) == 1
    assert json.loads(other.with_suffix(".lock").read_text())["sources"]["code"]["revision"] == COMMIT_A

    unlocked = write_recipe(tmp_path, "name: three\nsources:\n  code: {source: code_alpaca, take: 2}\n", name="3.yaml")
    fresh = Options(progress=False, cache_dir=tmp_path / "empty-cache")
    with pytest.raises(MixerError, match="never resolved to a commit here"):
        build(unlocked, fresh, out=tmp_path / "o3")
    refreshing = Options(progress=False, cache_dir=tmp_path / "cache", refresh=True)
    with pytest.raises(MixerError, match="--refresh must ask the hub"):
        build(other, refreshing, out=tmp_path / "o2")


def test_the_hub_copy_of_cot_is_one_json_lines_file_read_as_flan(tmp_path, monkeypatch):
    """The FLAN collection mirror holds CoT as inputs/targets JSON lines, not the TSVs `--data-dir` reads."""
    flan_rows = [
        {"inputs": f"Q{i}? Let's think step by step.", "targets": f"Because {i}. So the answer is {i}."}
        for i in range(5)
    ]
    hub = FakeHub(monkeypatch, COMMIT_A, rows=flan_rows)
    recipe = write_recipe(tmp_path, "name: c\nsources:\n  cot: {source: cot, take: 4}\n")
    result = build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "o")
    assert hub.data_files == ["cot_zs_noopt_train.jsonl.gz"]
    assert result.manifest["sources"]["cot"]["format"] == "flan"
    rows = pl.read_parquet(tmp_path / "o" / "data")
    assert rows.height == 4
    for messages in rows["messages"].to_list():
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[0]["content"].startswith("Q") and "So the answer is" in messages[1]["content"]


HUMANEVAL_ITEM = (
    'def add(a, b):\n    """Return the sum of two integers a and b, without using the plus operator at all."""\n'
)


def _recipe_with_benchmarks(tmp_path: Path, rows: list[dict], decontaminate: str) -> Path:
    write_alpaca(tmp_path / "mine.jsonl", rows)
    return write_recipe(
        tmp_path,
        "name: benchmarks\nsources:\n  mine: {path: mine.jsonl, format: alpaca, take: all}\n"
        f"mixture:\n  decontaminate: {decontaminate}\n",
    )


def test_a_known_benchmark_without_a_local_file_is_read_from_the_hub_at_the_locked_commit(tmp_path, monkeypatch):
    items = [{"task_id": "HumanEval/0", "prompt": HUMANEVAL_ITEM}]
    hub = FakeHub(monkeypatch, COMMIT_A, rows=items)
    planted = {"instruction": "Complete: " + HUMANEVAL_ITEM.upper(), "input": "", "output": "return a - (-b)"}
    recipe = _recipe_with_benchmarks(tmp_path, [*alpaca_rows(5), planted], "{benchmarks: [humaneval], mode: remove}")
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    build(recipe, options, out=tmp_path / "o")
    assert hub.resolved == ["openai/openai_humaneval@main"] and hub.loaded == [f"openai/openai_humaneval@{COMMIT_A}"]
    copy = tmp_path / "cache" / "benchmark-humaneval" / f"{COMMIT_A}.parquet"
    label = f"hub:openai/openai_humaneval@{COMMIT_A}"
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["decontamination"]["benchmarks"] == [
        {"benchmark": "humaneval", "path": label, "items": 1, "revision": COMMIT_A}
    ]
    assert manifest["decontamination"]["removed"] == 1 and manifest["totals"]["rows"] == 5
    entry = json.loads(recipe.with_suffix(".lock").read_text())["benchmarks"]["humaneval"]
    assert entry == {
        "origin": "hub",
        "hub": "openai/openai_humaneval",
        "revision": COMMIT_A,
        "files": [{"path": label, "sha256": file_sha256(copy), "bytes": copy.stat().st_size}],
    }

    hub.commit = COMMIT_B  # main moves on: the lock keeps the build on the commit it read, from the cached copy
    items[0] = {"task_id": "HumanEval/0", "prompt": "def sub(a, b): return the difference of a and b " * 2}
    assert build(recipe, options, out=tmp_path / "o", force=True, locked=True).status == "built"
    assert len(hub.resolved) == 1 and len(hub.loaded) == 1

    result = build(recipe, Options(progress=False, cache_dir=tmp_path / "cache", refresh=True), out=tmp_path / "o")
    assert result.status == "built" and hub.loaded[-1] == f"openai/openai_humaneval@{COMMIT_B}"
    assert result.manifest["decontamination"]["removed"] == 0 and result.manifest["totals"]["rows"] == 6
    assert json.loads(recipe.with_suffix(".lock").read_text())["benchmarks"]["humaneval"]["revision"] == COMMIT_B


def test_bbh_by_name_reads_every_task_config_at_one_commit(tmp_path, monkeypatch):
    """BBH is 27 hub configs, one per task: all are read at the same commit, in order, into one copy that
    keeps each item's task, and an item of any task is found."""
    item = "Sort the following words alphabetically: List: oven costume counterpart vanadium expiry syndrome wiry"

    def task_rows(task):
        text = item if task == "word_sorting" else f"a question about {task.replace('_', ' ')} only"
        return [{"input": text, "target": "x"}]

    hub = FakeHub(monkeypatch, COMMIT_A, rows=task_rows)
    planted = {"instruction": "Please help. " + item.upper() + "!", "input": "", "output": "costume counterpart ..."}
    recipe = _recipe_with_benchmarks(tmp_path, [*alpaca_rows(3), planted], "{benchmarks: [bbh], mode: remove}")
    result = build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "o")
    assert hub.resolved == ["lukaemon/bbh@main"] and set(hub.loaded) == {f"lukaemon/bbh@{COMMIT_A}"}
    assert hub.configs == list(BBH_TASKS) and len(hub.configs) == 27
    copy = pl.read_parquet(tmp_path / "cache" / "benchmark-bbh" / f"{COMMIT_A}.parquet")
    assert copy["config"].to_list() == list(BBH_TASKS)
    report = result.manifest["decontamination"]
    assert report["benchmarks"][0]["items"] == 27 and report["removed"] == 1
    assert report["hits"][0]["examples"][0]["item"] == f"bbh/{BBH_TASKS.index('word_sorting')}"
    assert result.manifest["totals"]["rows"] == 3


def test_a_locked_build_refuses_a_changed_benchmark_file(tmp_path):
    (tmp_path / "bench.jsonl").write_text(json.dumps({"question": "what is the capital of france"}) + "\n")
    recipe = _recipe_with_benchmarks(tmp_path, alpaca_rows(3), "[{name: toy, path: bench.jsonl, fields: [question]}]")
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    build(recipe, options, out=tmp_path / "o")
    assert json.loads(recipe.with_suffix(".lock").read_text())["benchmarks"]["toy"]["files"][0]["path"] == "bench.jsonl"
    (tmp_path / "bench.jsonl").write_text(json.dumps({"question": "what is the capital of spain"}) + "\n")
    with pytest.raises(MixerError, match=r"benchmarks\.toy: bench\.jsonl: locked sha256 [0-9a-f]{12}…, now"):
        build(recipe, options, out=tmp_path / "o", locked=True)


@pytest.mark.parametrize(
    ("name", "message", "hint"),
    [
        ("humaneva", "not a known benchmark (alpaca_eval, bbh, gsm8k, humaneval, ifeval, mbpp, mmlu)", "did you mean"),
        ("gsm8k", "cannot load openai/gsm8k@main from the hub (OSError: offline mode", "put gsm8k.jsonl"),
    ],
)
def test_a_benchmark_with_no_file_to_read_says_where_to_put_one(tmp_path, name, message, hint):
    recipe = _recipe_with_benchmarks(tmp_path, alpaca_rows(3), f"[{name}]")
    with pytest.raises(MixerError) as failure:
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "o")
    assert message in failure.value.message and hint in (failure.value.hint or "")


def test_every_benchmark_the_hub_cannot_supply_is_named_at_once(tmp_path):
    recipe = _recipe_with_benchmarks(tmp_path, alpaca_rows(3), "[gsm8k, humaneval, mbpp]")
    data = tmp_path / "data"
    data.mkdir()
    (data / "humaneval.jsonl").write_text(json.dumps({"prompt": "def f():"}) + "\n")
    with pytest.raises(MixerError) as failure:
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache", data_dir=data), out=tmp_path / "o")
    assert failure.value.message.splitlines() == [
        "2 benchmarks cannot be read; the hub cannot supply them (OSError: offline mode (HF_HUB_OFFLINE=1), and "
        "'main' was never resolved to a commit here):",
        "  benchmark 'gsm8k': openai/gsm8k@main",
        "  benchmark 'mbpp': google-research-datasets/mbpp@main",
    ]
    assert (failure.value.hint or "").startswith(
        "give decontaminate: [{name: gsm8k, path: <file>}, {name: mbpp, path: <file>}], or put gsm8k.jsonl, "
        "mbpp.jsonl (or .json"
    )


def test_known_benchmarks_are_found_in_the_data_dir_by_name(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "humaneval.jsonl").write_text(json.dumps({"task_id": "HumanEval/0", "prompt": HUMANEVAL_ITEM}) + "\n")
    (data / "gsm8k.jsonl").write_text(json.dumps({"question": "How many legs do three spiders have in total?"}) + "\n")
    planted = {"instruction": HUMANEVAL_ITEM, "input": "", "output": "ok"}
    recipe = _recipe_with_benchmarks(tmp_path, [*alpaca_rows(4), planted], "[humaneval, gsm8k]")
    result = build(recipe, Options(progress=False, cache_dir=tmp_path / "cache", data_dir=data), out=tmp_path / "o")
    report = result.manifest["decontamination"]
    assert [(b["benchmark"], b["path"], b["items"]) for b in report["benchmarks"]] == [
        ("humaneval", "data-dir:humaneval.jsonl", 1),
        ("gsm8k", "data-dir:gsm8k.jsonl", 1),
    ]
    assert [(h["benchmark"], h["rows"]) for h in report["hits"]] == [("gsm8k", 0), ("humaneval", 1)]
    lock = json.loads(recipe.with_suffix(".lock").read_text())["benchmarks"]
    assert {name: (entry["origin"], entry["files"][0]["path"]) for name, entry in lock.items()} == {
        "humaneval": ("data_dir", "data-dir:humaneval.jsonl"),
        "gsm8k": ("data_dir", "data-dir:gsm8k.jsonl"),
    }


def test_a_hub_input_is_locked_by_its_commit_not_by_the_bytes_of_its_local_copy(tmp_path, monkeypatch):
    """The parquet copy's footer names the pyarrow that wrote it: a teammate's copy of the same commit has
    another sha256, and must still build --locked. Another commit must not."""
    FakeHub(monkeypatch, COMMIT_A)
    recipe = write_recipe(tmp_path, "name: hub\nsources:\n  code: {source: code_alpaca, take: all}\n")
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    build(recipe, options, out=tmp_path / "o")
    lock_file = recipe.with_suffix(".lock")
    lock = json.loads(lock_file.read_text())
    lock["sources"]["code"]["files"][0]["sha256"] = "0" * 64
    lock_file.write_text(json.dumps(lock))
    assert build(recipe, options, out=tmp_path / "o", locked=True).status == "up-to-date"

    lock["sources"]["code"]["files"][0]["path"] = f"hub:sahil2801/CodeAlpaca-20k@{COMMIT_B}"
    lock_file.write_text(json.dumps(lock))
    with pytest.raises(MixerError) as failure:
        build(recipe, options, out=tmp_path / "o", locked=True)
    assert failure.value.message.splitlines()[1:] == [
        f"  sources.code: hub:sahil2801/CodeAlpaca-20k@{COMMIT_A}: added",
        f"  sources.code: hub:sahil2801/CodeAlpaca-20k@{COMMIT_B}: removed",
    ]


def test_mixer_sources_lists_the_known_benchmarks_and_where_they_come_from():
    result = run_mixer("sources", "--json")
    assert result.returncode == 0, result.stderr
    benchmarks = json.loads(result.stdout)["benchmarks"]
    assert sorted(benchmarks) == ["alpaca_eval", "bbh", "gsm8k", "humaneval", "ifeval", "mbpp", "mmlu"]
    assert benchmarks["gsm8k"] == {"fields": ["question"], "hub": "openai/gsm8k@main (config main, split test)"}
    assert benchmarks["bbh"] == {"fields": ["input"], "hub": "lukaemon/bbh@main (27 configs, split test)"}
    assert ".arrow" in json.loads(result.stdout)["file_suffixes"]
    table = run_mixer("sources", env={"COLUMNS": "200"}).stdout
    assert "│ humaneval   │ prompt      │ openai/openai_humaneval@main (split test)" in table
    assert "files: .json, .jsonl, .jsonl.gz, .json.gz, .parquet, .arrow, .csv, .tsv, .tsv.gz, .csv.gz, and " in table
    assert "│ turns      │ conversations: [user, assistant, user, ...] as plain strings (LIMA)" in table  # not a tag


def test_a_misspelt_benchmark_is_reported_before_any_download(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch, COMMIT_A)
    recipe = _recipe_with_benchmarks(tmp_path, alpaca_rows(3), "[gsm8k, humaneva]")
    with pytest.raises(MixerError, match="benchmark 'humaneva': no local file, and not a known benchmark"):
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / "o")
    assert hub.resolved == [] and hub.loaded == []


def test_a_current_lock_is_left_untouched_and_an_unwritable_one_is_named(tmp_path, monkeypatch):
    """A recipe in a read-only checkout (a container's mounted configs) builds while its lock is current; when the
    lock must change and cannot be written, the error says so after the output is in place, without a traceback."""
    import errno

    import mixer.lock

    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(5)))
    recipe = write_recipe(tmp_path, "name: r\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    build(recipe, Options(progress=False), out=tmp_path / "o")
    lock = tmp_path / "recipe.lock"
    written = lock.stat().st_ino

    def read_only(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(mixer.lock, "write_atomic_file", read_only)
    build(recipe, Options(progress=False), out=tmp_path / "o", force=True, locked=True)
    assert lock.stat().st_ino == written  # not replaced by a copy of itself
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(6)))
    with pytest.raises(MixerError) as unwritable:
        build(recipe, Options(progress=False), out=tmp_path / "o")
    assert unwritable.value.message == f"cannot write the lock {lock}: Read-only file system"
    assert "the output itself is in place" in unwritable.value.hint
    assert pl.read_parquet(tmp_path / "o" / "data").height == 6


def test_two_files_of_one_name_in_the_data_dir_are_refused_not_picked_by_suffix(tmp_path):
    """`dolly.json` left beside the `dolly.jsonl` made from it: the first by suffix order (.json) was read,
    silently, whichever was meant. Sources and benchmarks alike."""
    data = tmp_path / "data"
    data.mkdir()
    write_alpaca(data / "mine.jsonl", alpaca_rows(3))
    (data / "mine.json").write_text(json.dumps(alpaca_rows(5)))
    recipe = write_recipe(tmp_path, "name: r\nsources:\n  mine: {hub: org/mine, format: alpaca, take: all}\n")
    with pytest.raises(MixerError) as refused:
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache", data_dir=data), out=tmp_path / "o")
    assert refused.value.message == (
        f"source 'mine': {data} holds mine.json and mine.jsonl; which one to read is not clear"
    )
    assert refused.value.hint == "keep one of them there, or name the file in the recipe (`path:`)"

    (data / "mine.json").unlink()
    (data / "gsm8k.jsonl").write_text(json.dumps({"question": "How many legs do three spiders have?"}) + "\n")
    pl.DataFrame({"question": ["What is two and two?"]}).write_parquet(data / "gsm8k.parquet")
    recipe = _recipe_with_benchmarks(tmp_path, alpaca_rows(4), "[gsm8k]")
    with pytest.raises(MixerError, match=r"^benchmark 'gsm8k': .* holds gsm8k.jsonl and gsm8k.parquet; which one"):
        build(recipe, Options(progress=False, cache_dir=tmp_path / "cache", data_dir=data), out=tmp_path / "o")
