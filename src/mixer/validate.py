"""Recipe validation: JSON Schema for shape, then semantic rules, ALL problems reported at once.

Every problem becomes a Diagnostic pointing at the offending key or value (FILE:LINE:COL) with a hint, so
a user fixes a recipe in one pass and editors can jump to each line.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from mixer.envvars import interpolate, unset_problems
from mixer.errors import Diagnostic, RecipeInvalid
from mixer.inherit import read_recipe_document
from mixer.key_hints import did_you_mean
from mixer.recipe import OPERATOR_PRESETS, Recipe, build_recipe
from mixer.redact import redact_url
from mixer.validate_schema import finite_number, recipe_schema, schema_diagnostics
from mixer.validate_sources import as_list, as_mapping, check_source
from mixer.yamlpos import Located


def _interpolate(located: Located) -> list[Diagnostic]:
    """Replace ${VAR} and ${VAR:-default} in string values from the environment."""
    problems = []

    def walk(value: Any, path: tuple) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        # a recipe's values are written into the manifest: a variable in extra_body is a secret's way in
        if "extra_body" in path:
            problems.append(
                located.diag(
                    path,
                    "extra_body takes no ${VAR}: its values are written into the manifest as the recipe's",
                    "write the value itself; a key belongs in the variable named by api_key_env",
                )
            )
            return value
        text, unset = interpolate(value)
        problems.extend(unset_problems(located, path, unset))
        return text

    located.data = walk(located.data, ())
    return problems


def _deleted_source_hint(located: Located, path: tuple[str, ...], names: list[str]) -> str | None:
    """For a block's `from:` that names no source: where a recipe extending its base deleted it (`name: null`),
    else the closest name."""
    if path in located.removed:
        file, line, col = located.removed[path]
        return f"{file}:{line}:{col} deletes it (`{path[-1]}: null`): keep the source, or start the block elsewhere"
    return did_you_mean(path[-1], names)


def _check_evolve(located: Located, blocks: dict, sources: dict) -> list[Diagnostic]:
    if not blocks:
        return []
    from mixer.evolve.operators import packaged_operators

    problems = []
    seedable = [n for n, s in sources.items() if isinstance(s, dict) and "evolved" not in s]
    known_ops = list(packaged_operators())
    for name, block in blocks.items():
        if not isinstance(block, dict):
            continue
        path = ("evolve", name)
        origin = block.get("from")
        if isinstance(origin, str) and origin not in seedable:
            evolved = isinstance(sources.get(origin), dict) and "evolved" in sources[origin]
            problems.append(
                located.diag(
                    (*path, "from"),
                    f"evolve block {name!r} cannot start from {origin!r}"
                    + (": it is itself evolved" if evolved else ": no such source"),
                    "use more rounds instead"
                    if evolved
                    else _deleted_source_hint(located, ("sources", origin), seedable),
                )
            )
        problems += _unkept_budget(located, path, block)
        problems += _endpoint_paths(located, path, block)
        operators = block.get("operators")
        for i, item in enumerate(operators if isinstance(operators, list) else []):
            op = item if isinstance(item, str) else item.get("name") if isinstance(item, dict) else None
            custom = isinstance(item, dict) and "template" in item
            if isinstance(op, str) and not custom and op not in known_ops and op not in OPERATOR_PRESETS:
                where = (*path, "operators", i) if isinstance(item, str) else (*path, "operators", i, "name")
                problems.append(
                    located.diag(
                        where,
                        f"unknown operator {op!r}",
                        did_you_mean(op, known_ops + list(OPERATOR_PRESETS))
                        or "give a template: with {instruction} to define a new one",
                    )
                )
    return problems


# what the OpenAI client appends to base_url itself: a URL pasted from a server's docs often ends with it
ENDPOINT_SUFFIXES = ("/chat/completions", "/completions")


def _endpoint_paths(located: Located, path: tuple, block: dict) -> list[Diagnostic]:
    """A base_url that ends with the endpoint's own path: the client asks `.../chat/completions/chat/completions`,
    the server answers 404, and the 404's hint (add /v1) only made it longer."""
    problems = []
    for role in ("teacher", "judge"):
        endpoint = block.get(role)
        url = endpoint.get("base_url") if isinstance(endpoint, dict) else None
        suffix = next((x for x in ENDPOINT_SUFFIXES if isinstance(url, str) and url.rstrip("/").endswith(x)), None)
        if suffix is not None:
            root = redact_url(url.rstrip("/").removesuffix(suffix))
            problems.append(
                located.diag(
                    (*path, role, "base_url"),
                    f"base_url ends with {suffix}, which the client adds to it",
                    f"give the API's root: base_url: {root}",
                )
            )
    return problems


