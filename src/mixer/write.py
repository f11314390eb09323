"""Write a build atomically: shards, manifest, dataset card and rejects go to a temp dir renamed into place.

An interrupted build (Ctrl-C, crash, kill -9) leaves the previous output untouched; what a killed build left
beside it is removed by the next one (`mixer.claims` tells a killed build's names from a running one's).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from mixer.claims import Claim, claim, clear_leftovers
from mixer.errors import MixerError, disk_full, first_of
from mixer.evolve.cost import usd_text
from mixer.hashing import file_sha256
from mixer.hub_licenses import card_licenses
from mixer.plan import Plan, removal_text
from mixer.threads import wait_for

# shards written at once. The writer (parquet encoding and zstd, one core for a 100K-row shard) was the write
# step's long pole at one; at two, the 1M benchmark builds 0.06-0.86 s faster in three A/B runs (~5%), for
# ~120-150 MB more peak: one more shard in memory (benchmarks/HISTORY.md, "Two shard writers")
WRITERS = 2


def _write_shard(frame: pl.DataFrame, path: Path) -> dict[str, Any]:
    frame.write_parquet(path, compression="zstd", statistics=False)
    return {
        "file": f"data/{path.name}",
        "split": path.name.split("-", 1)[0],  # train, or test for rows held out by mixture.eval
        "rows": frame.height,
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
    }


def write_shards(
    shards: Iterable[tuple[str, pl.DataFrame]], data_dir: Path, each: Callable[[pl.DataFrame], None]
) -> list[dict[str, Any]]:
    """Write (name, rows) shards as they come, calling `each` on every shard's rows (statistics). Shards are
    compressed and written by WRITERS threads while the next one is sorted, so at most WRITERS + 1 are in
    memory. Each shard is its own file, so its bytes do not depend on which thread wrote it."""
    data_dir.mkdir(parents=True)
    written: list[Future[dict[str, Any]]] = []
    with ThreadPoolExecutor(max_workers=WRITERS) as writer:
        for name, frame in shards:
            if len(written) >= WRITERS:
                wait_for(written[-WRITERS])  # WRITERS shards in flight at a time
            written.append(writer.submit(_write_shard, frame, data_dir / name))
            each(frame)
    return [wait_for(w) for w in written]


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def git_info(path: Path) -> dict[str, Any] | None:
    """Commit of the recipe's repository and whether the recipe differs from it; None outside git."""
    try:
        folder = path.resolve().parent
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", path.name],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": commit.stdout.strip(), "recipe_modified": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def system_section(sources: dict[str, Any]) -> list[str]:
    """The system turns the recipe put in (a source's `system:`): text the sources themselves never had."""
    systems = {name: spec["system"] for name, spec in sources.items() if isinstance(spec, dict) and spec.get("system")}
    if not systems:
        return []
    lines = ["", "A system turn leads each conversation of these sources that had none of its own:", ""]
    return lines + [f"- {name}: {json.dumps(text, ensure_ascii=False)}" for name, text in systems.items()]


def evolve_section(blocks: dict[str, dict[str, Any]]) -> list[str]:
    """Per-round accounting of each Evol-Instruct block: what was evolved, what each rule removed, the cost."""
    lines = []
    for name, block in blocks.items():
        usage = block["usage"]
        lines += [
            "",
            f"## Evol-Instruct block `{name}`",
            "",
            f"{block['seeds']:,} seed rows of `{block['from']}` evolved by `{block['teacher']['model']}` over "
            f"{len(block['rounds'])} round(s) with operators {', '.join(block['operators'])}; eliminated by "
            f"{', '.join(block['eliminate']) or 'no rule'}; kept: {block['keep']}. Each evolved row's `meta` "
            "carries parent_id, root_id, round, operator and teacher.",
            "",
            "| round | input | eliminated | surviving | tokens | USD |",
            "|---:|---:|---|---:|---:|---:|",
        ]
        for r in block["rounds"]:
            eliminated = ", ".join(f"{rule} {n:,}" for rule, n in r["eliminated"].items()) or "none"
            lines.append(
                f"| {r['round']} | {r['input']:,} | {eliminated} | {r['surviving']:,} | {r['tokens']:,} | "
                f"{usd_text(r['usd'], block['prices_known'])} |"
            )
        lines.append(
            f"| **total** | {block['seeds']:,} seeds | {block['rejected']:,} rejected | {block['rows']:,} kept | "
            f"{usage['tokens']:,} | {usd_text(usage['usd'], block['prices_known'])} |"
        )
        if block.get("reasoning_removed"):  # a build made before the count was kept has none
            kept = block["teacher"].get("reasoning") == "keep"
            lines += [
                "",
                f"{block['reasoning_removed']:,} completion(s) began with a reasoning model's `<think>` block, taken "
                f"out of {'rewrites and verdicts; answers keep it' if kept else 'rewrites, verdicts and answers'}.",
            ]
    return lines


