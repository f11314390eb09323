"""`extends:`: a recipe written as the changes to another one.

Mix ablations are one base recipe and many variants that differ in a weight or a source; copying the base
into each variant makes the diffs between mixes unreadable. A variant names its base with
`extends: base.yaml` and is merged over it: mappings merge key by key, `null` deletes a key (a source,
say), anything else replaces. The merged recipe keeps, for every node, the file and line it came from, so
a mistake in the base is reported in the base. Relative paths declared in a base elsewhere are rewritten
to point at the same files from the variant's directory, since a recipe's paths are read relative to the
recipe being built.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mixer.encodings import to_utf8_command, wide_encoding
from mixer.envvars import interpolate, unset_problems
from mixer.errors import Diagnostic, MixerError, RecipeInvalid, first_of
from mixer.yamlpos import Located, Path_, load_located

MAX_DEPTH = 8
# where a recipe holds file paths (relative to its own file); "*" is any key or index
PATH_FIELDS: tuple[Path_, ...] = (
    ("sources", "*", "path"),
    ("stages", "*", "data", "path"),
    ("mixture", "decontaminate", "benchmarks", "*", "path"),
    ("output", "tokenizer"),
)


TextReader = Callable[[Path], "str | None"]  # a file's text, None when there is no such file


def working_tree_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return None
    except UnicodeDecodeError as exc:
        encoding = wide_encoding(path.read_bytes()[:4])
        if encoding is not None:
            raise MixerError(
                f"{path}: the recipe is {encoding} (it starts with that byte-order mark); mixer reads UTF-8",
                f"convert it first: {to_utf8_command(path, encoding)}",
            ) from None
        if path.suffix not in RECIPE_SUFFIXES:
            raise MixerError(f"{path}: is not a recipe (not text)", "a recipe is a .yaml file") from None
        data = path.read_bytes()
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)  # bytes, from 1
        problem = f"not UTF-8 (byte 0x{data[exc.start]:02x})"
        hint = "save the recipe as UTF-8 (your editor's encoding setting, or iconv -t utf-8)"
        raise RecipeInvalid([Diagnostic(str(path), line, column, problem, hint)]) from None
    except OSError as exc:
        raise MixerError(f"{path}: cannot read recipe: {exc}") from None


RECIPE_SUFFIXES = (".yaml", ".yml")


def recipes_in(folder: Path) -> list[Path]:
    """The recipe files of a folder, sorted."""
    return sorted(p for p in folder.iterdir() if p.suffix in RECIPE_SUFFIXES)


def read_recipe_document(path: Path, read_text: TextReader = working_tree_text) -> Located:
    """The recipe at `path` with every `extends:` chain merged in. `read_text` reads the files (those of a
    git revision, for `mixer diff recipe.yaml@REF`)."""
    text = read_text(path)
    for record, what in (("manifest.json", "a build"), ("run.json", "a training run")):
        if text is None and (path / record).is_file():
            raise MixerError(f"{path}: is {what}, not a recipe", _made_from(path / record))
    if text is None and path.is_dir():
        names = [p.name for p in recipes_in(path)]
        shown = first_of(names)
        hint = f"pass one of its recipe files ({shown})" if names else "it holds no recipe (.yaml or .yml file)"
        raise MixerError(f"{path}: is a folder, not a recipe", hint)
    if text is None:
        raise MixerError(f"{path}: recipe not found")
    located = _read(path, text, (), read_text)
    if isinstance(located.data, dict) and (what := _written_by_mixer(located.data)):
        raise MixerError(f"{path}: is {what}, not a recipe", _made_from(path))
    return located


def _written_by_mixer(data: dict[str, Any]) -> str | None:
    """What a file mixer wrote is, when one is given as a recipe (a tab completion away from it): its keys read
    as a recipe with a dozen unknown keys."""
    if "build_fingerprint" in data and isinstance(data.get("recipe"), dict):
        return "a build's manifest"
    if "training_fingerprint" in data and isinstance(data.get("recipe"), dict):
        return "a training run's record"
    if "mixer_version" in data and isinstance(data.get("recipe"), str) and "sources" in data:
        return "a lock file"
    return None


def _made_from(path: Path) -> str:
    """The recipe a build's manifest, a run's record or a lock file was made from, as a hint."""
    import json

    import yaml

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            data = None
    recipe = data.get("recipe") if isinstance(data, dict) else None
    if isinstance(recipe, dict) and isinstance(recipe.get("path"), str):
        return f"give the recipe it was made from: {recipe['path']}"
    if isinstance(recipe, str):  # a lock file sits beside its recipe, under the recipe's file name
        return f"give the recipe it locks: {path.with_suffix('.yaml')}"
    return "give a recipe (.yaml)"


def _read(path: Path, text: str, chain: tuple[Path, ...], read_text: TextReader) -> Located:
    located = load_located(text, str(path))
    if isinstance(located.data, dict):  # `x-` keys hold YAML anchors for the rest (as in docker compose files)
        located.data = {k: v for k, v in located.data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    data = located.data
    if not isinstance(data, dict) or "extends" not in data:
        return located
    reference = data["extends"]  # left in place when it fails: the schema then asks nothing the base would give
    if not isinstance(reference, str) or not reference.strip():
        located.problems.append(located.diag(("extends",), "extends must name another recipe file (a path)"))
        return located
    reference, unset = interpolate(reference)  # needed now: the base decides what the rest of the recipe is
    if unset:
        located.problems += unset_problems(located, ("extends",), unset)
        return located
    base_path = Path(os.path.expanduser(reference))
    base_path = base_path if base_path.is_absolute() else path.parent / base_path
    here = (*chain, path.resolve())
    if base_path.resolve() in here:
        cycle = " → ".join(p.name for p in (*here, base_path.resolve()))
        located.problems.append(
            located.diag(("extends",), f"extends forms a cycle: {cycle}", "one recipe of the cycle must not extend")
        )
        return located
    if len(here) > MAX_DEPTH:
        located.problems.append(located.diag(("extends",), f"extends chain deeper than {MAX_DEPTH} recipes"))
        return located
    base_text = read_text(base_path)
    if base_text is None:
        located.problems.append(
            located.diag(("extends",), f"extends: {base_path} does not exist", "the path is relative to this recipe")
        )
        return located
    base = _read(base_path, base_text, here, read_text)
    if not isinstance(base.data, dict):  # unparsable or not a mapping: its own problems say why
        located.problems += base.problems or [base.diag((), "an extended recipe must be a mapping")]
        return located
    _rebase_paths(base, base_path.parent, path.parent)
    return _merge(base, located)


def _matches(path: Path_, pattern: Path_) -> bool:
    return len(path) == len(pattern) and all(p == "*" or p == k for k, p in zip(path, pattern, strict=True))


def _rebase_paths(base: Located, base_dir: Path, target_dir: Path) -> None:
    """Rewrite relative paths of `base` so that, read from `target_dir`, they name the same files."""
    if base_dir.resolve() == target_dir.resolve():
        return

    def rebase(value: Any) -> Any:
        if isinstance(value, list):
            return [rebase(v) for v in value]
        if not isinstance(value, str) or value.startswith(("~", "$")) or Path(value).is_absolute():
            return value
        return Path(os.path.relpath(base_dir / value, target_dir)).as_posix()

    def walk(value: Any, path: Path_) -> Any:
        if any(_matches(path, pattern) for pattern in PATH_FIELDS):
            return rebase(value)
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    base.data = walk(base.data, ())


def _merged_value(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = _merged_value(base.get(key), value)
        return merged
    return over


def _deleted(base: Any, over: Any, path: Path_ = ()) -> Iterator[Path_]:
    """The paths of `base` that `over` deletes with `null`."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return
    for key, value in over.items():
        if value is None and key in base:
            yield (*path, key)
        else:
            yield from _deleted(base.get(key), value, (*path, key))


def _merge(base: Located, child: Located) -> Located:
    """`child` over `base`; every node keeps the file and position of the document it came from."""
    del child.data["extends"]
    child.key_pos.pop(("extends",), None)
    child.value_pos.pop(("extends",), None)
    merged = Located(file=child.file, data=_merged_value(base.data, child.data))
    merged.problems = [*base.problems, *child.problems]
    merged.removed = {
        **base.removed,
        **{path: (child.file, *child.key_pos.get(path, (1, 1))) for path in _deleted(base.data, child.data)},
    }

    def place(value: Any, path: Path_, origin: Located) -> None:
        origin = child if origin is child and path in child.value_pos else base
        for table, source in ((merged.key_pos, origin.key_pos), (merged.value_pos, origin.value_pos)):
            if path in source:
                table[path] = source[path]
        merged.files[path] = origin.file_of(path)
        if isinstance(value, dict):
            for key, item in value.items():
                place(item, (*path, key), origin)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                place(item, (*path, index), origin)

    merged.value_pos[()] = child.value_pos.get((), (1, 1))
    merged.files[()] = child.file
    for key, value in merged.data.items():
        place(value, (key,), child)
    return merged
