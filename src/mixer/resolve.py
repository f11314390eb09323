"""Find each source's input files: recipe path → --data-dir / MIXER_DATA_DIR → hub (datasets) → clear error.

With `sample=True`, registry sources read their bundled sample instead, so any recipe builds offline.
Every file gets a portable label (relative to the recipe, the data dir, the bundled samples or the hub
commit) for the lock and the manifest, so a lock committed on one machine checks on another.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mixer.adapters.formats import SUPPORTED_SUFFIXES, readable
from mixer.errors import MixerError
from mixer.files import replacing, write_cache_file
from mixer.hashing import FileHashes, file_sha256
from mixer.lock import locked_revisions
from mixer.recipe import Recipe, SourceSpec
from mixer.registry import HubRef, RegistryEntry, load_registry
from mixer.saved_dataset import one_split_hint, saved_dataset_files, saved_splits
from mixer.validate_sources import expand_paths

COMMIT = re.compile(r"[0-9a-f]{40}")
# how `datasets` refuses a split or config the dataset lacks (its message lists the ones it has)
NO_SUCH_PART = re.compile(r"Unknown split|Bad split|Config name is missing|BuilderConfig '.*' not found")


@dataclass(frozen=True)
class InputFile:
    path: Path
    sha256: str
    bytes: int
    label: str  # where the file is, in words that mean the same on every machine
    modified_ns: int  # when it was hashed (not written anywhere: it differs between machines)

    def to_json(self) -> dict:
        return {"path": self.label, "sha256": self.sha256, "bytes": self.bytes}

    def check_unchanged(self) -> None:
        """The manifest and the caches record the hash taken before reading: a file that changed since (a
        download or a job still writing it) was read as other bytes than they say."""
        stat = self.path.stat()
        if (stat.st_size, stat.st_mtime_ns) != (self.bytes, self.modified_ns):
            raise MixerError(
                f"{self.path} changed while mixer read it ({self.bytes:,} bytes when hashed, {stat.st_size:,} now)",
                "wait until whatever writes it is done, then run again; nothing was written or cached",
            )


@dataclass(frozen=True)
class ResolvedSource:
    spec: SourceSpec
    entry: RegistryEntry | None
    format: str
    origin: str  # path | data_dir | sample | hub
    files: tuple[InputFile, ...]
    revision: str | None
    license: str

    @property
    def fields(self) -> dict[str, str]:
        return {**(self.entry.fields if self.entry else {}), **self.spec.fields}

    @property
    def options(self) -> dict:
        return {**(self.entry.options if self.entry else {}), **self.spec.options}

    @property
    def on_error(self) -> str:
        return self.spec.on_error or (self.entry.on_error if self.entry else "error")


def input_files(labelled: list[tuple[Path, str]], hashes: FileHashes | None) -> tuple[InputFile, ...]:
    digest = hashes.sha256 if hashes is not None else file_sha256
    files = []
    for path, label in labelled:
        before = path.stat()  # taken before hashing, so a change while hashing counts too
        files.append(InputFile(path, digest(path), before.st_size, label, before.st_mtime_ns))
    return tuple(files)


def _under(folder: Path, path: Path, prefix: str) -> str:
    try:
        return f"{prefix}{path.resolve().relative_to(folder.resolve()).as_posix()}"
    except ValueError:
        return str(path)


def _recipe_files(spec: SourceSpec, base_dir: Path) -> list[tuple[Path, str]]:
    """Files of an inline source, labelled as the recipe names them: relative paths stay relative to the
    recipe (`../data/x.jsonl` included), absolute ones stay absolute."""
    labelled = []
    for raw in spec.paths:
        absolute = Path(os.path.expanduser(raw)).is_absolute()
        for path in expand_paths(raw, base_dir):
            labelled.append((path, str(path) if absolute else Path(os.path.relpath(path, base_dir)).as_posix()))
    return labelled


def existing_data_dir(data_dir: Path | None) -> Path | None:
    """`--data-dir`, else $MIXER_DATA_DIR; a folder that does not exist is a typo to report, not a reason to try
    the hub for every source."""
    named = "--data-dir"
    if data_dir is None and os.environ.get("MIXER_DATA_DIR"):
        data_dir, named = Path(os.environ["MIXER_DATA_DIR"]), "MIXER_DATA_DIR"
    if data_dir is not None and not data_dir.is_dir():
        raise MixerError(f"{named} {data_dir}: no such directory", "give the folder that holds <source>.jsonl files")
    return data_dir


def _from_data_dir(name: str, data_dir: Path) -> list[Path]:
    folder = data_dir / name
    if folder.is_dir():
        if (splits := saved_splits(folder)) is not None:
            raise MixerError(
                f"source {name!r}: {folder} holds more than one split",
                one_split_hint(splits, str(folder), in_recipe=True),
            )
        return saved_dataset_files(folder) or sorted(p for p in folder.iterdir() if p.is_file() and readable(p.name))
    found = named_in_data_dir(name, data_dir, "source")
    return [found] if found is not None else []


def named_in_data_dir(name: str, data_dir: Path, what: str) -> Path | None:
    """The data dir's `<name>.jsonl` (or another supported suffix). Two of them (`dolly.json` left beside the
    `dolly.jsonl` made from it) are refused: the first by suffix order was read, silently, whichever was meant."""
    found = [data_dir / f"{name}{suffix}" for suffix in SUPPORTED_SUFFIXES if (data_dir / f"{name}{suffix}").is_file()]
    if len(found) > 1:
        raise MixerError(
            f"{what} {name!r}: {data_dir} holds {' and '.join(p.name for p in found)}; which one to read is not clear",
            "keep one of them there, or name the file in the recipe (`path:`)",
        )
    return found[0] if found else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")
PROBE_SECONDS = 3.0


@functools.cache
def hub_unreachable() -> str | None:
    """Why the hub cannot be reached, from one TCP connection to it; None when it can, or when a proxy stands
    between (the connection would say nothing then). Without this check, a machine with no network waits
    through `datasets`' five retries with backoff (~25 s) per hub source before failing."""
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)  # a mirror may be plain http, or elsewhere
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        return f"cannot reach {host}:{port}: {exc}"
    return None