def dataset_card(plan: Plan, manifest: dict[str, Any], description: str) -> str:
    """A Hugging Face dataset card: YAML header (license, size, data files) and the composition table."""
    licenses = card_licenses([s.license for s in plan.sources if s.selected])
    header = [
        "---",
        *([f"license: {licenses[0]}"] if len(licenses) == 1 else ["license:", *(f"- {x}" for x in licenses)]),
        f"pretty_name: {plan.recipe}",
        "task_categories:",
        "- text-generation",
        "size_categories:",
        f"- {_size_category(plan.total_rows)}",
        "tags:",
        "- instruction-tuning",
        "- mixer",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train-*.parquet",
        *(["  - split: test", "    path: data/test-*.parquet"] if plan.eval_rows else []),
        "---",
    ]
    lines = [
        f"# {plan.recipe}",
        "",
        description or "An instruction-tuning mixture built by mixer.",
        "",
        "## Composition",
        "",
        "| source | format | origin | license | available | selected | share | upsample | est. tokens |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in plan.sources:
        share = s.selected / plan.total_rows if plan.total_rows else 0
        lines.append(
            f"| {s.name} | {s.format} | {s.origin} | {s.license} | {s.available:,} | {s.selected:,} | "
            f"{share:.1%} | {s.upsample:g}× | {s.est_tokens:,} |"
        )
    copied = manifest.get("totals", {}).get("eval_copies_of_train_rows") or {}
    copies = (
        f" {sum(copied.values()):,} of the test rows are copies of rows `train` also holds (upsampled sources: "
        + ", ".join(f"{name} {count:,}" for name, count in copied.items())
        + "), so a loss on them is not a held-out loss."
        if copied
        else ""
    )
    lines += [
        f"| **total** | | | | | **{plan.total_rows:,}** | 100% | | {plan.est_tokens:,} |",
        "",
        *(
            [
                f"The last {plan.eval_rows:,} rows of the shuffled mixture are held out as the `test` split "
                f"(`mixture.eval`); `train` has the other {plan.total_rows - plan.eval_rows:,}.{copies}",
                "",
            ]
            if plan.eval_rows
            else []
        ),
        "Rows removed before selection, per source (malformed records, filters, cross-source dedup):",
        "",
    ]
    for s in plan.sources:
        lines.append(f"- {s.name}: " + (removal_text(s.counts) or f"read {s.counts.get('read', 0):,}, nothing removed"))
    lines += system_section(manifest["resolved_recipe"].get("sources") or {})
    lines += evolve_section(manifest.get("evolve") or {})
    lines += [
        "",
        "## Licenses",
        "",
        "Each row's `meta.license` names the license of its source. Respect every source's terms; several "
        "are non-commercial.",
        "",
        "## Reproduce",
        "",
        f"Built by mixer {manifest['mixer_version']} with seed {plan.seed}"
        + (" from the bundled samples (--sample)" if plan.sample else "")
        + ".",
        f"Plan fingerprint: `{plan.fingerprint}`.",
        "",
        "```",
        f"mixer build {plan.recipe_path}" + (" --sample" if plan.sample else ""),
        "```",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("parquet", data_dir="data", split="train")',
        "```",
        "",
    ]
    return "\n".join([*header, "", *lines])


BUILD_FILES = frozenset({"data", "rejects", "manifest.json", "README.md", "stats.json", "report.html"})
EVOLVE_FILES = frozenset({"data.parquet", "rejects.jsonl", "stats.json"})
FOLDER_VIEW_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # a file browser's, remade on demand


def check_replaceable(out_dir: Path, own: frozenset[str]) -> None:
    """An output directory is replaced whole, so refuse one holding anything its writer would not have put
    there (`own`): `--out ~/datasets` must not delete a user's files, nor a rebuild the benchmark results
    added to the mix it replaces."""
    if out_dir.exists() and not out_dir.is_dir():
        raise MixerError(f"{out_dir} is a file, not a directory", "pick another --out (or output.dir in the recipe)")
    if not out_dir.is_dir():
        return
    mine = own | FOLDER_VIEW_FILES
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out_dir.iterdir() if p.name not in mine)
    if foreign:
        shown = first_of(foreign)
        results = (
            " (results/ holds scores of the mix being replaced: keep them with it)" if "results/" in foreign else ""
        )
        raise MixerError(
            f"{out_dir} holds what mixer did not write there: {shown}",
            f"the output directory is replaced whole, which would delete them: move them elsewhere{results}, or pick"
            " another --out",
        )


