"""The rules for one source entry, beyond its shape: where its rows come from (a registry entry, files, the
Hub, an evolve block), that its format fits its use, and that its files exist and can be read.

A path that names nothing is the commonest slip, so its diagnostic names the closest file or the first missing
folder. Stages' data entries are sources too and are checked here with their purpose.
"""

from __future__ import annotations

import difflib
import glob
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mixer.adapters import FORMATS, format_spec
from mixer.adapters.formats import (
    OPTION_VALUES,
    SUPPORTED_SUFFIXES,
    readable,
    supported_suffix,
    unreadable_file,
)
from mixer.errors import TOO_LONG_HINT, Diagnostic, name_too_long
from mixer.key_hints import did_you_mean
from mixer.registry import load_registry
from mixer.saved_dataset import one_split_hint, saved_dataset_files, saved_splits
from mixer.yamlpos import Located

SELECTORS = ("take", "fraction", "weight")


def as_mapping(value: Any) -> dict:
    """`value` when it is a mapping, else empty: the semantic checks read what the schema has already judged,
    and a value of the wrong type is the schema's error to report, not a traceback."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _check_fields_options(located: Located, path: tuple, spec: dict, fmt: str) -> list[Diagnostic]:
    adapter = format_spec(fmt)
    problems = [
        located.diag(
            (*path, f"{kind}s", key),
            f"format {fmt!r} has no {kind} {key!r}",
            did_you_mean(key, list(known)) or f"{kind}s of {fmt}: {', '.join(known) or 'none'}",
            key=True,
        )
        for kind, known in (("field", adapter.fields), ("option", adapter.options))
        for key in as_mapping(spec.get(f"{kind}s"))
        if key not in known
    ]
    for key, value in as_mapping(spec.get("options")).items():
        if key in adapter.options and key in OPTION_VALUES and not OPTION_VALUES[key][1](value):
            problems.append(
                located.diag((*path, "options", key), f"option {key!r} must be {OPTION_VALUES[key][0]}, not {value!r}")
            )
    return problems


def _check_prompts_source(located: Located, name: str, spec: dict, path: tuple, purpose: str) -> list[Diagnostic]:
    """Prompts have no replies: rows of them in a mixture or a stage would teach nothing (or fail the trainer);
    they are an evolve block's seeds, whose evolved source brings the teacher's answers."""
    if purpose != "mix":
        return [
            located.diag(
                path,
                f"the data of stage {name!r} is prompts without replies; a stage cannot train on them",
                "seed an evolve block with them (a source with take: 0 named in its `from:`) and train on the mixture",
                key=True,
            )
        ]
    hint = f"name it in an evolve block's `from: {name}`; the block's evolved source brings the teacher's answers"
    problems = []
    selector = next((k for k in SELECTORS if k in spec), None)
    if selector is not None and not (selector == "take" and spec["take"] == 0):
        problems.append(
            located.diag(
                (*path, selector),
                f"{name!r} holds prompts without replies; it can only seed evolve blocks, not add rows to the mixture",
                f"write take: 0 and {hint}",
            )
        )
    for key in ("min_turns", "max_turns"):
        if key in spec:
            problems.append(
                located.diag((*path, key), "prompts have no assistant turns to count", f"drop `{key}` here", key=True)
            )
    return problems


def check_source(
    located: Located, name: str, spec: dict, base_dir: Path, total: Any, path: tuple | None = None, purpose: str = "mix"
) -> list[Diagnostic]:
    """Rules for one source; `purpose` is "mix" (an SFT mixture component), "sft" or "dpo" (a stage's data)."""
    path = path or ("sources", name)
    problems: list[Diagnostic] = []
    if "evolved" in spec:
        return _check_evolved_source(located, name, spec, path)
    registry = load_registry()
    entry = None
    if isinstance(spec.get("source"), str):  # another type is the schema's to report
        entry = registry.get(spec["source"])
        if entry is None:
            problems.append(
                located.diag(
                    (*path, "source"),
                    f"unknown source {spec['source']!r}",
                    did_you_mean(spec["source"], list(registry)) or "run `mixer sources` to list the registry",
                )
            )
    elif "path" not in spec and "hub" not in spec:
        problems.append(
            located.diag(
                path,
                f"source {name!r} needs `source:` (a registry entry), `path:` + `format:` or `hub:` + `format:`",
                _unplaced_source_hint(located, name, path),
                key=True,
            )
        )
    if "hub" in spec and (others := [k for k in ("source", "path") if k in spec]):
        problems.append(
            located.diag(
                (*path, "hub"),
                f"`hub:` and `{others[0]}:` both say where the rows of {name!r} come from",
                "keep one: `hub:` reads the dataset from the Hugging Face Hub, `path:` local files, `source:` a "
                "registry entry",
                key=True,
            )
        )
    fmt = spec.get("format") or (entry.format if entry else None)
    if "format" in spec and spec["format"] not in FORMATS:
        problems.append(
            located.diag(
                (*path, "format"),
                f"unknown format {spec['format']!r}",
                _unknown_format_hint(spec["format"]),
            )
        )
        fmt = None
    elif (
        (inline := next((k for k in ("path", "hub") if k in spec), None))
        and "source" not in spec
        and "format" not in spec
    ):
        problems.append(
            located.diag(
                (*path, inline), f"inline source {name!r} needs `format:`", _format_hint(name, inline), key=True
            )
        )
    if fmt:
        problems += _check_fields_options(located, path, spec, fmt)
        adapter = format_spec(fmt)
        if adapter.kind == "preference" and purpose != "dpo":
            where = "mixed into an SFT mixture" if purpose == "mix" else "used for SFT"
            problems.append(
                located.diag(
                    path,
                    f"{name!r} is preference data ({fmt}); it cannot be {where}",
                    "use it as the data of a dpo stage",
                    key=True,
                )
            )
        if adapter.kind == "prompts":
            problems += _check_prompts_source(located, name, spec, path, purpose)
        if adapter.kind != "preference" and purpose == "dpo":
            problems.append(
                located.diag(
                    path,
                    f"a dpo stage needs preference data (prompt/chosen/rejected), not {fmt!r}",
                    "use a preference source, e.g. {source: ultrafeedback, take: all}",
                    key=True,
                )
            )
        if "system" in spec and adapter.kind != "sft":
            what = "preference pairs" if adapter.kind == "preference" else "prompts an evolve block rewrites"
            problems.append(
                located.diag(
                    (*path, "system"),
                    f"`system` puts a system turn in conversations; {name!r} holds {what}",
                    "delete it here",
                    key=True,
                )
            )
        if "lang" in spec and not adapter.has_lang:
            problems.append(
                located.diag(
                    (*path, "lang"),
                    f"format {fmt!r} carries no language field to filter on",
                    "only oasst sources have one; drop `lang` here",
                    key=True,
                )
            )

    problems += _selector_problems(located, name, spec, path, total)
    take = spec.get("take")
    if (
        entry
        and "path" not in spec
        and isinstance(take, int)
        and not isinstance(take, bool)
        and take > entry.expected_rows
    ):
        problems.append(
            located.diag(
                (*path, "take"),
                f"take {take} is more than the {entry.expected_rows} rows of {entry.name!r}",
                "use fraction: f (f > 1 upsamples) or take: all",
            )
        )
    if spec.get("min_turns") and spec.get("max_turns") and spec["min_turns"] > spec["max_turns"]:
        problems.append(located.diag((*path, "min_turns"), "min_turns is larger than max_turns", key=True))
    raw_paths = spec.get("path")
    entries = [raw_paths] if isinstance(raw_paths, str) else as_list(raw_paths)
    matched_by: dict[Path, str] = {}  # each file, and the entry of `path` that matched it first
    for i, raw in enumerate(entries):
        where = (*path, "path") if isinstance(raw_paths, str) else (*path, "path", i)
        if not isinstance(raw, str):
            continue
        files = expand_paths(raw, base_dir)
        if not files:
            problems.append(located.diag(where, *_missing_path(raw, base_dir)))
        if (unread := next((f for f in files if not readable(f.name)), None)) is not None:
            message, hint = unreadable_file(_shown_path(unread))  # what the build would stop at
            named = repr(raw) if unread.name == Path(raw).name else f"{raw!r} (its file {unread.name})"
            problems.append(located.diag(where, f"{named}: {message}", hint))
        if len(entries) < 2:  # one pattern matches each file once; resolving 1,000 files is 0.1 s of a no-op
            continue
        resolved = [(f, f.resolve()) for f in files]
        again = next(((f, r) for f, r in resolved if r in matched_by), None)
        if again is not None:
            first = matched_by[again[1]]
            said = "is listed twice" if first == raw else f"matches {again[0].name}, which {first!r} matched already"
            problems.append(
                located.diag(
                    where,
                    f"{raw!r} {said}: its rows would be read twice",
                    "name each file once; to repeat a source's rows, use fraction: f with f > 1",
                )
            )
        matched_by.update((r, raw) for _, r in resolved if r not in matched_by)
    return problems


def _unplaced_source_hint(located: Located, name: str, path: tuple) -> str:
    """A source with only a selector is most often a recipe's change to an inherited source under a misspelt
    name (which adds a new source, with nowhere to read from), or a registry entry named without `source:`."""
    if path == ("sources", name):  # a mixture's source, not a stage's data
        inherited = {}  # name -> the first of its keys that a recipe this one extends wrote
        for place in located.files:
            if place[:1] == ("sources",) and len(place) > 2 and located.file_of(place) != located.file:
                inherited.setdefault(place[1], place)
        close = difflib.get_close_matches(name, [n for n in inherited if n != name], n=1, cutoff=0.6)
        if close:
            file, line, _ = located.where(inherited[close[0]], key=True)
            return (
                f"did you mean {close[0]!r} ({file}:{line})? A recipe that extends another changes a source by "
                "its exact name; another name adds a source"
            )
    if name in load_registry():
        return f"`source: {name}` reads the registry's entry"
    return "run `mixer sources` to list the registry"


def _unknown_format_hint(fmt: object) -> str:
    """A registry name in `format:` is a common slip (Code-Alpaca's rows are in Alpaca's format); say which is which."""
    entry = load_registry().get(fmt) if isinstance(fmt, str) else None
    if entry is not None:
        return (
            f"{fmt!r} is a source in the registry, not a format: write `source: {fmt}` (a `path:` beside it "
            f"reads your copy), or `format: {entry.format}`, the format its rows are in"
        )
    return did_you_mean(fmt, FORMATS) or f"formats: {', '.join(FORMATS)}"


def _format_hint(name: str, inline: str) -> str:
    """A source named after a registry entry but given only `path:` most likely holds that entry's files:
    `source:` reads them with the entry's format, field names, options and license, which `format:` alone
    would not bring. A `hub:` source cannot take `source:` too, so it is told the entry's format."""
    formats = f"one of: {', '.join(FORMATS)}"
    entry = load_registry().get(name)
    if entry is None:
        return formats
    if inline == "path":
        return f"`source: {name}` reads them as the registry's entry ({entry.format}); or give `format:`, {formats}"
    return f"the registry's {name!r} is `format: {entry.format}`; {formats}"


def _directory_hint(raw: str, folder: Path) -> str:
    """Name the folder's files by the readable suffix most of them have, as written (a folder of FLAN's TSVs
    was told `*.jsonl`); ties go to the suffix SUPPORTED_SUFFIXES lists first, so the hint never depends on
    the order the filesystem lists files in. Files only in subfolders are named with `**/`."""
    stem = raw.rstrip("/")
    try:
        found = _readable_suffixes(folder.iterdir())
        if not found:
            found = _readable_suffixes(islice(folder.rglob("*"), 10_000))
            stem += "/**" if found else ""
    except OSError:  # a folder we may not list: the usual example
        return f"name its files, e.g. {stem + '/*.jsonl'!r}"
    if not found:
        return f"name its files, e.g. {stem + '/*.jsonl'!r}; it holds none that mixer reads"
    suffix = max(found, key=lambda s: (found[s], -SUPPORTED_SUFFIXES.index(s.lower())))
    return f"name its files, e.g. {stem + '/*' + suffix!r}"


def _readable_suffixes(paths: Iterable[Path]) -> Counter[str]:
    """How many of `paths` are files of each readable suffix, in the file's own case."""
    found: Counter[str] = Counter()
    for path in paths:
        suffix = supported_suffix(path.name)
        if suffix is not None and path.is_file():
            found[path.name[-len(suffix) :]] += 1
    return found


def _shown_path(path: Path) -> str:
    """`path` as a command typed here would name it: relative to the working directory when below it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


# a Hub file's address, as copied from the browser or written for fsspec: org/name, revision, file in the repo
HUB_URL = re.compile(
    r"^(?:https?://huggingface\.co/datasets/([^/]+/[^/@]+)/(?:resolve|blob|tree)/([^/]+)"
    r"|hf://datasets/([^/]+/[^/@]+?)(?:@([^/]+))?)(?:/(.*))?$"
)


def _url_hint(raw: str) -> str:
    """A Hub address becomes the `hub:` entry that reads it (its revision pinned by the lock); any other URL is
    downloaded first, since builds read no network but the Hub."""
    found = HUB_URL.match(raw)
    if found is None:
        return "download it first and name the file, or put it in --data-dir as <source>.<ext>"
    repo, revision, file = found[1] or found[3], found[2] or found[4], found[5]
    fields = [f"id: {repo}"]
    fields += [f"revision: {json.dumps(unquote(revision))}"] if revision else []  # refs%2Fconvert%2Fparquet
    fields += [f"data_files: {json.dumps(file)}"] if file else []  # quoted: `*.parquet` alone is a YAML alias
    return "read it from the Hub instead of `path:`: hub: {" + ", ".join(fields) + "}"


def _missing_path(raw: str, base_dir: Path) -> tuple[str, str]:
    """Message and hint for a path that names no file. A typo in a long data path is the usual cause, so the
    hint names the closest file of that folder, or the first folder on the way that does not exist."""
    if "://" in raw:
        return f"{raw!r} is a URL: `path:` names files on this machine", _url_hint(raw)
    full = full_path(raw, base_dir)
    relative = "" if Path(os.path.expanduser(raw)).is_absolute() else f" (relative to {base_dir})"
    try:
        os.stat(full)
    except OSError as exc:
        if name_too_long(exc):
            return f"{raw!r} has a name longer than the file system allows{relative}", TOO_LONG_HINT
    if full.is_dir():
        if (full / "state.json").is_file():  # saved by `datasets`, but not whole
            hint = "its state.json names Arrow files that are not there, or none: save the dataset again"
        elif splits := saved_splits(full):
            hint = one_split_hint(splits, raw)
        else:
            hint = _directory_hint(raw, full)
        return f"{raw!r} is a directory{relative}", hint
    message = f"no file matches {raw!r}{relative}"
    hint = "check the name" if relative == "" else "paths are relative to the recipe file; check the name"
    if glob.has_magic(str(full.parent)):
        return message, hint
    missing = next((d for d in reversed(full.parents) if not d.is_dir()), None)
    if missing is not None:
        return message, f"there is no folder {str(missing)!r}"
    try:
        names = sorted(child.name for child in full.parent.iterdir() if child.is_file())
    except OSError:  # a folder we may not list: the plain hint
        names = []
    if not glob.has_magic(full.name):
        close = difflib.get_close_matches(full.name, names, n=1, cutoff=0.6)
        if close:
            return message, f"did you mean {raw[: len(raw) - len(full.name)] + close[0]!r}?"
    elif names:
        endings = sorted({"".join(Path(name).suffixes) or name for name in names})
        return message, f"its folder holds {len(names)} file(s), ending in {', '.join(endings[:5])}"
    return message, hint


def _selector_problems(located: Located, name: str, spec: dict, path: tuple, total: Any) -> list[Diagnostic]:
    problems = []
    chosen = [k for k in SELECTORS if k in spec]
    if not chosen:
        problems.append(
            located.diag(
                path,
                f"source {name!r} needs one of take / fraction / weight",
                "e.g. take: 1000, take: all, fraction: 0.5 or weight: 0.1",
                key=True,
            )
        )
    for extra in chosen[1:]:
        message = f"{extra!r} conflicts with {chosen[0]!r}: give exactly one of take / fraction / weight"
        inherited = [k for k in (chosen[0], extra) if located.file_of((*path, k)) != located.file]
        if len(inherited) == 1:  # one comes from a recipe this one extends: it cannot be deleted from here
            (old,) = inherited
            new = extra if old == chosen[0] else chosen[0]
            file, line, _ = located.where((*path, old), key=True)
            hint = f"{old!r} comes from {file}:{line}; write `{old}: null` beside {new!r} to replace it"
            problems.append(located.diag((*path, new), message, hint, key=True))
            continue
        problems.append(located.diag((*path, extra), message, f"delete {extra!r} or {chosen[0]!r}", key=True))
    if "weight" in spec and total is None:
        problems.append(
            located.diag(
                (*path, "weight"),
                "`weight` is a share of mixture.total, which is not set",
                "add mixture: {total: N} or use take: N",
                key=True,
            )
        )
    return problems


def _check_evolved_source(located: Located, name: str, spec: dict, path: tuple) -> list[Diagnostic]:
    """`{evolved: block}`: the rows come from an evolve block, so no file, format or registry entry."""
    problems = []
    blocks = located.data.get("evolve") if isinstance(located.data.get("evolve"), dict) else {}
    if isinstance(spec["evolved"], str) and spec["evolved"] not in blocks:
        problems.append(
            located.diag(
                (*path, "evolved"),
                f"unknown evolve block {spec['evolved']!r}",
                did_you_mean(spec["evolved"], list(blocks)) or "define it under evolve:",
            )
        )
    for key in ("source", "path", "hub", "format", "fields", "options", "lang", "license", "system"):
        if key in spec:
            problems.append(
                located.diag((*path, key), f"{key!r} does not apply to an evolved source", f"delete {key!r}", key=True)
            )
    mixture = located.data.get("mixture") if isinstance(located.data.get("mixture"), dict) else {}
    return problems + _selector_problems(located, name, spec, path, mixture.get("total"))


def full_path(raw: str, base_dir: Path) -> Path:
    """A path as a recipe writes it (`~` expanded, relative to the recipe directory) made absolute."""
    path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else base_dir / path


def expand_paths(raw: str, base_dir: Path) -> list[Path]:
    """A path or glob relative to the recipe directory → existing files, sorted for determinism."""
    full = full_path(raw, base_dir)
    # os.path's checks, not Path's: a name longer than the file system allows is no file (Path raises there)
    if os.path.isfile(full):  # a file whose name has glob characters (`shard[1].jsonl`) is itself, not a pattern
        return [full]
    if os.path.isdir(full):
        return saved_dataset_files(full) or []
    if glob.has_magic(str(full)):
        return sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
    return []
