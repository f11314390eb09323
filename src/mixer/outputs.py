"""Reading back what mixer wrote: a build's manifest.json, a training stage's run.json.

`diff`, `stats` and `runs` read these files long after they were written, and they may have been edited by
hand, cut short by a full disk, or copied from another tool's folder of the same name. Each reader gets the
file whole or an error that names it and says how to write it again, never a KeyError halfway through.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixer.errors import MixerError

# the keys the readers index without looking (`manifest["totals"]["rows"]`), as paths; "*" is every value
MANIFEST_SHAPE: tuple[tuple[str, ...], ...] = (
    ("recipe", "name"),
    ("resolved_recipe",),
    ("totals", "rows"),
    ("sources", "*", "counts", "written"),
)
RUN_SHAPE: tuple[tuple[str, ...], ...] = (("recipe", "name"), ("recipe", "fingerprint"), ("recipe", "path"))


# a training stage's copy of the manifest of the mixture it trained on (the build's folder is rebuilt in place)
MIXTURE_MANIFEST = "mixture-manifest.json"


REBUILD = "build it again with `mixer build`"


def read_manifest(folder: Path, name: str = "manifest.json") -> dict[str, Any]:
    return _read(folder / name, MANIFEST_SHAPE, REBUILD)


def listed_shards(out_dir: Path, manifest: dict[str, Any]) -> list[Path]:
    """The shards a build's manifest lists, each there at the size it was written. A rebuild is a no-op only
    then; `mixer stats` of a folder copied in part (an rsync cut short) or with a shard deleted read the rows
    left, or ended in a traceback from polars."""
    listed = manifest.get("shards")
    if not isinstance(listed, list) or not all(isinstance(s, dict) and isinstance(s.get("file"), str) for s in listed):
        raise MixerError(f"{out_dir / 'manifest.json'}: not as mixer writes it (no list of shards)", REBUILD)
    paths = []
    for shard in listed:
        path, written = out_dir / shard["file"], shard.get("bytes")
        if not path.is_file():
            raise MixerError(f"{path}: listed in manifest.json, and not there", REBUILD)
        if (size := path.stat().st_size) != written:
            wrote = f"the build wrote {written:,}" if isinstance(written, int) else "manifest.json gives no size"
            raise MixerError(f"{path}: {size:,} bytes, where {wrote}", REBUILD)
        paths.append(path)
    return paths


def read_run(folder: Path) -> dict[str, Any]:
    return _read(folder / "run.json", RUN_SHAPE, "run the stage again with `mixer train`")


def _read(path: Path, shape: tuple[tuple[str, ...], ...], fix: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MixerError(f"{path}: cannot be read as JSON ({exc})", fix) from None
    missing = [".".join(keys) for keys in shape if not _has(data, keys)]
    if missing:
        raise MixerError(f"{path}: not as mixer writes it (no {', '.join(missing)})", fix)
    return data


def _has(node: Any, keys: tuple[str, ...]) -> bool:
    if not keys:
        return True
    if not isinstance(node, dict):
        return False
    if keys[0] == "*":
        return all(_has(child, keys[1:]) for child in node.values())
    return keys[0] in node and _has(node[keys[0]], keys[1:])