def _unwritable(out_dir: Path, exc: OSError) -> MixerError:
    return MixerError(
        f"cannot write beside {out_dir}: {exc.strerror}",
        "a build writes its temp dir next to the output and renames it into place: pick another --out (or"
        " output.dir in the recipe) on a disk you can write to",
    )


def _claim_temp_dir(out_dir: Path) -> Claim:
    """This build's claim beside `out_dir` (what killed builds left there cleared first), with its temp dir
    made; a folder that cannot be written is named, not a traceback."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise MixerError(
            f"cannot create {out_dir.parent}: a file is in the way", "pick another --out (or output.dir in the recipe)"
        ) from None
    except OSError as exc:
        raise _unwritable(out_dir, exc) from None
    try:
        clear_leftovers(out_dir)
        claimed = claim(out_dir)
    except OSError as exc:
        raise _unwritable(out_dir, exc) from None
    try:
        claimed.temp.mkdir()
    except OSError as exc:
        claimed.release()
        raise _unwritable(out_dir, exc) from None
    return claimed


@contextlib.contextmanager
def atomic_dir(out_dir: Path, own: frozenset[str]) -> Iterator[Path]:
    """Yield a temp dir beside `out_dir`; on success it replaces `out_dir`, on any failure it is removed.
    `own` names what the writer puts in `out_dir` (see `check_replaceable`)."""
    check_replaceable(out_dir, own)
    claimed = _claim_temp_dir(out_dir)
    temp = claimed.temp
    try:
        try:
            yield temp
        except BaseException as exc:
            shutil.rmtree(temp, ignore_errors=True)
            if disk_full(exc):
                raise MixerError(
                    f"no space left on the disk holding {out_dir.parent} (the output is unchanged)",
                    "a build keeps its staged rows and sort buckets beside the output until it is renamed into"
                    " place: up to about 1.5 times the size of its JSON-lines inputs, plus the output. Free space"
                    " there, or pass --out DIR on a disk with room",
                ) from exc
            raise
        _swap_in(temp, out_dir, claimed.set_aside)
    finally:
        claimed.release()


def _swap_in(temp: Path, out_dir: Path, old: Path) -> None:
    """Two renames, with the previous output set aside as `old` in between (put back by the next build if
    this one is killed there)."""
    if out_dir.exists():
        out_dir.rename(old)
    try:
        temp.rename(out_dir)
    except OSError as exc:  # most often another process put its output there between the two renames
        restored = old.exists() and not out_dir.exists()
        if restored:
            old.rename(out_dir)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        raise MixerError(
            f"cannot put the new output in place at {out_dir}: {exc.strerror}",
            "the previous output is back in place"
            if restored
            else "another mixer process wrote it at the same time and its output stays; run one build per output",
        ) from None
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temp dir for rows that commands other than `build` stage (plan with evolve blocks, evolve, the audit),
    removed afterwards; a full disk there is named, with the way to put it elsewhere."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        try:
            yield Path(folder)
        except Exception as exc:
            if disk_full(exc):
                raise MixerError(
                    f"no space left on the disk holding {Path(folder).parent} for staged rows",
                    "they need up to about 1.5 times the size of the JSON-lines inputs; point TMPDIR at a folder"
                    " on a disk with room",
                ) from exc
            raise