def why_hub_cannot_be_asked() -> str | None:
    """Offline mode or no connection: checked before any call to the hub (a branch's commit, a download, a
    card), each of which would otherwise wait through retries."""
    return "offline mode (HF_HUB_OFFLINE=1)" if _offline() else hub_unreachable()


def hub_commit(key: str, hub: HubRef, cache_dir: Path, locked: str | None, refresh: bool) -> str:
    """The commit a hub source is read at. A registry pin is used as is. A moving revision (a branch such as
    `main`) is taken from recipe.lock when the lock has it, as cargo does, so a committed lock rebuilds the
    same data everywhere; otherwise (or with `refresh`) it is asked of the hub, and remembered beside the
    cached copy (under `key`) so an offline rebuild without a lock reads the same commit."""
    if COMMIT.fullmatch(hub.revision):
        return hub.revision
    if locked and COMMIT.fullmatch(locked) and not refresh:
        return locked
    pointer = cache_dir / key / f"{hub.revision}.commit"
    if _offline():
        if refresh:
            raise OSError(f"offline mode (HF_HUB_OFFLINE=1): --refresh must ask the hub where {hub.revision!r} is")
        if pointer.is_file():
            return pointer.read_text(encoding="utf-8").strip()
        raise OSError(f"offline mode (HF_HUB_OFFLINE=1), and {hub.revision!r} was never resolved to a commit here")
    if (why := why_hub_cannot_be_asked()) is not None:
        raise OSError(why)
    from huggingface_hub import HfApi  # installed with datasets; only needed when a branch must be resolved

    commit = HfApi().dataset_info(hub.id, revision=hub.revision).sha
    if not commit or not COMMIT.fullmatch(commit):
        raise OSError(f"the hub gave no commit for {hub.id}@{hub.revision}")
    write_cache_file(pointer, commit + "\n")
    return commit


