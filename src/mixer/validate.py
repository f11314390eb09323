"""Recipe validation: JSON Schema for shape, then semantic rules, ALL problems reported at once.

Every problem becomes a Diagnostic pointing at the offending key or value (FILE:LINE:COL) with a hint, so
a user fixes a recipe in one pass and editors can jump to each line.
"""

from __future__ import annotations

import datetime
import difflib
import glob
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from mixer.adapters import FORMATS, format_spec
from mixer.adapters.formats import (
    OPTION_VALUES,
    SUPPORTED_SUFFIXES,
    readable,
    supported_suffix,
    unreadable_file,
)
from mixer.envvars import interpolate, unset_problems
from mixer.errors import Diagnostic, RecipeInvalid
from mixer.inherit import read_recipe_document
from mixer.key_hints import dataset_mixer_hint, other_tools_hint, valid_name
from mixer.recipe import OPERATOR_PRESETS, Recipe, build_recipe
from mixer.redact import redact_url
from mixer.registry import load_registry
from mixer.resources import resource_dir
from mixer.saved_dataset import one_split_hint, saved_dataset_files, saved_splits
from mixer.yamlpos import Located

SELECTORS = ("take", "fraction", "weight")


@cache
def recipe_schema() -> dict[str, Any]:
    return json.loads((resource_dir("schemas") / "recipe.schema.json").read_text(encoding="utf-8"))


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _key_hint(key: str, allowed: list[str], *, block: bool = False) -> str:
    """Where a key that is not allowed here may have been meant, or the keys that are. An unknown top-level key
    holding a block (`block`) is most often there for YAML anchors (`defaults: &d {...}`), which have a place of
    their own."""
    found = other_tools_hint(key, allowed) or did_you_mean(key, allowed)
    if found:
        return found
    anchors = f"; a block of shared settings for anchors goes under a key starting with x- (x-{key})" if block else ""
    return f"allowed keys: {', '.join(allowed)}{anchors}"


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


# jsonschema's words for an exclusive bound read backwards: "0 is less than or equal to the minimum of 0"
EXCLUSIVE_BOUNDS = {"exclusiveMinimum": "is not more than", "exclusiveMaximum": "is not less than"}
NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # the schema's pattern for every name


def _closest_branch(error: ValidationError) -> ValidationError:
    """For `anyOf: [integer >= 0, "all"]` and -5, report the minimum, not "'all' was expected": drop the
    branches that fail only because the value has another type, and report what is wrong in the others."""
    typed = [e for e in error.context if not _of_another_type(e)]
    closest = best_match(typed or error.context)
    # a list of operators fits no preset name: what is wrong is inside the list, in a branch of its own
    return _closest_branch(closest) if closest.validator in ("anyOf", "oneOf") and closest.context else closest


def _deleted_source_hint(located: Located, path: tuple[str, ...], names: list[str]) -> str | None:
    """For a block's `from:` that names no source: where a recipe extending its base deleted it (`name: null`),
    else the closest name."""
    if path in located.removed:
        file, line, col = located.removed[path]
        return f"{file}:{line}:{col} deletes it (`{path[-1]}: null`): keep the source, or start the block elsewhere"
    return did_you_mean(path[-1], names)


def _in_mapping(path: tuple[Any, ...]) -> str:
    """Where an unknown key sits: `in 'hub'`, or for an item of a list `in operators[0]` (not `in 0`)."""
    if not path:
        return ""
    if isinstance(path[-1], int) and len(path) > 1:
        return f" in {path[-2]}[{path[-1]}]"
    return f" in {path[-1]!r}"


def _of_another_type(error: ValidationError) -> bool:
    """Whether a branch fails at its root only because the value is of another kind than it takes: a type, a
    constant, or a set of names offered to a list."""
    if error.relative_path:
        return False
    if error.validator == "enum":
        return not any(type(v) is type(error.instance) for v in error.validator_value)
    return error.validator in ("type", "const")


