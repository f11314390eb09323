"""`mixer diff`: what changed between two mixes (a semantic diff of the composition) and what it did to each
benchmark, with a significance flag: |Δ| > 2·√(se_A² + se_B²).

A side is a training run directory (run.json), a build output (manifest.json), or a recipe file, optionally
at a git revision (`recipes/tulu2.yaml@HEAD~1`). Everything here is data; `report.py` renders it.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from mixer.errors import MixerError, RecipeInvalid
from mixer.hashing import fingerprint
from mixer.inherit import RECIPE_SUFFIXES, TextReader, read_recipe_document, working_tree_text
from mixer.outputs import MIXTURE_MANIFEST, read_manifest, read_run
from mixer.recipe import mixture_part, output_dir_of
from mixer.redact import redacted
from mixer.results import UNITS, Score, held_out_scores, run_scores, scored_twice

TRAINING_TASK = "training (test split)"  # a run's own scores on held-out rows (mixture.eval, a stage's eval)
COMPARABILITY_KEYS = (
    "test_split",  # the held-out rows a training loss was measured on
    "shots",
    "chat_template",
    "system_instruction",
    "judge",
    "harness",
    "harness_version",
    "task_version",
    "limit",
)


@dataclass
class Side:
    """One mix to compare: its label, composition (recipe document and built counts) and scores."""

    label: str
    recipe: dict[str, Any] | None
    counts: dict[str, int] | None  # rows written per source, when the mix was built
    scores: list[Score] = field(default_factory=list)
    run: dict[str, Any] | None = None  # run.json of a training stage
    quality: dict[str, Any] | None = None  # build-time numbers: tokens, contamination, overlap, evolve
    pools: dict[str, dict[str, Any]] | None = None  # per source, what selection drew from (see `pool_facts`)
    warnings: list[str] = field(default_factory=list)  # what cannot be shown of this side, and why
    sampled: bool = False  # built from the bundled samples (--sample)
    stages_known: bool = True  # a build output's manifest holds the mixture, not the training stages


def quality_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The numbers a build measured about its data, flat, so two builds diff line by line."""
    summary: dict[str, Any] = {}
    if "stats" in manifest:
        summary["est_tokens"] = manifest["stats"]["est_tokens"]
        summary["tokens_method"] = manifest["stats"]["tokens_method"]  # counts by two tokenizers do not compare
    if "decontamination" in manifest:
        report = manifest["decontamination"]
        summary["contaminated_rows_found"] = sum(h["rows"] for h in report["hits"])
        summary["decontaminated_rows_removed"] = report["removed"]
    if "overlap" in manifest:
        summary["rows_in_several_sources"] = sum(manifest["overlap"]["rows_in_several_sources"].values())
    for name, block in (manifest.get("evolve") or {}).items():
        summary[f"evolve.{name}.rows"] = block["rows"]
        if block.get("prices_known", True):  # an unpriced model's cost is unknown, not $0
            summary[f"evolve.{name}.usd"] = block["usage"]["usd"]
    return summary


def pool_facts(source: dict[str, Any]) -> dict[str, Any]:
    """What a source's selection drew from: its input files' contents and the rows each step kept or removed.
    Two builds with the same recipe entry and the same rows written can still hold different rows when
    these differ (a changed file, rows removed by decontamination or dedup), so `mixer diff` shows them."""
    counts = {k: v for k, v in source["counts"].items() if k not in ("selected", "written")}
    return {"inputs": [f["sha256"] for f in source.get("files") or []], **counts}