def _unkept_budget(located: Located, path: tuple, block: dict) -> list[Diagnostic]:
    """A dollar budget is kept by pricing each call; for a model the price table does not list (and no
    `prices:`), every call would count $0 and the budget would never stop a paid run."""
    from mixer.evolve.cost import prices_for

    budget, teacher, judge = block.get("budget"), block.get("teacher"), block.get("judge")
    if not isinstance(budget, dict) or budget.get("usd") is None or block.get("prices"):
        return []
    if not isinstance(teacher, dict):
        return []
    models = [teacher.get("model"), (judge if isinstance(judge, dict) else {}).get("model", teacher.get("model"))]
    unpriced = sorted({m for m in models if isinstance(m, str) and not prices_for(m, None).known})
    if not unpriced:
        return []
    return [
        located.diag(
            (*path, "budget", "usd"),
            f"budget.usd cannot be kept: no price is known for model {', '.join(map(repr, unpriced))}",
            "give prices: {prompt_per_1k: ..., completion_per_1k: ...} (0 and 0 for a server you do not pay per "
            "token), or a budget in tokens",
        )
    ]


def _pattern_places(data: Any) -> list[tuple[tuple, str]]:
    """(where, pattern) of every drop pattern of a recipe: its sources', the mixture's, its stages' data."""
    if not isinstance(data, dict):
        return []
    specs = [(("sources", name), spec) for name, spec in as_mapping(data.get("sources")).items()]
    specs += [
        (("stages", i, "data"), stage.get("data"))
        for i, stage in enumerate(as_list(data.get("stages")))
        if isinstance(stage, dict)
    ]
    specs.append((("mixture",), data.get("mixture")))
    return [
        ((*where, "drop_patterns", i), pattern)
        for where, spec in specs
        if isinstance(spec, dict)
        for i, pattern in enumerate(as_list(spec.get("drop_patterns")))
        if isinstance(pattern, str)
    ]


def filter_pattern_problems(located: Located) -> list[Diagnostic]:
    """Drop patterns the row filter's engine refuses. Rows are filtered by polars, whose regex engine (Rust's)
    has no look-around, back-references or `\\Z`, which Python's `re` accepts: such a pattern passed validation
    and failed the build after the inputs were read. Imports polars, so it runs where polars is loaded anyway
    (`mixer validate`, and the start of every step that reads rows), never on a no-op rebuild, whose recipe
    already built. A recipe without drop patterns does not load polars at all."""
    places = _pattern_places(located.data)
    if not places:
        return []
    import polars as pl

    problems = []
    probe = pl.Series([""], dtype=pl.String)
    for where, pattern in places:
        try:
            re.compile(pattern)
        except re.error:
            continue  # `_check_regex` reports it already
        try:
            probe.str.contains(pattern)
        except pl.exceptions.PolarsError as exc:
            reason = next(
                (line.strip()[len("error: ") :] for line in str(exc).splitlines() if line.strip().startswith("error:")),
                str(exc).splitlines()[0],
            )
            problems.append(
                located.diag(
                    where,
                    f"drop pattern {pattern!r}: {reason}",
                    "rows are filtered with Rust's regex syntax: no look-around, no back-references, \\z for the end",
                )
            )
    return problems


def _check_regex(located: Located, path: tuple, pattern: str) -> list[Diagnostic]:
    try:
        re.compile(pattern)
    except re.error as exc:
        return [located.diag(path, f"invalid regular expression {pattern!r}: {exc}")]
    return []


def _as_shares(weights: dict[str, float]) -> str:
    """Relative weights (2, 3, 1, as other tools take them) written as shares, rounded down so they still add
    up to at most 1."""
    whole = sum(weights.values())
    shares = ", ".join(f"{name}: {math.floor(w / whole * 1000) / 1000:g}" for name, w in weights.items())
    return f"as proportions of their sum they would be {shares}"