# what a value that fails the schema's `pattern` is not, and how to write it, by the key it is under
PATTERN_WORDS = {
    "hub": (
        "is not a hub dataset id",
        "write it as on the Hugging Face Hub, `org/name` (`hub:` also takes `org/name@revision`)",
    ),
    "id": ("is not a hub dataset id", "write it as on the Hugging Face Hub, `org/name`"),
    "base_url": (
        "is not an http:// or https:// URL",
        "write the server's address with its scheme and path: http://127.0.0.1:8000/v1 (vLLM), "
        "http://127.0.0.1:8080/v1 (llama.cpp server); leave it out for OpenAI",
    ),
    "api_key_env": (
        "is not an environment variable name",
        "name the variable that holds the key (OPENAI_API_KEY), never the key itself: recipes are committed",
    ),
    "template": (
        "has no {instruction}",
        "a template says where the instruction being evolved goes: write {instruction} in it",
    ),
}


def _whole_number(checker: Any, instance: Any) -> bool:
    """A count is written as a whole number. JSON Schema takes 100000.0 for one, which mixer then carried as a
    float: `take: 100000.0` in the plan, another fingerprint than `take: 100000`, and past the check of a
    registry entry's rows, which reads whole numbers."""
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def _validator_class() -> type:
    draft = jsonschema.Draft202012Validator
    return jsonschema.validators.extend(draft, type_checker=draft.TYPE_CHECKER.redefine("integer", _whole_number))


def _schema_diagnostics(located: Located, schema: dict[str, Any]) -> list[Diagnostic]:
    validator = _validator_class()(schema)
    problems = []
    for found in validator.iter_errors(located.data):
        # a value that fits no branch of a oneOf is told what is wrong in the branch it comes closest to
        error = _closest_branch(found) if found.validator in ("anyOf", "oneOf") and found.context else found
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = list(error.schema.get("properties", {}))
            for key in error.instance:
                if key not in allowed:
                    problems.append(
                        located.diag(
                            (*path, key),
                            f"unknown key {key!r}{_in_mapping(path)}",
                            dataset_mixer_hint(str(key), error.instance[key])
                            or _key_hint(
                                str(key), allowed, block=not path and isinstance(error.instance[key], dict | list)
                            ),
                            key=True,
                        )
                    )
            continue
        if error.validator == "required":
            problems.append(
                located.diag(path, error.message.replace("is a required property", "is required"), key=bool(path))
            )
            continue
        if error.validator == "pattern" and error.validator_value == NAME_PATTERN:
            # a source, block or stage name (jsonschema reports a bad key as its `propertyNames` subschema's
            # `pattern`, located at the mapping): point at the name itself
            is_key = "propertyNames" in error.schema_path
            problems.append(
                located.diag(
                    (*path, error.instance) if is_key else path,
                    f"{'.'.join(map(str, path))}: invalid name {error.instance!r}",
                    "a name starts with an ASCII letter or digit and holds only ASCII letters, digits, '_', '.' "
                    "and '-' (names become file names and columns)" + _name_suggestion(error.instance),
                    key=is_key,
                )
            )
            continue
        message = error.message
        hint = None
        if error.validator == "enum":
            hint = did_you_mean(error.instance, [str(e) for e in error.validator_value])
            message = f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
        elif error.validator == "type" and path and path[-1] in ("take", "sample"):
            hint = _count_hint(str(path[-1]), error.instance)
        elif error.validator == "type" and path in (("sources",), ("evolve",)) and isinstance(error.instance, list):
            # axolotl's `datasets:` is a list of `- path: ...` items
            hint = f"`{path[0]}:` maps names to entries: write each item as `<name>: {{...}}` below it, without '- '"
        elif error.validator in ("minimum", "maximum", *EXCLUSIVE_BOUNDS):
            if error.validator in EXCLUSIVE_BOUNDS:
                message = f"{error.instance!r} {EXCLUSIVE_BOUNDS[error.validator]} {error.validator_value!r}"
            if len(path) == 3 and path[0] == "sources" and path[2] in SELECTORS:
                hint = _selector_bound_hint(str(path[2]), error.validator)
        elif error.validator == "pattern" and path and path[-1] in PATTERN_WORDS:
            what, hint = PATTERN_WORDS[str(path[-1])]
            # a key pasted where its variable's name belongs must not reach a terminal or a CI log
            shown = "the value (not shown: it may be a key)" if path[-1] == "api_key_env" else repr(error.instance)
            message = f"{shown} {what}"
        elif error.validator == "type" and error.validator_value == "string" and _one_pair(error.instance):
            ((key, value),) = error.instance.items()
            text = json.dumps(f"{key}: {value}" if value is not None else f"{key}:", ensure_ascii=False)
            hint = f"unquoted text with ': ' in it is read as a mapping: quote it, {text}"
        if error.validator == "type":
            message = _type_message(error.instance, error.validator_value)
            hint = hint or _type_hint(error.instance, error.validator_value)
        if len(path) == 3 and path[0] == "evolve" and path[2] == "operators" and isinstance(error.instance, dict):
            message = f"is {_type_word(error.instance)}, not a preset name or a list"
            hint = _operator_weights_hint(error.instance)
        if path and path[-1] == "eval" and error.validator in ("type", "minProperties", "maxProperties"):
            if error.validator != "type":
                message = "names both rows and fraction" if error.instance else "is empty"
            hint = HELD_OUT_HINT
        problems.append(located.diag(path, f"{'.'.join(map(str, path)) or 'recipe'}: {message}", hint))
    return problems