def from_hub(key: str, hub: HubRef, cache_dir: Path, commit: str) -> Path:
    """Download through `datasets` once and keep a parquet copy (under `key`) named by the commit it was read at."""
    target = cache_dir / key / f"{commit}.parquet"
    if target.is_file():
        return target
    if (why := why_hub_cannot_be_asked()) is not None:
        raise OSError(why)
    import datasets  # imported here: it is slow to import and only needed for hub sources

    parts = []
    for config in hub.configs or (hub.config,):
        part = datasets.load_dataset(hub.id, name=config, revision=commit, split=hub.split, data_files=hub.data_files)
        parts.append(part.add_column("config", [config] * len(part)) if hub.configs else part)
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    with replacing(target) as partial:
        dataset.to_parquet(str(partial))
    return target


class HubUnavailable(MixerError):
    """The hub cannot supply a dataset; `reason` is kept apart so that many sources failing for one reason
    (no network) are told it once."""

    def __init__(self, what: str, ref: str, reason: str, hint: str):
        super().__init__(f"{what}: cannot load {ref} from the hub ({reason})", hint)
        self.what, self.ref, self.reason = what, ref, reason


def read_from_hub(
    key: str, hub: HubRef, cache_dir: Path, locked: str | None, refresh: bool, what: str, hint: str
) -> tuple[Path, str]:
    """(cached parquet copy, commit) of a hub dataset; any failure is the user's to fix with a local file."""
    try:
        commit = hub_commit(key, hub, cache_dir, locked, refresh)
        return from_hub(key, hub, cache_dir, commit), commit
    except Exception as exc:  # network, auth, missing revision: all mean "supply it offline"
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
        raise HubUnavailable(what, f"{hub.id}@{hub.revision}", reason, hint) from None


LocalFiles = tuple[str, list[tuple[Path, str]]]  # (origin, labelled files)


class Unsupplied(HubUnavailable):
    """A source or benchmark with no local file that the hub cannot supply either; `data_file` is the name
    `--data-dir` would find it by."""

    def __init__(self, failure: HubUnavailable, data_file: str, hint: str, sampled: bool = False):
        super().__init__(failure.what, failure.ref, failure.reason, hint)
        self.data_file = data_file
        self.sampled = sampled  # a registry entry, which `--sample` reads from its bundled sample


def data_file_name(entry: RegistryEntry) -> str:
    """The file name `--data-dir` looks for, with the suffix of the format's native files (the bundled sample's:
    `cot.tsv`, `code_alpaca.json`), not always `.jsonl`."""
    return f"{entry.name}{entry.sample.suffix}"


def offline_hint(files: list[str], sampled: bool = True) -> str:
    """`sampled`: every source named has a bundled sample, so `--sample` is a way out (a recipe's own hub
    dataset has none)."""
    one = len(files) == 1
    where = f"put it at <data dir>/{files[0]}" if one else f"put them in one folder as {', '.join(files)}"
    return (
        f"download {'it' if one else 'them'} elsewhere and {where} (.jsonl, .json, .parquet, .arrow, .csv or "
        f".tsv, text gzipped or not; or a folder of such files, or one `save_to_disk` wrote, named after the "
        f"source), then pass --data-dir DIR or set MIXER_DATA_DIR; or give `path:` in the recipe"
        + (f"; or build with --sample to use the bundled sample{'' if one else 's'}" if sampled else "")
    )


def sources_hint(failures: list[Unsupplied]) -> str:
    return offline_hint([f.data_file for f in failures], all(f.sampled for f in failures))


