"""Find run directories (run.json) and build outputs (manifest.json) for `mixer runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixer.errors import MixerError, first_of
from mixer.hashing import fingerprint
from mixer.outputs import read_manifest, read_run
from mixer.results import held_out_scores, run_scores

HEADLINE = 4


def _headline(folder: Path, trained: dict[str, Any] | None = None) -> dict[str, float]:
    """A run's scores on its held-out rows (`trained`: its run.json metrics), then the first metric of each
    (non-group) benchmark task, up to four in all: enough to tell runs apart in a list."""
    picked = {
        f"test split {metric.removeprefix('eval_')}": value for metric, (value, _) in held_out_scores(trained).items()
    }
    for score in run_scores(folder):
        if not score.is_group and score.task not in {k.split(" ")[0] for k in picked} and len(picked) < HEADLINE:
            picked[f"{score.task} {score.metric}"] = score.value
    return picked


def describe(folder: Path) -> dict[str, Any] | None:
    if (folder / "run.json").is_file():
        run = read_run(folder)
        rows = (run.get("data") or {}).get("rows")
        return {
            "path": str(folder),
            "kind": f"run:{run.get('kind')}",
            "recipe": run["recipe"]["name"],
            "fingerprint": run["recipe"]["fingerprint"],
            "rows": rows,
            "status": run.get("status"),
            "headline": _headline(folder, run.get("metrics")),
        }
    if (folder / "manifest.json").is_file():
        manifest = read_manifest(folder)
        return {
            "path": str(folder),
            "kind": "build",
            "recipe": manifest["recipe"]["name"],
            "fingerprint": fingerprint(manifest["resolved_recipe"]),
            "rows": manifest["totals"]["rows"],
            "status": "built",
            "headline": _headline(folder),
        }
    return None


def find_runs(roots: list[Path], depth: int = 3) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(folder: Path, level: int) -> None:
        try:
            info = describe(folder)
        except MixerError as exc:  # one folder's broken file does not hide the others
            info = {"path": str(folder), "kind": "unreadable", "recipe": None, "fingerprint": None, "rows": None}
            info |= {"status": exc.message, "headline": {}}
        if info is not None:
            found.append(info)
            return
        if level < depth:
            for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                walk(child, level + 1)

    for root in roots:
        if root.is_dir():
            walk(root, 0)
    return found


def instead_of(path: Path, *, builds_only: bool = False) -> str | None:
    """What to give where `path` is not a run or build folder: a recipe's own folders (its path is the usual
    slip), else the folders under runs/ and out/; None when there are none."""
    from mixer.inherit import RECIPE_SUFFIXES, read_recipe_document
    from mixer.recipe import output_dir_of

    roots = [Path("out")] if builds_only else [Path("runs"), Path("out")]
    if path.is_file() and path.suffix in RECIPE_SUFFIXES:
        try:
            data = read_recipe_document(path).data
        except MixerError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            build = str(output_dir_of(data))
            runs = [] if builds_only else [r["path"] for r in find_runs([Path("runs") / data["name"]])]
            if not runs and not Path(build).is_dir():
                return f"it is a recipe: build it (`mixer build {path}`), then give {build}"
            return f"it is a recipe: give {' or '.join([*runs, build])}"
    found = [r["path"] for r in find_runs(roots) if not builds_only or r["kind"] == "build"]
    if not found:
        return None
    return f"{'builds' if builds_only else 'runs and builds'} here: {first_of(found)}"