HELD_OUT_HINT = "held-out rows are `eval: {rows: N}` (that many) or `eval: {fraction: f}` (that share), one of them"

# YAML's words for JSON Schema's types: a recipe's author never wrote an 'object' or a Python None
TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "null": "empty",
}


def _type_word(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"{json.dumps(value)}, a boolean"
    kind = {dict: "a mapping", list: "a list", str: "text", int: "a whole number", float: "a number"}
    shown = json.dumps(value, ensure_ascii=False, default=str)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{shown}, {kind.get(type(value), type(value).__name__)}"


def _type_message(value: Any, expected: str | list[str]) -> str:
    wanted = " or ".join(TYPE_WORDS.get(t, t) for t in ([expected] if isinstance(expected, str) else expected))
    return f"is {_type_word(value)}, not {wanted}"


def _type_hint(value: Any, expected: str | list[str]) -> str | None:
    """The two slips behind most wrong types: a key left with nothing under it, and a list written as a
    mapping (or the other way round)."""
    if value is None:
        return (
            "a key with nothing after it holds null in YAML: write its value (indent a mapping's keys below it), "
            "or delete the line"
        )
    if expected in ("number", "integer") and isinstance(value, str) and (number := _as_number(value)) is not None:
        if re.fullmatch(r"\s*[-+]?\d+[eE][-+]?\d+\s*", value):  # 2e-5, as Python and JSON write it
            return f"YAML reads an exponent without a dot as text: write {number}"
        return f"write it as a plain number: {number}"
    if expected == "integer" and isinstance(value, float) and value.is_integer():
        return f"write it without a decimal point: {int(value)}"
    if expected == "array" and isinstance(value, dict):
        return "a list's items each start with '- ' (or write [a, b])"
    if expected == "string" and isinstance(value, bool):
        return "quote it to make it text: YAML reads yes, no, on, off, true and false unquoted as true or false"
    if expected == "string" and isinstance(value, int | float | datetime.date):
        return f'quote it to make it text: "{value}"'
    return None


def _mapping(value: Any) -> dict:
    """`value` when it is a mapping, else empty: the semantic checks read what the schema has already judged,
    and a value of the wrong type is the schema's error to report, not a traceback."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _one_pair(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1


def _selector_bound_hint(key: str, bound: str) -> str:
    """What a selector's range means, for a value outside it: a zero or a negative is most often meant to
    leave the source out."""
    if key == "weight" and bound == "maximum":
        return "a weight is a share of mixture.total, at most 1; for more rows, raise mixture.total"
    meaning = {
        "take": "take is a whole number of rows (0 for none) or `all`",
        "fraction": "a fraction is a share of the source's rows, more than 0 (0.5 half of them, 1 all, 2 each twice)",
        "weight": "a weight is a share of mixture.total, more than 0 and at most 1",
    }[key]
    return f"{meaning}; to leave the source out, delete it"


NUMBER_SUFFIXES = {"%": 0.01, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}


def _as_number(text: str) -> str | None:
    """The number a text means, written as YAML reads a number: "50%" 0.5, "10k" 10000, "1e3" 1000 (YAML 1.1
    reads an exponent without a dot as text), "1,000" 1000, "0.2" 0.2 (quoted). None when it means none."""
    text = text.strip().replace(",", "").replace("_", "")
    scale = NUMBER_SUFFIXES.get(text[-1:], 1) if text else 1
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    mantissa, _, exponent = repr(value).partition("e")  # 2e-05: YAML 1.1 wants a dot, 2.0e-05
    return mantissa if not exponent else f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"


def _operator_weights_hint(written: dict) -> str:
    """`operators: {deepening: 2, in_breadth: 1}` reads as weights by name: a list says them."""
    items = [
        f"{{name: {name}, weight: {weight}}}"
        if isinstance(weight, int | float) and not isinstance(weight, bool)
        else str(name)
        for name, weight in list(written.items())[:3]
    ]
    presets = f"operators are a preset ({', '.join(OPERATOR_PRESETS)})"
    if not items:
        return f"{presets} or a list of operator names"
    more = ", ..." if len(written) > 3 else ""
    return f"{presets} or a list, weights given per item: operators: [{', '.join(items)}{more}]"


def _count_hint(key: str, value: Any) -> str:
    """`take`/`sample` are a whole number or `all`; what was written instead says which fix is meant."""
    if isinstance(value, str) and value.strip().isdigit():
        return f"write the number without quotes: {key}: {value.strip()}"
    if isinstance(value, str) and (number := _as_number(value)) is not None:
        if "." not in number:
            return f"write it as a plain number: {key}: {number}"
        if key == "take":  # "50%": a share
            return f"a share of the source's rows is `fraction: {number}`"
    if isinstance(value, str):
        return did_you_mean(value, ["all"]) or f"{key} is a whole number of rows or `all`"
    if isinstance(value, float) and value.is_integer():
        return f"write it without a decimal point: {key}: {int(value)}"
    share = " (a share of the source is `fraction: f`)" if key == "take" else ""
    return f"{key} is a whole number of rows or `all`{share}"


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
        for key in _mapping(spec.get(f"{kind}s"))
        if key not in known
    ]
    for key, value in _mapping(spec.get("options")).items():
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


def _check_source(
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
    entries = [raw_paths] if isinstance(raw_paths, str) else _list(raw_paths)
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


def _name_suggestion(name: object) -> str:
    """A valid name made from an invalid one ('ü mix' → 'u-mix'), or nothing when none is left of it."""
    made = valid_name(name) if isinstance(name, str) else ""
    return f": {made}" if made else ""


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


def _check_evolve(located: Located, blocks: dict, sources: dict) -> list[Diagnostic]:
    if not blocks:
        return []
    from mixer.evolve.operators import packaged_operators
    from mixer.recipe import OPERATOR_PRESETS

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
    specs = [(("sources", name), spec) for name, spec in _mapping(data.get("sources")).items()]
    specs += [
        (("stages", i, "data"), stage.get("data"))
        for i, stage in enumerate(_list(data.get("stages")))
        if isinstance(stage, dict)
    ]
    specs.append((("mixture",), data.get("mixture")))
    return [
        ((*where, "drop_patterns", i), pattern)
        for where, spec in specs
        if isinstance(spec, dict)
        for i, pattern in enumerate(_list(spec.get("drop_patterns")))
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


def full_path(raw: str, base_dir: Path) -> Path:
    """A path as a recipe writes it (`~` expanded, relative to the recipe directory) made absolute."""
    path = Path(os.path.expanduser(raw))
    return path if path.is_absolute() else base_dir / path


def expand_paths(raw: str, base_dir: Path) -> list[Path]:
    """A path or glob relative to the recipe directory → existing files, sorted for determinism."""
    full = full_path(raw, base_dir)
    if full.is_file():  # a file whose name has glob characters (`shard[1].jsonl`) is itself, not a pattern
        return [full]
    if full.is_dir():
        return saved_dataset_files(full) or []
    if glob.has_magic(str(full)):
        return sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
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
            problems += _check_source(located, str(name), spec, base_dir, total)
    weights = {
        str(name): s["weight"]
        for name, s in sources.items()
        if isinstance(s, dict) and isinstance(s.get("weight"), int | float) and not isinstance(s["weight"], bool)
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
            problems += _check_source(located, str(name), data, base_dir, None, path=(*path, "data"), purpose=kind)
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
    problems += [d for d in _schema_diagnostics(located, recipe_schema()) if (d.file, d.line, d.col) not in reported]
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