def _local_files(
    spec: SourceSpec, entry: RegistryEntry | None, base_dir: Path, data_dir: Path | None, sample: bool
) -> LocalFiles | None:
    """(origin, labelled files) of a source read from this machine; None when it has to come from the hub."""
    if sample and entry is not None:
        return "sample", [(entry.sample, f"bundled:samples/{entry.sample.name}")]
    if spec.paths:
        labelled = _recipe_files(spec, base_dir)
        if not labelled:
            raise MixerError(f"{spec.where}: no file matches {list(spec.paths)}")
        return "path", labelled
    named = entry.name if entry is not None else (spec.name if spec.hub is not None else None)
    if named is not None and data_dir is not None:
        files = _from_data_dir(named, data_dir)
        if files:
            return "data_dir", [(f, _under(data_dir, f, "data-dir:")) for f in files]
    return None


def resolve_source(
    spec: SourceSpec,
    base_dir: Path,
    *,
    data_dir: Path | None,
    sample: bool,
    cache_dir: Path,
    hashes: FileHashes | None = None,
    locked: str | None = None,
    refresh: bool = False,
    located: dict[str, LocalFiles | None] | None = None,
) -> ResolvedSource:
    """`located`: the sources' local files as `resolve_recipe` found them (a glob over 1,000 files, with their
    labels, costs ~0.1 s to expand again)."""
    entry = load_registry().get(spec.registry) if spec.registry else None
    fmt = spec.format or (entry.format if entry else None)
    assert fmt is not None, "validated recipes name a format"
    hub = spec.hub or (entry.hub if entry else None)
    revision, license_ = (hub.revision if hub else None), spec.license or (entry.license if entry else "unknown")
    if located is not None and spec.name in located:
        local = located[spec.name]
    else:
        local = _local_files(spec, entry, base_dir, data_dir, sample)
    if local is not None:
        origin, labelled = local
        pinned = {"sample": "bundled-sample", "path": None, "data_dir": revision}[origin]
        return ResolvedSource(spec, entry, fmt, origin, input_files(labelled, hashes), pinned, license_)
    assert entry is not None or spec.hub is not None
    data_file = data_file_name(entry) if entry else f"{spec.name}.jsonl"
    hint = offline_hint([data_file], sampled=entry is not None)
    if hub is None:
        raise MixerError(f"{spec.where}: no local data for {spec.registry!r} and no hub location", hint)
    key = entry.name if entry else hub_cache_key(hub)
    try:
        path, commit = read_from_hub(key, hub, cache_dir, locked, refresh, spec.where, hint)
    except HubUnavailable as failure:
        if spec.hub is not None and NO_SUCH_PART.search(failure.reason):  # the recipe's to fix, not the network's
            fix = f"hub: {{id: {hub.id}, split: ..., config: ...}}"
            raise MixerError(
                failure.message, f"name a split (and config) the dataset has, listed above: {fix}"
            ) from None
        raise Unsupplied(failure, data_file, hint, sampled=entry is not None) from None
    labelled = [(path, f"hub:{hub.id}@{commit}")]
    fmt = spec.format or hub.format or fmt
    if spec.hub is not None and spec.license is None:  # a registry entry's license is curated; a card's is asked
        license_ = card_license(hub, cache_dir / key, commit) or license_
    return ResolvedSource(spec, entry, fmt, "hub", input_files(labelled, hashes), commit, license_)


def card_license(hub: HubRef, folder: Path, commit: str) -> str | None:
    """The license a hub dataset's card declares at `commit`, asked once and kept beside its cached copy (offline,
    a copy read before answers); None when the card declares none or the hub cannot be asked."""
    kept = folder / f"{commit}.license"
    if kept.is_file():
        return kept.read_text(encoding="utf-8").strip() or None
    if why_hub_cannot_be_asked() is not None:
        return None
    from huggingface_hub import HfApi  # installed with datasets

    try:
        card = HfApi().dataset_info(hub.id, revision=commit).card_data
    except Exception:  # the license is a courtesy: a failure to ask leaves it unknown, never stops a build
        return None
    declared = card.get("license") if card else None
    text = ", ".join(map(str, declared)) if isinstance(declared, list) else str(declared or "")
    write_cache_file(kept, text + "\n")
    return text or None


