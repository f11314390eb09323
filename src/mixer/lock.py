"""recipe.lock: the resolved revision and content hash of every input, committed next to the recipe.

`mixer build --locked` refuses to build when an input no longer matches, instead of silently training on
data that changed under the same path (a stale-cache failure common in other tools).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixer import __version__
from mixer.errors import MixerError
from mixer.files import write_atomic_file

if TYPE_CHECKING:  # resolve reads the lock (locked_revisions), so the import goes one way only
    from mixer.benchmark_sets import ResolvedBenchmark
    from mixer.recipe import Recipe
    from mixer.resolve import ResolvedSource


def lock_path(recipe_path: Path) -> Path:
    return recipe_path.with_suffix(".lock")


def locked_revisions(recipe: Recipe) -> dict[str, str]:
    """Source name → revision recorded in the recipe's lock, for sources that still name the same registry
    entry or hub dataset (none when there is no readable lock)."""
    try:
        lock = json.loads(lock_path(recipe.path).read_text(encoding="utf-8"))["sources"]
        return {
            spec.name: lock[spec.name]["revision"]
            for spec in recipe.base_sources
            if spec.name in lock
            and lock[spec.name].get("registry") == spec.registry
            and lock[spec.name].get("hub") == (spec.hub.id if spec.hub else None)
            and isinstance(lock[spec.name].get("revision"), str)
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def locked_benchmark_revisions(recipe: Recipe) -> dict[str, tuple[str, str]]:
    """Benchmark name → (hub dataset, commit) recorded in the recipe's lock for benchmarks read from the hub
    (none when there is no readable lock)."""
    try:
        lock = json.loads(lock_path(recipe.path).read_text(encoding="utf-8")).get("benchmarks") or {}
        return {
            name: (entry["hub"], entry["revision"])
            for name, entry in lock.items()
            if entry.get("origin") == "hub" and all(isinstance(entry.get(k), str) for k in ("hub", "revision"))
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def lock_content(
    recipe_name: str, resolved: list[ResolvedSource], benchmarks: list[ResolvedBenchmark] | None = None
) -> dict[str, Any]:
    """Benchmarks (decontamination) are inputs too: in remove mode they decide which rows are written."""
    content = {
        "recipe": recipe_name,
        "mixer_version": __version__,
        "sources": {
            r.spec.name: {
                "registry": r.spec.registry,
                **({"hub": r.spec.hub.id} if r.spec.hub else {}),  # a recipe's own hub dataset
                "format": r.format,
                "origin": r.origin,
                "revision": r.revision,
                "files": [f.to_json() for f in r.files],
            }
            for r in resolved
        },
    }
    if benchmarks:
        content["benchmarks"] = {b.spec.name: b.to_lock() for b in benchmarks}
    return content


def _lock_text(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"


def _holds(path: Path, text: str) -> bool:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text(encoding="utf-8") == text
    return False


def lock_is_current(recipe_path: Path, content: dict[str, Any]) -> bool:
    return _holds(lock_path(recipe_path), _lock_text(content))


def write_lock(recipe_path: Path, content: dict[str, Any]) -> Path:
    """The lock beside the recipe, rewritten only when it changes: a recipe in a read-only checkout (a container's
    mounted config) builds as long as its lock is current."""
    path = lock_path(recipe_path)
    text = _lock_text(content)
    if _holds(path, text):
        return path
    try:
        write_atomic_file(path, text)
    except OSError as exc:
        raise MixerError(
            f"cannot write the lock {path}: {exc.strerror}",
            "the lock records the inputs' hashes beside the recipe, to commit with it; the output itself is in place."
            f" Make {path.parent} writable and build again (a no-op that writes the lock), or build a copy of the"
            " recipe from a folder you can write to",
        ) from None
    return path


def check_lock(recipe_path: Path, content: dict[str, Any]) -> None:
    """Raise with every mismatch between the current inputs and the committed lock."""
    path = lock_path(recipe_path)
    if not path.is_file():
        raise MixerError(f"{path}: no lock file", "build once without --locked to create it, then commit it")
    text = path.read_text(encoding="utf-8")
    try:
        locked = json.loads(text)
    except json.JSONDecodeError as exc:
        if re.search(r"^<{7}( |$)", text, flags=re.MULTILINE):  # two branches' locks merged: which inputs are right?
            raise MixerError(
                f"{path}: not valid JSON: it holds git's conflict markers (<<<<<<<)",
                "rebuild without --locked to write the lock of the inputs you have, check them, then commit it",
            ) from None
        raise MixerError(f"{path}: not valid JSON ({exc})", "rebuild without --locked to rewrite it") from None
    if (problem := _shape_problem(locked)) is not None:
        raise MixerError(f"{path}: not a lock as mixer writes it ({problem})", "rebuild without --locked to rewrite it")
    problems = []
    for section in ("sources", "benchmarks"):
        problems += _section_problems(section, locked.get(section) or {}, content.get(section) or {})
    if problems:
        raise MixerError(
            f"inputs no longer match {path}:\n" + "\n".join(problems),
            "restore the locked inputs, or rebuild without --locked to accept the change and update the lock",
        )


def _shape_problem(locked: Any) -> str | None:
    """What in a lock file is not where `check_lock` reads it (a hand edit, a merge gone wrong), or None."""
    if not isinstance(locked, dict):
        return "not a mapping"
    for section in ("sources", "benchmarks"):
        entries = locked.get(section) or {}
        if not isinstance(entries, dict):
            return f"`{section}` is not a mapping"
        for name, entry in entries.items():
            files = entry.get("files", []) if isinstance(entry, dict) else None
            if not isinstance(files, list) or not all(
                isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                for f in files
            ):
                return f"`{section}.{name}` is not an entry with files and their sha256"
    return None


def _section_problems(section: str, old_entries: dict[str, Any], new_entries: dict[str, Any]) -> list[str]:
    problems = []
    for name in sorted(set(old_entries) | set(new_entries)):
        old, new = old_entries.get(name), new_entries.get(name)
        if old is None or new is None:
            problems.append(f"  {section}.{name}: {'not in the lock' if old is None else 'no longer in the recipe'}")
            continue
        # A hub input is named by its commit (in its label and revision); the bytes of its local parquet copy
        # depend on the datasets/pyarrow that wrote it (the footer names the writer), so only its name counts.
        by_commit = old.get("origin") == new.get("origin") == "hub"
        old_files = {f["path"]: f["sha256"] for f in old.get("files", [])}
        new_files = {f["path"]: f["sha256"] for f in new["files"]}
        for file in sorted(set(old_files) ^ set(new_files)):
            problems.append(f"  {section}.{name}: {file}: {'added' if file in new_files else 'removed'}")
        for file in sorted(set(old_files) & set(new_files)):
            was, now = old_files[file], new_files[file]
            if was != now and not by_commit:
                problems.append(f"  {section}.{name}: {file}: locked sha256 {was[:12]}…, now {now[:12]}…")
        if old.get("revision") != new.get("revision"):
            problems.append(f"  {section}.{name}: revision {old.get('revision')} → {new.get('revision')}")
    return problems