def _semantic_diagnostics(located: Located, base_dir: Path) -> list[Diagnostic]:
    data = located.data
    problems: list[Diagnostic] = []
    mixture = data.get("mixture") if isinstance(data.get("mixture"), dict) else {}
    total = mixture.get("total")
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    for name, spec in sources.items():
        if isinstance(spec, dict):
            problems += check_source(located, str(name), spec, base_dir, total)
    weights = {
        str(name): s["weight"]
        for name, s in sources.items()
        if isinstance(s, dict) and finite_number(s.get("weight"))  # .nan and .inf are the schema's to report
    }
    if total is not None and sum(weights.values()) > 1 + 1e-9:
        problems.append(
            located.diag(
                ("mixture", "total"),
                f"weights add up to {sum(weights.values()):g}, more than 1",
                f"weights are shares of mixture.total; {_as_shares(weights)}",
            )
        )
    if "eval" in mixture and mixture.get("shuffle") is False:
        problems.append(
            located.diag(
                ("mixture", "eval"),
                "`eval` holds out the last rows of the shuffled mixture, and this mixture is not shuffled",
                "set shuffle: true (the default), or drop `eval`: the last rows of an unshuffled mixture are its "
                "last source's",
                key=True,
            )
        )
    for where, pattern in _pattern_places(data):  # the sources' (evolved ones' too), the mixture's, the stages'
        problems += _check_regex(located, where, pattern)
    output = data.get("output") if isinstance(data.get("output"), dict) else {}
    tokenizer = output.get("tokenizer")
    if isinstance(tokenizer, str) and not (base_dir / os.path.expanduser(tokenizer)).exists():
        problems.append(
            located.diag(
                ("output", "tokenizer"),
                f"no tokenizer at {tokenizer!r} (relative to {base_dir})",
                "give a tokenizer.json or the folder holding it",
            )
        )
    blocks = data.get("evolve") if isinstance(data.get("evolve"), dict) else {}
    problems += _check_evolve(located, blocks, sources)
    stages = data.get("stages") if isinstance(data.get("stages"), list) else []
    problems += _check_stages(located, stages, base_dir)
    if "sources" not in data and "extends" not in data:  # `extends` is left only when its base could not be read
        problems += _check_without_sources(located, stages)
    return problems


def _check_without_sources(located: Located, stages: list) -> list[Diagnostic]:
    """A recipe without `sources:` has no mixture: fine for stages that read their own data (DPO of a model
    trained elsewhere), not for one that trains on the mixture, nor for a recipe with no stages either."""
    if not stages:
        return [
            located.diag(
                (),
                "'sources' is required",
                "a recipe is a mixture (`sources:`), training stages on data of their own (`stages:`), or both",
            )
        ]
    return [
        located.diag(
            ("stages", i, "data"),
            f"stage {stage.get('name')!r} trains on the mixture, and the recipe has no `sources:`",
            "add the mixture's `sources:`, or give the stage its own data: data: {source: ..., take: ...}",
        )
        for i, stage in enumerate(stages)
        if isinstance(stage, dict) and stage.get("data") == "mixture"
    ]