def _git_recipe(spec: str) -> Side:
    """A recipe as committed at a revision, with the recipes it extends read at that revision too."""
    path_text, ref = spec.rsplit("@", 1)
    path = Path(path_text).resolve()
    try:
        top = Path(
            subprocess.run(
                ["git", "-C", str(path.parent), "rev-parse", "--show-toplevel"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
        ).resolve()
        path.relative_to(top)
    except subprocess.CalledProcessError as exc:
        raise MixerError(
            f"{spec}: cannot read from git: {exc.stderr.strip() or exc}",
            "use PATH@REF with a file inside a git repository and a valid revision",
        ) from None
    except (OSError, ValueError) as exc:
        raise MixerError(f"{spec}: cannot read from git: {exc}") from None
    failures: list[str] = []

    @cache  # the recipe itself is read to check it exists, then again as the document's top
    def committed_text(file: Path) -> str | None:
        try:
            relative = file.resolve().relative_to(top).as_posix()
            shown = ["git", "-C", str(top), "show", f"{ref}:{relative}"]
            return subprocess.run(shown, capture_output=True, text=True, timeout=30, check=True).stdout
        except subprocess.CalledProcessError as exc:
            failures.append(exc.stderr.strip() or str(exc))
            return None
        except ValueError:  # outside the repository: not at any revision
            return None

    if committed_text(path) is None:
        raise MixerError(
            f"{spec}: cannot read from git: {failures[0] if failures else 'not in the repository'}",
            "use PATH@REF with a file inside a git repository and a valid revision",
        )
    return Side(spec, _recipe_data(path, committed_text), None)


def _recipe_data(path: Path, read_text: TextReader = working_tree_text) -> dict[str, Any]:
    """A recipe's settings as a build would see them (bases it extends merged in), with credentials in its URLs
    hidden as a manifest hides them: the diff prints what changed, and compares with built sides."""
    located = read_recipe_document(path, read_text)
    if located.problems:
        raise RecipeInvalid(located.problems)
    return redacted(located.data)


def load_side(spec: str) -> Side:
    """Resolve a command-line argument to a Side."""
    if "@" in spec and spec.rsplit("@", 1)[0].endswith(RECIPE_SUFFIXES):
        return _git_recipe(spec)
    path = Path(spec)
    if path.is_file() and path.suffix in RECIPE_SUFFIXES:
        return _recipe_side(spec, path)
    if not path.is_dir():
        raise MixerError(
            f"{spec}: not a run directory, build output or recipe",
            "give runs/<recipe>/<stage>, out/<recipe>, recipes/x.yaml or recipes/x.yaml@REF",
        )
    return _folder_side(spec, path)


def _recipe_side(spec: str, path: Path) -> Side:
    """A recipe in the working tree, with what was made of this very recipe, from the current folder as
    `mixer train` and `mixer build` write them: its last stage run (`runs/<name>/<stage>`; an earlier stage's
    when a later one has not run), else its build (`output.dir`). `mixer diff recipes/a.yaml recipes/b.yaml`
    then shows the rows written and the results attached, as a diff of those folders does."""
    recipe = _recipe_data(path)
    folder = output_dir_of(recipe)
    if folder is None:  # no name: nothing can have been built or trained from it; its text is compared
        return Side(spec, recipe, None)
    for stage in reversed(_stages_by_name(recipe)):
        run_dir = Path("runs") / str(recipe["name"]) / str(stage)
        if (run_dir / "run.json").is_file() and read_run(run_dir)["recipe"].get("document") == recipe:
            side = _folder_side(f"{spec} ({run_dir})", run_dir)
            side.recipe = recipe
            return side
    built = Path(folder)
    manifest = _manifest_in(built) if built.is_dir() else None
    if manifest is None:
        return Side(spec, recipe, None)
    if manifest.get("resolved_recipe") != mixture_part(recipe):
        return Side(
            spec,
            recipe,
            None,
            warnings=[
                f"{spec}: {built} holds a build of another version of this recipe, so its rows and results are "
                f"not shown: build the recipe again, or diff {built} itself"
            ],
        )
    side = _folder_side(f"{spec} ({built})", built)
    side.recipe, side.stages_known = recipe, True  # the recipe file has its stages; a build's manifest does not
    return side


def _folder_side(spec: str, path: Path) -> Side:
    run = read_run(path) if (path / "run.json").is_file() else None
    manifest, warnings = run_mixture(path, run) if run else (_manifest_in(path), [])
    recipe = run["recipe"].get("document") if run else None  # the recipe as the run used it
    if recipe is None and manifest:
        recipe = manifest["resolved_recipe"]
    if recipe is None and run and Path(run["recipe"]["path"]).is_file():
        recipe = _recipe_data(Path(run["recipe"]["path"]))
    counts = {n: s["counts"]["written"] for n, s in manifest["sources"].items()} if manifest else None
    pools = {n: pool_facts(s) for n, s in manifest["sources"].items()} if manifest else None
    quality = quality_summary(manifest) if manifest else None
    sampled = bool(manifest and manifest.get("sample"))
    stages_known = run is not None  # a run records its recipe whole; a build, only what the mixture is made of
    benchmarks = run_scores(path)
    warnings = [*warnings, *scored_twice(path, benchmarks)]
    scores = benchmarks + (training_scores(run, manifest) if run else [])
    return Side(spec, recipe, counts, scores, run, quality, pools, warnings, sampled, stages_known)


def training_scores(run: dict[str, Any], manifest: dict[str, Any] | None) -> list[Score]:
    """A run's loss on its test split (the mixture's, `mixture.eval`, or a stage's own, `eval`; a DPO stage's
    reward accuracy too), beside its benchmark results: comparable between runs only when the held-out rows are
    the same, which `test_split` tells (the mixture's test shards' hashes, or the stage's held-out ids)."""
    metrics = run.get("metrics") or {}
    split = (run.get("data") or {}).get("test_split")
    if split is None:
        held_out = [s.get("sha256") for s in (manifest or {}).get("shards") or [] if s.get("split") == "test"]
        split = fingerprint(held_out)[:12] if held_out else None
    return [
        Score(
            TRAINING_TASK,
            metric,
            value,
            n=metrics.get("eval_rows"),
            higher_is_better=higher,
            source="run.json",
            eval_config={"test_split": split},
        )
        for metric, (value, higher) in held_out_scores(metrics).items()
    ]


def _manifest_in(folder: Path) -> dict[str, Any] | None:
    return read_manifest(folder) if (folder / "manifest.json").is_file() else None


def run_mixture(path: Path, run: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """(manifest of the mixture the run's model was trained on, warnings). A run keeps a copy, since the build's
    folder is rebuilt in place when its recipe changes; a run made before copies were kept reads the folder
    only while it still holds that build. A stage trained on other data (DPO on preferences) shows the
    mixture of the stage its model came from."""
    seen = set()
    while path not in seen:
        seen.add(path)
        if (manifest := _manifest_in(path)) is not None:
            return manifest, []
        if (path / MIXTURE_MANIFEST).is_file():
            return read_manifest(path, MIXTURE_MANIFEST), []
        data = run.get("data") or {}
        if data.get("out_dir"):
            built = Path(data["out_dir"])
            manifest = _manifest_in(built)
            trained_on = data.get("build_fingerprint")
            if manifest is not None and trained_on in (None, manifest.get("build_fingerprint")):
                return manifest, []
            now = "was rebuilt since" if manifest is not None else "is gone"
            return None, [f"{path}: the mixture it trained on ({built}) {now}; its composition is not shown"]
        parent = run.get("parent_stage")
        if not isinstance(parent, str) or not (path.parent / parent / "run.json").is_file():
            break
        path = path.parent / parent
        run = read_run(path)
    return None, []


# ---- composition ----


@dataclass
class SourceRow:
    name: str
    status: str  # added | removed | changed | same
    a_rows: int | None
    b_rows: int | None
    a_share: float | None
    b_share: float | None
    changes: list[str]


@dataclass
class Composition:
    sources: list[SourceRow]
    settings: list[str]  # "seed: 42 → 7", "stages.sft.hyperparameters.learning_rate: 2e-05 → 1e-05"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


_NO_DEFAULT = object()


def schema_default(path: tuple[str, ...]) -> Any:
    """The recipe schema's default for a setting (`("mixture", "shuffle")`; a name not in the schema is an entry
    of a map such as sources or evolve blocks, and `*` any item of a list such as stages), or _NO_DEFAULT."""
    from mixer.validate_schema import recipe_schema

    schema = recipe_schema()

    def resolved(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def step(node: dict[str, Any], part: str) -> dict[str, Any] | None:
        # a setting's alternative forms (anyOf, oneOf) and its combined parts (allOf)
        for option in [node, *node.get("anyOf", []), *node.get("oneOf", []), *node.get("allOf", [])]:
            option = resolved(option)
            inner = (option.get("properties") or {}).get(part) if part != "*" else option.get("items")
            inner = inner if isinstance(inner, dict) else option.get("additionalProperties")  # a name: a map's
            if isinstance(inner, dict):
                return resolved(inner)
        return None

    node: dict[str, Any] | None = resolved(schema)
    for part in path:
        node = step(node, part) if node is not None else None
    return _NO_DEFAULT if node is None else node.get("default", _NO_DEFAULT)


def _changes(a: Any, b: Any, prefix: str = "", at: tuple[str, ...] | None = None, counted: bool = False) -> list[str]:
    """`key: was → now` for every setting that differs. With `at` (where these settings sit in the recipe
    schema), a setting one side leaves out counts as the schema's default: leaving out `shuffle` and writing
    `shuffle: true` is no change, and `shuffle: — → False` reads `True (default) → False`. `counted`: the values
    are what a build counted, written with thousands separators as the tables write rows (a recipe's own
    values are shown as written)."""
    flat_a, flat_b = _flatten(a or {}, prefix), _flatten(b or {}, prefix)
    set_a = {k: v for k, v in flat_a.items() if v is not None}  # null and absent both mean "not set"
    set_b = {k: v for k, v in flat_b.items() if v is not None}

    def effective(values: dict[str, Any], key: str) -> tuple[Any, str]:
        if key in values:
            value = values[key]
            whole = isinstance(value, int) and not isinstance(value, bool)
            return value, f"{value:,}" if counted and whole else str(value)
        relative = key.removeprefix(prefix).removeprefix(".") if prefix else key
        default = _NO_DEFAULT if at is None else schema_default((*at, *relative.split(".")))
        return (default, f"{default} (default)") if default is not _NO_DEFAULT else (_NO_DEFAULT, "—")

    lines = []
    for key in sorted(set(set_a) | set(set_b)):
        (was, shown_was), (now, shown_now) = effective(set_a, key), effective(set_b, key)
        if was != now:
            lines.append(f"{key}: {_items_changed(was, now) or f'{shown_was} → {shown_now}'}")
    return lines


def _items_changed(was: Any, now: Any) -> str | None:
    """`added 'x'; removed 'y'` for two lists of plain values (drop patterns, benchmarks, operators) that differ
    by items: both lists whole, one after the other, hid a one-pattern edit in a list of five. None when the
    lists differ only in order or repeats, or are not lists of plain values."""
    if not (isinstance(was, list) and isinstance(now, list)):
        return None
    if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in [*was, *now]):
        return None

    def shown(values: list[Any]) -> str:
        return ", ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in values)

    added, removed = [v for v in now if v not in was], [v for v in was if v not in now]
    parts = ([f"added {shown(added)}"] if added else []) + ([f"removed {shown(removed)}"] if removed else [])
    return "; ".join(parts) or None


def _stages_by_name(recipe: dict[str, Any] | None) -> dict[str, Any]:
    return {s.get("name"): s for s in (recipe or {}).get("stages") or [] if isinstance(s, dict)}


def _pool_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Differences between two `pool_facts`: contents of the inputs, then each step's count. Every count but
    `read` and `available` is rows a step removed, and is labelled so (`built.removed.max_chars: 0 → 20`)."""
    changes = ["input files: contents changed"] if a.get("inputs") != b.get("inputs") else []
    steps = (set(a) | set(b)) - {"inputs"}  # a step that removed nothing may be absent from one side

    def labelled(facts: dict[str, Any]) -> dict[str, Any]:
        return {k if k in ("read", "available") else f"removed.{k}": facts.get(k, 0) for k in steps}

    return changes + _changes(labelled(a), labelled(b), "built", counted=True)


def _order_change(sources_a: dict[str, Any], sources_b: dict[str, Any]) -> list[str]:
    """The shared sources' order, when it changed: dedup keeps the copy of the source listed first, so moving
    GSM8K above FLAN CoT turns 7,469 of its rows from dropped to kept, and no source's settings show why."""
    shared_a = [n for n in sources_a if n in sources_b]
    shared_b = [n for n in sources_b if n in sources_a]
    if shared_a == shared_b:
        return []
    return [f"source order: {', '.join(shared_a)} → {', '.join(shared_b)}"]


def compare_composition(a: Side, b: Side) -> Composition:
    sources_a = (a.recipe or {}).get("sources") or {}
    sources_b = (b.recipe or {}).get("sources") or {}
    total_a = sum(a.counts.values()) if a.counts else None
    total_b = sum(b.counts.values()) if b.counts else None
    rows = []
    for name in list(sources_a) + [n for n in sources_b if n not in sources_a]:
        in_a, in_b = name in sources_a, name in sources_b
        changes = _changes(sources_a.get(name), sources_b.get(name), at=("sources", "*")) if in_a and in_b else []
        if in_a and in_b and a.pools is not None and b.pools is not None:
            changes += _pool_changes(a.pools.get(name) or {}, b.pools.get(name) or {})
        rows_a = a.counts.get(name) if a.counts and in_a else None
        rows_b = b.counts.get(name) if b.counts and in_b else None
        rows_differ = None not in (rows_a, rows_b) and rows_a != rows_b  # unknown counts (a recipe) differ in nothing
        status = "added" if not in_a else "removed" if not in_b else "changed" if changes or rows_differ else "same"
        rows.append(
            SourceRow(
                name,
                status,
                rows_a,
                rows_b,
                rows_a / total_a if rows_a is not None and total_a else None,
                rows_b / total_b if rows_b is not None and total_b else None,
                changes,
            )
        )
    settings = _order_change(sources_a, sources_b)
    for key in ("seed", "mixture", "output"):
        settings += _changes({key: (a.recipe or {}).get(key)}, {key: (b.recipe or {}).get(key)}, at=())
    blocks_a, blocks_b = ((side.recipe or {}).get("evolve") or {} for side in (a, b))
    settings += _entries_changed("evolve", blocks_a, blocks_b, ("evolve", "*"))
    if a.quality is not None and b.quality is not None:
        settings += _changes({"built": a.quality}, {"built": b.quality}, counted=True)
    if a.stages_known and b.stages_known:
        settings += _entries_changed("stages", _stages_by_name(a.recipe), _stages_by_name(b.recipe), ("stages", "*"))
    return Composition(rows, settings)


def _entries_changed(
    label: str, entries_a: dict[str, Any], entries_b: dict[str, Any], at: tuple[str, ...]
) -> list[str]:
    """Settings changed in the evolve blocks or stages both sides have; one line for a block or stage only one
    side has (its settings one by one, each `— → value`, were fifteen lines for a removed block)."""
    lines = []
    for name in list(entries_a) + [n for n in entries_b if n not in entries_a]:
        if name not in entries_b:
            lines.append(f"{label}.{name}: removed")
        elif name not in entries_a:
            # a stage's `name` is already the line's label
            settings = {k: v for k, v in _flatten(entries_b[name] or {}).items() if k != "name"}
            lines.append(f"{label}.{name}: added ({', '.join(f'{k}: {v}' for k, v in settings.items())})")
        else:
            lines += _changes(entries_a[name], entries_b[name], f"{label}.{name}", at=at)
    return lines


# ---- metrics ----


@dataclass
class MetricRow:
    task: str
    metric: str
    a: float
    b: float
    delta: float
    se_a: float | None
    se_b: float | None
    se_delta: float | None  # None: no significance claim is possible
    significant: bool
    direction: str  # better | worse | same
    higher_is_better: bool
    is_group: bool
    incomparable: list[str]  # eval-config keys that differ
    unit: str | None = None  # both sides' (results.UNITS), None when either's scale is not known

    @property
    def delta_points(self) -> float | None:
        """Δ in percentage points, None when the scale is not known."""
        return None if self.unit is None else self.delta * UNITS[self.unit]


def significance(delta: float, se_a: float | None, se_b: float | None) -> tuple[float | None, bool]:
    """(se of the difference, |Δ| > 2·se). A missing or zero stderr on either side makes no claim: lm-eval
    reports 0 for all-right/all-wrong tasks, which is not certainty."""
    if not se_a or not se_b:
        return None, False
    se = math.hypot(se_a, se_b)  # √(a² + b²) without squaring: a stderr of 1e200 overflowed
    return se, abs(delta) > 2 * se


def _incomparable(a: Score, b: Score) -> list[str]:
    return [k for k in COMPARABILITY_KEYS if a.eval_config.get(k) != b.eval_config.get(k)]


@dataclass
class MetricDiff:
    rows: list[MetricRow]
    only_a: list[tuple[str, str]]
    only_b: list[tuple[str, str]]
    mean_delta: float | None  # direction-aware: positive means B is better, averaged per task then over tasks
    mean_unit: str | None  # POINTS, or OWN_UNITS when no task's scale is known
    tasks: int
    tasks_better: int
    tasks_worse: int
    left_out: list[str]  # tasks of unknown scale, beside tasks in percentage points
    warnings: list[str]


# the mean's unit, as `--json` gives it (the other formats say it in words: report.MEAN_UNITS)
POINTS = "points"
OWN_UNITS = "own_units"


def _task_means(rows: list[MetricRow]) -> tuple[list[float], str | None, list[str]]:
    """(each task's mean direction-aware Δ, their unit, tasks left out). Benchmarks mix scales (lm-eval's
    accuracies are 0-1, AlpacaEval's win rates 0-100), so tasks are averaged in percentage points; a task of
    unknown scale is left out of that mean, which uses the scores' own units only when no scale is known at
    all. A run's own loss is never in it: a loss's scale is not a benchmark's."""
    in_points: dict[str, list[float]] = {}
    own_units: dict[str, list[float]] = {}
    for row in rows:
        if row.is_group or row.task == TRAINING_TASK:
            continue
        sign = 1.0 if row.higher_is_better else -1.0
        if (points := row.delta_points) is not None:
            in_points.setdefault(row.task, []).append(sign * points)
        else:
            own_units.setdefault(row.task, []).append(sign * row.delta)
    if not in_points:
        return [sum(v) / len(v) for v in own_units.values()], OWN_UNITS if own_units else None, []
    return [sum(v) / len(v) for v in in_points.values()], POINTS, sorted(set(own_units) - set(in_points))


def compare_metrics(a: Side, b: Side) -> MetricDiff:
    index_a = {(s.task, s.metric): s for s in a.scores}
    index_b = {(s.task, s.metric): s for s in b.scores}
    rows, warnings = [], []
    for key in sorted(set(index_a) & set(index_b)):
        sa, sb = index_a[key], index_b[key]
        delta = sb.value - sa.value
        se, significant = significance(delta, sa.stderr, sb.stderr)
        oriented = delta if sa.higher_is_better else -delta
        direction = "same" if delta == 0 else "better" if oriented > 0 else "worse"
        rows.append(
            MetricRow(
                key[0],
                key[1],
                sa.value,
                sb.value,
                delta,
                sa.stderr,
                sb.stderr,
                se,
                significant,
                direction,
                sa.higher_is_better,
                sa.is_group,
                _incomparable(sa, sb),
                sa.unit if sa.unit == sb.unit else None,
            )
        )
    task_means, mean_unit, left_out = _task_means(rows)
    seen = set()
    for row in rows:
        for key in row.incomparable:
            if (row.task, key) in seen:
                continue
            seen.add((row.task, key))
            sa, sb = index_a[(row.task, row.metric)], index_b[(row.task, row.metric)]
            warnings.append(
                f"{row.task}: {key} differs ({sa.eval_config.get(key)} vs {sb.eval_config.get(key)}); "
                "scores are not comparable"
            )
    return MetricDiff(
        rows=rows,
        only_a=sorted(set(index_a) - set(index_b)),
        only_b=sorted(set(index_b) - set(index_a)),
        mean_delta=sum(task_means) / len(task_means) if task_means else None,
        mean_unit=mean_unit,
        tasks=len(task_means),
        tasks_better=sum(1 for m in task_means if m > 0),
        tasks_worse=sum(1 for m in task_means if m < 0),
        left_out=left_out,
        warnings=warnings,
    )


@dataclass
class Comparison:
    a: str
    b: str
    composition: Composition
    metrics: MetricDiff

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare(a: Side, b: Side) -> Comparison:
    metrics = compare_metrics(a, b)
    sampled = [side.label for side in (a, b) if side.sampled]
    who = "both sides were" if len(sampled) == 2 else f"{sampled[0]}:" if sampled else None
    # a few dozen rows per source say nothing of a build from the sources' data
    samples = [f"{who} built from the bundled samples (--sample), not the sources' data"] if who else []
    metrics.warnings[:0] = a.warnings + b.warnings + samples
    return Comparison(a.label, b.label, compare_composition(a, b), metrics)