def hub_cache_key(hub: HubRef) -> str:
    """Where a recipe's own hub dataset is kept in the cache: apart from registry entries (named by the entry)
    and from other splits, configs or files of the same repository."""
    reading = json.dumps([hub.split, hub.config, list(hub.configs), hub.data_files])
    return f"hub--{hub.id.replace('/', '--')}--{hashlib.sha256(reading.encode()).hexdigest()[:12]}"


def _locate(recipe: Recipe, data_dir: Path | None, sample: bool) -> dict[str, LocalFiles | None]:
    """The local files of every source that has them or comes from the hub (None), found once: they are hashed
    together before each source resolves. A source whose files are missing is left out, for `resolve_source`
    to report in recipe order."""
    registry = load_registry()
    located: dict[str, LocalFiles | None] = {}
    for spec in recipe.base_sources:
        entry = registry.get(spec.registry) if spec.registry else None
        with contextlib.suppress(MixerError):
            located[spec.name] = _local_files(spec, entry, recipe.base_dir, data_dir, sample)
    return located


def default_cache_dir() -> Path:
    return Path(os.environ.get("MIXER_CACHE_DIR", Path.home() / ".cache" / "mixer"))


def resolve_recipe(
    recipe: Recipe,
    *,
    data_dir: Path | None = None,
    sample: bool = False,
    cache_dir: Path | None = None,
    refresh: bool = False,
    progress: bool = False,
) -> list[ResolvedSource]:
    """`refresh` asks the hub again for the commits of moving revisions instead of using those in the lock;
    `progress` shows hashing many gigabytes of new inputs."""
    data_dir = existing_data_dir(data_dir)
    cache = cache_dir or default_cache_dir()
    hashes = FileHashes(cache / "file-hashes.json")
    locked = {} if sample else locked_revisions(recipe)
    located = _locate(recipe, data_dir, sample)
    hashes.hash_ahead([path for local in located.values() if local for path, _ in local[1]], progress)
    resolved: list[ResolvedSource] = []
    unavailable: list[MixerError] = []
    for spec in recipe.base_sources:
        try:
            resolved.append(
                resolve_source(
                    spec,
                    recipe.base_dir,
                    data_dir=data_dir,
                    sample=sample,
                    cache_dir=cache,
                    hashes=hashes,
                    locked=locked.get(spec.name),
                    refresh=refresh,
                    located=located,
                )
            )
        except MixerError as exc:
            unavailable.append(exc)
    hashes.save()
    if unavailable:
        raise unavailable[0] if len(unavailable) == 1 else unsupplied_at_once(unavailable, "sources", sources_hint)
    return resolved


def unsupplied_at_once(failures: list[MixerError], noun: str, hint: Callable[[list[Unsupplied]], str]) -> MixerError:
    """Every source (or benchmark) that cannot be read, in one error: offline, a recipe of eleven hub sources
    otherwise takes eleven runs to learn which files to supply. A reason all of them share (no network) is said
    once; `hint` is given the ones a file would supply."""
    unsupplied = [f for f in failures if isinstance(f, Unsupplied)]
    reasons = {f.reason for f in unsupplied}
    shared = reasons.pop() if len(unsupplied) == len(failures) and len(reasons) == 1 else None
    lines = [
        (f"{f.what}: {f.ref}" + ("" if shared else f" ({f.reason})"))
        if isinstance(f, Unsupplied)
        else f.message + (f" ({f.hint})" if f.hint else "")
        for f in failures
    ]
    heading = f"{len(failures)} {noun} cannot be read" + (f"; the hub cannot supply them ({shared})" if shared else "")
    return MixerError(
        heading + ":\n" + "\n".join(f"  {line}" for line in lines),
        hint(unsupplied) if unsupplied else None,
    )