def _check_stages(located: Located, stages: list, base_dir: Path) -> list[Diagnostic]:
    """Order, data kind and launcher rules of `stages:`."""
    problems: list[Diagnostic] = []
    seen: dict[str, int] = {}
    names = [s.get("name") for s in stages if isinstance(s, dict)]
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            continue
        path, name, kind = ("stages", i), stage.get("name"), stage.get("kind")
        if isinstance(name, str) and name in seen:
            problems.append(located.diag((*path, "name"), f"duplicate stage name {name!r} (stage {seen[name] + 1})"))
        elif isinstance(name, str):
            seen[name] = i
        model = stage.get("model")
        if isinstance(model, dict) and isinstance(model.get("stage"), str):
            parent = model["stage"]
            if parent == name:
                problems.append(located.diag((*path, "model", "stage"), f"stage {name!r} cannot start from itself"))
            elif parent in names and names.index(parent) > i:
                problems.append(
                    located.diag(
                        (*path, "model", "stage"),
                        f"stage {name!r} depends on {parent!r}, which runs later",
                        f"move {parent!r} before {name!r} in stages:",
                    )
                )
            elif parent not in names:
                problems.append(
                    located.diag(
                        (*path, "model", "stage"),
                        f"unknown stage {parent!r}",
                        did_you_mean(parent, [n for n in names if isinstance(n, str)]),
                    )
                )
        data = stage.get("data")
        if kind == "dpo" and data == "mixture":
            problems.append(
                located.diag(
                    (*path, "data"),
                    "a dpo stage needs preference data, not the SFT mixture",
                    "e.g. data: {source: ultrafeedback, take: all}",
                )
            )
        if isinstance(data, dict) and kind in ("sft", "dpo"):
            problems += check_source(located, str(name), data, base_dir, None, path=(*path, "data"), purpose=kind)
        if "eval" in stage and data == "mixture":
            problems.append(
                located.diag(
                    (*path, "eval"),
                    "a stage on the mixture is scored on the mixture's test split, not rows of its own",
                    "hold rows out with mixture.eval: {rows: N} (or {fraction: f}); a stage's `eval` is for data it "
                    "reads from a source (a dpo stage's preferences)",
                    key=True,
                )
            )
        template = stage.get("chat_template")
        if isinstance(template, str) and template != "tulu" and "{{" not in template and "{%" not in template:
            problems.append(
                located.diag(
                    (*path, "chat_template"),
                    f"chat_template {template!r} is not a Jinja template: it would be every conversation's whole text",
                    "give the template's text ({% for message in messages %}...), or 'tulu', or leave chat_template "
                    "out for the tokenizer's own; a template's name from another tool (axolotl's chatml, llama3) is "
                    "not read here",
                )
            )
        for key, only in (("beta", "dpo"), ("reference", "dpo"), ("packing", "sft")):
            if key in stage and kind != only:
                problems.append(located.diag((*path, key), f"{key!r} applies to {only} stages only", key=True))
        launcher = stage.get("launcher") if isinstance(stage.get("launcher"), dict) else {}
        backend = launcher.get("backend", "ddp")
        if "zero_stage" in launcher and backend != "deepspeed":
            problems.append(
                located.diag((*path, "launcher", "zero_stage"), "zero_stage needs backend: deepspeed", key=True)
            )
        if launcher.get("offload") and backend == "ddp":
            problems.append(
                located.diag((*path, "launcher", "offload"), "offload needs backend: deepspeed or fsdp", key=True)
            )
    return problems


def check_document(located: Located, base_dir: Path) -> list[Diagnostic]:
    """Every problem in an already-parsed recipe, sorted by position."""
    problems = list(located.problems)
    if not isinstance(located.data, dict):  # unparsable (its problems say why), only `null`, or not a mapping
        if located.data is not None or not problems:
            problems.append(located.diag((), "a recipe must be a mapping (name:, sources:, ...)"))
        return _ordered(problems, located)
    unset = _interpolate(located)
    problems += unset
    # where reading the recipe (its `extends`) or an unset `${VAR}` already said what is wrong, the schema would
    # only say it again, of the `${VAR}` text left in place
    reported = {(d.file, d.line, d.col) for d in (*located.problems, *unset)}
    problems += [d for d in schema_diagnostics(located, recipe_schema()) if (d.file, d.line, d.col) not in reported]
    problems += _semantic_diagnostics(located, base_dir)
    unique = {(d.file, d.line, d.col, d.message): d for d in problems}
    return _ordered(list(unique.values()), located)


def _ordered(problems: list[Diagnostic], located: Located) -> list[Diagnostic]:
    """The recipe's own problems first, then those of recipes it extends, each file's by position."""
    return sorted(problems, key=lambda d: (d.file != located.file, d.file, d.line, d.col, d.message))


def validate_file(path: Path) -> list[Diagnostic]:
    located = read_recipe_document(path)
    problems = check_document(located, path.parent)
    if refused := filter_pattern_problems(located):
        problems = _ordered([*problems, *refused], located)
    return problems


def load_recipe(path: Path) -> Recipe:
    """Parse and validate; raise RecipeInvalid with all diagnostics, else return the typed recipe."""
    located = read_recipe_document(path)
    problems = check_document(located, path.parent)
    errors = [d for d in problems if d.severity == "error"]
    if errors:
        raise RecipeInvalid(errors)
    return build_recipe(path, located.data, located)
