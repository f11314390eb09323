"""JSON Schema's errors about a recipe, said as FILE:LINE:COL diagnostics in a recipe author's words.

jsonschema reports an `anyOf` miss as "'all' was expected", a type as `'object'`, a bad name at its mapping: each
is put back at the key or value the author wrote, in YAML's terms, with the fix most often meant.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from functools import cache
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from mixer.errors import Diagnostic, shown_value
from mixer.key_hints import dataset_mixer_hint, did_you_mean, other_tools_hint, valid_name
from mixer.recipe import OPERATOR_PRESETS
from mixer.resources import resource_dir
from mixer.validate_sources import SELECTORS
from mixer.yamlpos import Located


@cache
def recipe_schema() -> dict[str, Any]:
    return json.loads((resource_dir("schemas") / "recipe.schema.json").read_text(encoding="utf-8"))


def _key_hint(key: str, allowed: list[str], *, block: bool = False) -> str:
    """Where a key that is not allowed here may have been meant, or the keys that are. An unknown top-level key
    holding a block (`block`) is most often there for YAML anchors (`defaults: &d {...}`), which have a place of
    their own."""
    found = other_tools_hint(key, allowed) or did_you_mean(key, allowed)
    if found:
        return found
    anchors = f"; a block of shared settings for anchors goes under a key starting with x- (x-{key})" if block else ""
    return f"allowed keys: {', '.join(allowed)}{anchors}"


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


def finite_number(value: Any) -> bool:
    """YAML's .nan and .inf are floats, and JSON Schema's bounds let .nan through (every comparison with it is
    false): `fraction: .nan` reached the plan and failed there in a traceback."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _finite_number(checker: Any, instance: Any) -> bool:
    return finite_number(instance)


@cache
def _validator_class() -> type:
    draft = jsonschema.Draft202012Validator
    types = draft.TYPE_CHECKER.redefine_many({"integer": _whole_number, "number": _finite_number})
    return jsonschema.validators.extend(draft, type_checker=types)


def schema_diagnostics(located: Located, schema: dict[str, Any]) -> list[Diagnostic]:
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
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan, YAML's not-a-number" if math.isnan(value) else f"{'-' if value < 0 else ''}.inf, YAML's infinity"
    kind = {dict: "a mapping", list: "a list", str: "text", int: "a whole number", float: "a number"}
    return f"{shown_value(value, 60)}, {kind.get(type(value), type(value).__name__)}"


def _type_message(value: Any, expected: str | list[str]) -> str:
    wanted = " or ".join(TYPE_WORDS.get(t, t) for t in ([expected] if isinstance(expected, str) else expected))
    if isinstance(value, float) and not math.isfinite(value):
        wanted = wanted.replace("a number", "a finite number")
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


def _name_suggestion(name: object) -> str:
    """A valid name made from an invalid one ('ü mix' → 'u-mix'), or nothing when none is left of it."""
    made = valid_name(name) if isinstance(name, str) else ""
    return f": {made}" if made else ""
