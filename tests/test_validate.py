"""Validation: every error class located at FILE:LINE:COL, all reported at once, exit code 2, no traceback."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess

import pytest

from mixer.validate import validate_file

from conftest import REPO, run_mixer, swapped_values, write_recipe


def messages(path):
    return [(d.line, d.col, d.message) for d in validate_file(path)]


def test_done_when_three_errors_at_the_right_lines(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        name: broken
        seed: 1
        sources:
          flan:
            source: flan_v3
            take: 10
          dolly:
            source: dolly
            take: -5
        mixtrue: {total: 10}
        """,
    )
    result = run_mixer("validate", str(recipe))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert lines == [
        f"{recipe}:5:13: error: unknown source 'flan_v3'",
        f"{recipe}:9:11: error: sources.dolly.take: -5 is less than the minimum of 0",
        f"{recipe}:10:1: error: unknown key 'mixtrue'",
    ]
    assert "hint: did you mean 'flan_v2'?" in result.stderr
    assert "hint: did you mean 'mixture'?" in result.stderr


@pytest.mark.parametrize(
    ("selector", "message", "hint"),
    [
        ("fraction: 0", "sources.a.fraction: 0 is not more than 0", "a fraction is a share of the source's rows"),
        ("weight: 0", "sources.a.weight: 0 is not more than 0", "a weight is a share of mixture.total, more than 0"),
        ("weight: 1.5", "sources.a.weight: 1.5 is greater than the maximum of 1", "for more rows, raise mixture.total"),
        ("take: -1", "sources.a.take: -1 is less than the minimum of 0", "take is a whole number of rows (0 for none)"),
    ],
)
def test_a_selector_out_of_range_says_what_its_range_means(tmp_path, selector, message, hint):
    """jsonschema said "0 is less than or equal to the minimum of 0" for `fraction: 0`, with no hint; a zero
    or a negative is most often meant to leave the source out."""
    recipe = write_recipe(tmp_path, f"name: t\nsources:\n  a: {{source: dolly, {selector}}}\nmixture: {{total: 10}}\n")
    [diag, *_] = validate_file(recipe)
    assert (diag.line, diag.message) == (3, message)
    assert hint in diag.hint
    assert diag.hint.endswith("raise mixture.total" if "1.5" in selector else "to leave the source out, delete it")


def test_an_exclusive_bound_elsewhere_is_said_the_right_way_round(tmp_path):
    stage = "stages:\n  - {name: d, kind: dpo, model: m, data: {source: ultrafeedback, take: all}, beta: 0}\n"
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a: {source: dolly, take: 1}\n" + stage)
    assert [d.message for d in validate_file(recipe)] == ["stages.0.beta: 0 is not more than 0"]


def test_bundled_recipes_are_valid():
    recipes = sorted(str(p) for p in (REPO / "recipes").glob("*.yaml"))
    assert len(recipes) >= 2
    result = run_mixer("validate", *recipes)
    assert result.returncode == 0, result.stderr


def test_bundled_recipes_pass_the_schema_as_an_editor_reads_them():
    """docs/recipes.md points editors' YAML language servers at the schema, and a whole recipe names it in its
    first line. An editor checks the file as written, before ${VAR} is read: the wizard recipes' base_url
    `${OPENAI_BASE_URL:-https://api.openai.com/v1}` was marked as an error. A variant (`extends:`) is a change
    to a recipe, whose `null`s delete keys, so it names no schema."""
    import jsonschema
    import yaml

    schema = json.loads((REPO / "schemas" / "recipe.schema.json").read_text(encoding="utf-8"))
    modeline = "# yaml-language-server: $schema=../schemas/recipe.schema.json"
    whole = []
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        document = yaml.safe_load(text)
        if "extends" in document:
            assert modeline not in text, path.name
            continue
        whole.append(path.name)
        assert text.splitlines()[0] == modeline, path.name
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(document)]
        assert errors == [], path.name
    assert {"wizardlm.yaml", "wizardcoder.yaml", "tulu2.yaml"} <= set(whole)


def test_every_key_of_the_recipe_schema_is_in_the_recipe_reference():
    """docs/recipes.md is the reference "every key with an example": a key added to the schema without a line
    there (a source's `license`, until this test) is one a user cannot find."""
    schema = json.loads((REPO / "schemas" / "recipe.schema.json").read_text(encoding="utf-8"))
    reference = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    keys: set[str] = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            keys.update(node.get("properties") or {})
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(schema)
    assert len(keys) > 60
    assert sorted(k for k in keys if f"`{k}`" not in reference and f"{k}:" not in reference) == []


def test_json_output(tmp_path):
    recipe = write_recipe(tmp_path, "name: x\nsources:\n  a: {source: dolly}\n")
    result = run_mixer("validate", "--json", str(recipe))
    assert result.returncode == 2
    payload = json.loads(result.stdout)
    assert payload["ok"] is False
    (diag,) = payload["diagnostics"]
    assert (diag["line"], diag["col"]) == (3, 3)
    assert diag["message"] == "source 'a' needs one of take / fraction / weight"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "sources:\n  a: {source: dolly, take: 5, weight: 0.5}\nmixture: {total: 10}\n",
            (3, 31, "'weight' conflicts with 'take': give exactly one of take / fraction / weight"),
        ),
        (
            "sources:\n  a: {source: dolly, weight: 0.5}\n",
            (3, 22, "`weight` is a share of mixture.total, which is not set"),
        ),
        (
            "sources:\n  a: {source: tulu_hardcoded, take: 15}\n",
            (3, 37, "take 15 is more than the 14 rows of 'tulu_hardcoded'"),
        ),
        ("sources:\n  a: {path: x.jsonl, format: alpacca, take: 1}\n", (3, 30, "unknown format 'alpacca'")),
        ("sources:\n  a: {path: missing.jsonl, format: alpaca, take: 1}\n", (3, 13, "no file matches 'missing.jsonl'")),
        ("sources:\n  a: {path: shards/, format: alpaca, take: 1}\n", (3, 13, "'shards/' is a directory")),
        ("sources:\n  a: {hub: org/name, take: 1}\n", (3, 7, "inline source 'a' needs `format:`")),
        (
            "sources:\n  a: {hub: org/name, source: dolly, take: 1}\n",
            (3, 7, "`hub:` and `source:` both say where the rows of 'a' come from"),
        ),
        (
            "sources:\n  a: {hub: no_robots, format: messages, take: 1}\n",
            (3, 12, "sources.a.hub: 'no_robots' is not a hub dataset id"),
        ),
        (  # a key of a mapping inside a oneOf is named as any unknown key is
            "sources:\n  a: {hub: {id: org/name, bogus: 1}, format: messages, take: 1}\n",
            (3, 27, "unknown key 'bogus' in 'hub'"),
        ),
        (
            "sources:\n  a: {hub: {id: 'org name', split: test}, format: messages, take: 1}\n",
            (3, 17, "sources.a.hub.id: 'org name' is not a hub dataset id"),
        ),
        (
            "sources:\n  a: {source: dolly, take: 1}\n  a: {source: cot, take: 1}\n",
            (4, 3, "duplicate key 'a' (first defined at line 3)"),
        ),
        (
            "sources:\n  a: {source: dolly, take: 1, lang: en}\n",
            (3, 31, "format 'dolly' carries no language field to filter on"),
        ),
        (
            "sources:\n  a: {source: ultrafeedback, take: 1}\n",
            (3, 3, "'a' is preference data (preference); it cannot be mixed into an SFT mixture"),
        ),
        (
            "sources:\n  a: {source: oasst1, take: 1, options: {top_k: 1}}\n",
            (3, 42, "format 'oasst' has no option 'top_k'"),
        ),
        (
            "sources:\n  a: {source: dolly, take: 1, fields: {prompt: q}}\n",
            (3, 40, "format 'dolly' has no field 'prompt'"),
        ),
        ("sources:\n  a: {source: dolly, take: 1, drop_patterns: ['(']}\n", (3, 47, "invalid regular expression '('")),
        (  # an evolved source's filters run too: its patterns are checked like any other
            "sources:\n  s: {source: dolly, take: 1}\n  e: {evolved: b, take: all, drop_patterns: ['(']}\n"
            "evolve:\n  b: {from: s, teacher: {model: gpt-4o-mini}}\n",
            (4, 46, "invalid regular expression '('"),
        ),
        (
            "sources:\n  a: {source: dolly, weight: 0.7}\n  b: {source: cot, weight: 0.6}\nmixture: {total: 10}\n",
            (5, 18, "weights add up to 1.3, more than 1"),
        ),
        (
            "sources:\n  a: {source: dolly, take: 1}\nmixture: {dedup: fuzzy}\n",
            (4, 18, "mixture.dedup: 'fuzzy' is not one of none, exact"),
        ),
        (  # JSON Schema's `minimum` lets .nan through: the plan failed on it in a traceback
            "sources:\n  a: {source: dolly, fraction: .nan}\n",
            (3, 32, "sources.a.fraction: is .nan, YAML's not-a-number, not a finite number"),
        ),
        (
            "sources:\n  a: {source: dolly, weight: .inf}\nmixture: {total: 10}\n",
            (3, 30, "sources.a.weight: is .inf, YAML's infinity, not a finite number"),
        ),
        (
            "sources:\n  a: {path: '${MIXER_TEST_UNSET_VAR}', format: alpaca, take: 1}\n",
            (3, 13, "environment variable MIXER_TEST_UNSET_VAR is not set"),
        ),
        ("sources:\n  a: {path: x.json}\n", (3, 7, "inline source 'a' needs `format:`")),
        (
            "sources:\n  a: {source: oasst1, take: 1, options: {top_k_reply: 0.5}}\n",
            (3, 55, "option 'top_k_reply' must be a whole number of at least 1, or null for every reply, not 0.5"),
        ),
        (
            "sources:\n  a: {source: sharegpt, take: 1, options: {trim_trailing_user: 'no'}}\n",
            (3, 64, "option 'trim_trailing_user' must be true or false, not 'no'"),
        ),
        (
            "sources:\n  a: {source: dolly, take: 1, min_turns: 3, max_turns: 2}\n",
            (3, 31, "min_turns is larger than max_turns"),
        ),
        (
            "sources:\n  a: {source: dolly, take: 1}\nstages:\n"
            "  - {name: s, kind: sft, model: {stage: s}, data: mixture}\n",
            (5, 41, "stage 's' cannot start from itself"),
        ),
        (
            "sources:\n  a: {source: dolly, take: 1}\nstages:\n"
            "  - {name: s, kind: sft, model: m, data: mixture, launcher: {backend: ddp, offload: true}}\n",
            (5, 76, "offload needs backend: deepspeed or fsdp"),
        ),
        (
            "sources:\n  a: {source: dolly, take: 1}\nstages:\n"
            "  - {name: d, kind: dpo, model: m, data: {source: dolly, take: 1}}\n",
            (5, 36, "a dpo stage needs preference data (prompt/chosen/rejected), not 'dolly'"),
        ),
        (
            "sources:\n  a: {source: dolly, take: 1}\nstages:\n"
            "  - {name: s, kind: sft, model: m, data: mixture, eval: {rows: 5}}\n",
            (5, 51, "a stage on the mixture is scored on the mixture's test split, not rows of its own"),
        ),
        (
            "sources:\n  a: {path: [x.jsonl, x.jsonl], format: alpaca, take: all}\n",
            (3, 23, "'x.jsonl' is listed twice: its rows would be read twice"),
        ),
        (
            "sources:\n  a: {path: ['*.jsonl', x.jsonl], format: alpaca, take: all}\n",
            (3, 25, "'x.jsonl' matches x.jsonl, which '*.jsonl' matched already: its rows would be read twice"),
        ),
        (  # prompts have no replies: an evolve block's seeds, never rows of the mixture or a stage
            "sources:\n  p: {path: x.jsonl, format: prompts, take: 5}\n",
            (3, 45, "'p' holds prompts without replies; it can only seed evolve blocks, not add rows to the mixture"),
        ),
        (
            "sources:\n  p: {path: x.jsonl, format: prompts, take: 0, max_turns: 2}\n",
            (3, 48, "prompts have no assistant turns to count"),
        ),
        (
            "sources:\n  a: {source: dolly, take: 1}\nstages:\n"
            "  - {name: s, kind: sft, model: m, data: {path: x.jsonl, format: prompts, take: all}}\n",
            (5, 36, "the data of stage 's' is prompts without replies; a stage cannot train on them"),
        ),
    ],
)
def test_error_classes(tmp_path, body, expected):
    (tmp_path / "x.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    (tmp_path / "shards").mkdir()
    recipe = write_recipe(tmp_path, "name: t\n" + body)
    found = messages(recipe)
    line, col, text = expected
    assert any(d[0] == line and d[1] == col and d[2].startswith(text) for d in found), found


def test_an_inline_source_named_after_a_registry_entry_is_pointed_to_it(tmp_path):
    """`code_alpaca: {path: ..., take: 500}` was told only the ten formats: a source named after a registry
    entry most likely holds that entry's files, and `source:` reads them with its fields and license. A hub
    source cannot also take `source:`, so it is told the entry's format; any other name, the formats."""
    (tmp_path / "x.json").write_text("[]")
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          code_alpaca: {path: x.json, take: 5}
          sharegpt: {hub: org/name, take: 5}
          mine: {path: x.json, take: 5}
        """,
    )
    found = {d.line: (d.message, d.hint) for d in validate_file(recipe)}
    formats = "one of: alpaca, cot, dolly, flan, messages, oasst, preference, prompts, sharegpt, turns"
    assert found == {
        3: (
            "inline source 'code_alpaca' needs `format:`",
            f"`source: code_alpaca` reads them as the registry's entry (alpaca); or give `format:`, {formats}",
        ),
        4: ("inline source 'sharegpt' needs `format:`", f"the registry's 'sharegpt' is `format: sharegpt`; {formats}"),
        5: ("inline source 'mine' needs `format:`", formats),
    }


def test_a_source_with_nowhere_to_read_from_is_told_the_likely_slip(tmp_path):
    """A variant's `code_alpacca: {take: 10}` (one letter off the base's source) adds a new source with nowhere
    to read from, and said only that it needs `source:`, `path:` or `hub:`. It is now told the inherited name
    and where it is written; a registry entry's name, that `source:` reads it; any other, where the registry is
    listed. A source the recipe itself writes is not suggested: two of its own may well look alike."""
    write_recipe(
        tmp_path,
        """
        name: base
        sources:
          code_alpaca: {source: code_alpaca, take: 5}
        """,
        name="base.yaml",
    )
    recipe = write_recipe(
        tmp_path,
        """
        extends: base.yaml
        name: variant
        sources:
          code_alpacca: {take: 10}
          dolly: {take: 5}
          dolly_2: {take: 5}
        """,
    )
    found = {d.line: (d.message, d.hint) for d in validate_file(recipe) if d.message.endswith("+ `format:`")}
    needs = "needs `source:` (a registry entry), `path:` + `format:` or `hub:` + `format:`"
    assert found == {
        4: (
            f"source 'code_alpacca' {needs}",
            f"did you mean 'code_alpaca' ({tmp_path / 'base.yaml'}:3)? A recipe that extends another changes a "
            "source by its exact name; another name adds a source",
        ),
        5: (f"source 'dolly' {needs}", "`source: dolly` reads the registry's entry"),
        6: (f"source 'dolly_2' {needs}", "run `mixer sources` to list the registry"),
    }


def test_an_evolve_block_key_from_other_tools_is_told_its_name_here(tmp_path):
    """`rows: 5` in an evolve block was told "did you mean 'rounds'?", the wrong key: the number of seeds is
    `sample`. Keys WizardLM's scripts and other tools use are told their name here; others, the closest key."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          a: {source: dolly, take: 5}
          e: {evolved: b, take: all}
        evolve:
          b: {from: a, rows: 5, iterations: 2, model: gpt-4o-mini, roundz: 1, teacher: {model: m}}
        """,
    )
    found = {d.message: d.hint for d in validate_file(recipe) if d.message.startswith("unknown key")}
    assert found == {
        "unknown key 'rows' in 'b'": "the number of seed rows is `sample: N` (or `sample: all`)",
        "unknown key 'iterations' in 'b'": "the number of rounds is `rounds: M`",
        "unknown key 'model' in 'b'": "the model is the teacher's: `teacher: {model: ..., base_url: ...}`",
        "unknown key 'roundz' in 'b'": "did you mean 'rounds'?",
    }


def test_a_config_in_another_tools_words_is_told_a_recipes(tmp_path):
    """axolotl's `datasets:` (a list of `- path:` items) and open-instruct's `dataset_mixer:` were told only the
    allowed keys, and a `sources:` list that it is not a mapping: each is told how a recipe says it."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        dataset_mixer: {allenai/tulu-v2-sft-mixture: 1.0}
        base_model: m
        output_dir: out
        sources:
          - {path: x.json, type: alpaca}
        """,
    )
    found = {d.line: (d.message, d.hint) for d in validate_file(recipe)}
    assert found == {
        2: (
            "unknown key 'dataset_mixer'",
            "open-instruct's dataset_mixer is `sources:` here: sources: {tulu-v2-sft-mixture: "
            "{hub: allenai/tulu-v2-sft-mixture, format: messages, take: all}}",
        ),
        3: (
            "unknown key 'base_model'",
            "training settings belong to a stage: `stages: [{name: sft, kind: sft, model: ..., data: mixture, ...}]`",
        ),
        4: ("unknown key 'output_dir'", "the mixture's folder is `output: {dir: ...}`"),
        6: (
            'sources: is [{"path": "x.json", "type": "alpaca"}], a list, not a mapping',
            "`sources:` maps names to entries: write each item as `<name>: {...}` below it, without '- '",
        ),
    }


def test_an_open_instruct_mixer_is_written_out_as_the_sources_that_say_it(tmp_path):
    """open-instruct reads n <= 1 as a fraction and a larger n as rows; the hint's sources are a recipe's own,
    so pasting them validates."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        dataset_mixer_list: [allenai/tulu-3-sft-mixture, 0.25, data/mine.jsonl, 2000, org/a, 1, org/b, 1, org/c, 1]
        dataset_mixer: {not: [a list]}
        """,
    )
    hints = {d.message: d.hint for d in validate_file(recipe)}
    assert hints["unknown key 'dataset_mixer_list'"] == (
        "open-instruct's dataset_mixer_list is `sources:` here: sources: {tulu-3-sft-mixture: "
        "{hub: allenai/tulu-3-sft-mixture, format: messages, fraction: 0.25}, mine: {path: data/mine.jsonl, "
        "format: messages, take: 2000}, a: {hub: org/a, format: messages, take: all}, ...}"
    )
    assert hints["unknown key 'dataset_mixer'"].startswith("a recipe's datasets are `sources:`")  # not numbers
    axolotl = write_recipe(
        tmp_path,
        "name: t\ndatasets:\n  - {path: data/mine.jsonl, type: chat_template}\n  - {path: org/chats, type: sharegpt}\n",
        "axolotl.yaml",
    )
    (datasets,) = [d.hint for d in validate_file(axolotl) if d.message == "unknown key 'datasets'"]
    assert datasets == (
        "axolotl's datasets is `sources:` here: sources: {mine: {path: data/mine.jsonl, format: messages, take: all}, "
        "chats: {hub: org/chats, format: sharegpt, take: all}}"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    sources = hints["unknown key 'dataset_mixer_list'"].split("here: ", 1)[1].replace(", ...}", "}")
    assert validate_file(write_recipe(tmp_path, f"name: t\n{sources}\n", "pasted.yaml")) == []


def test_a_stage_in_another_tools_words_is_told_a_recipes(tmp_path):
    """axolotl's `sequence_len` and `num_epochs` on the stage, TrainingArguments' `lr` and
    `per_device_train_batch_size` in its hyperparameters: each is told its name and place here; a slip of
    spelling still gets `did you mean`."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          a: {source: dolly, take: 5}
        stages:
          - name: sft
            kind: sft
            model: m
            data: mixture
            sequence_len: 2048
            num_epochs: 3
            bf16: true
            hyperparameters: {lr: 1.0e-5, per_device_train_batch_size: 2, warmup_steps: 10, learning_rat: 1.0e-5}
        """,
    )
    found = {d.message: d.hint for d in validate_file(recipe)}
    assert found == {
        "unknown key 'sequence_len' in stages[0]": "the sequence length is the stage's `max_seq_length`",
        "unknown key 'num_epochs' in stages[0]": "training settings go in the stage's `hyperparameters: {epochs: N}`",
        "unknown key 'bf16' in stages[0]": "how the stage runs is its `launcher: {mixed_precision: bf16}`",
        "unknown key 'lr' in 'hyperparameters'": "here it is `learning_rate`",
        "unknown key 'per_device_train_batch_size' in 'hyperparameters'": "here it is `per_device_batch_size`",
        "unknown key 'warmup_steps' in 'hyperparameters'": "here it is `warmup_ratio` (a share of the steps)",
        "unknown key 'learning_rat' in 'hyperparameters'": "did you mean 'learning_rate'?",
    }


@pytest.mark.parametrize(("template", "refused"), [("chatml", True), ("llama3", True), ("tulu", False)])
def test_a_chat_template_name_from_another_tool_is_refused(tmp_path, template, refused):
    """axolotl names its templates (`chat_template: chatml`); here the value is the template's text, so "chatml"
    rendered every conversation as the word chatml, and no token was trained on."""
    recipe = write_recipe(
        tmp_path,
        f"""
        name: t
        sources:
          a: {{source: dolly, take: 5}}
        stages:
          - {{name: sft, kind: sft, model: m, data: mixture, chat_template: {template}}}
          - {{name: sft2, kind: sft, model: m, data: mixture, chat_template: "{{{{ messages[0]['content'] }}}}"}}
        """,
    )
    found = [(d.line, d.message) for d in validate_file(recipe)]
    expected = f"chat_template {template!r} is not a Jinja template: it would be every conversation's whole text"
    assert found == ([(5, expected)] if refused else [])


def test_a_folder_given_as_path_is_told_the_suffix_its_files_have(tmp_path):
    """A folder of FLAN's CoT TSVs was told "e.g. 'cot/*.jsonl'", a pattern that matches none of its files.
    The hint now takes the readable suffix most of its files have, as written (a tie goes to the one
    SUPPORTED_SUFFIXES lists first, whatever order the filesystem lists them in); files only in subfolders
    are named with `**/`; a folder with none says so."""
    files = ["cot/a.tsv", "cot/b.tsv", "cot/notes.json", "cot/README.md", "mixed/a.jsonl.gz", "mixed/b.json"]
    files += ["upper/A.JSONL", "splits/train/a.parquet", "splits/README.md", "docs/README.md"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          a: {path: cot/, format: cot, take: 5}
          b: {path: mixed, format: alpaca, take: 5}
          c: {path: upper, format: alpaca, take: 5}
          d: {path: splits, format: alpaca, take: 5}
          e: {path: docs, format: alpaca, take: 5}
        """,
    )
    directory = f"is a directory (relative to {tmp_path})"
    hints = {d.line: d.hint for d in validate_file(recipe) if d.message.endswith(directory)}
    assert hints == {
        3: "name its files, e.g. 'cot/*.tsv'",
        4: "name its files, e.g. 'mixed/*.json'",
        5: "name its files, e.g. 'upper/*.JSONL'",
        6: "name its files, e.g. 'splits/**/*.parquet'",
        7: "name its files, e.g. 'docs/*.jsonl'; it holds none that mixer reads",
    }


def test_a_value_of_the_wrong_type_is_named_in_yaml_words_with_the_usual_slip(tmp_path):
    """jsonschema said "None is not of type 'object'" for `mixture:` left with nothing under it: Python's and
    JSON Schema's words, where the recipe's author wrote YAML and left a key empty."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        mixture:
        sources:
          a: {source: dolly, take: 1}
        output: {dir: 3}
        stages: {s: {kind: sft}}
        """,
    )
    found = {(d.line, d.col): (d.message, d.hint) for d in validate_file(recipe)}
    assert found == {
        (2, 9): (
            "mixture: is empty, not a mapping",
            "a key with nothing after it holds null in YAML: write its value (indent a mapping's keys below it), "
            "or delete the line",
        ),
        (5, 15): ("output.dir: is 3, a whole number, not text", 'quote it to make it text: "3"'),
        (6, 9): (
            'stages: is {"s": {"kind": "sft"}}, a mapping, not a list',
            "a list's items each start with '- ' (or write [a, b])",
        ),
    }


def test_what_yaml_reads_other_than_written_is_named_with_the_fix(tmp_path):
    """A date, `no` (Norway's language code) and `on` are not text to YAML; another tool's tag (`!env`) and a
    second document raised PyYAML's ConstructorError as a traceback or got the generic hint."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        description: 2024-01-01
        seed: !!int abc
        sources:
          a: {source: oasst1, take: !env ROWS, lang: no}
          b: {source: dolly, take: 1, license: on}
        """,
    )
    found = {(d.line, d.col): (d.message, d.hint) for d in validate_file(recipe)}
    yes_no = "quote it to make it text: YAML reads yes, no, on, off, true and false unquoted as true or false"
    assert found == {
        (2, 14): ('description: is "2024-01-01", date, not text', 'quote it to make it text: "2024-01-01"'),
        (3, 7): ("'abc' cannot be read as !!int", "drop the tag, or write a valid int"),
        (5, 29): (
            "unknown YAML tag !env",
            "recipes are plain YAML: drop the tag (for an environment variable, write ${NAME} inside a string)",
        ),
        (5, 46): ("sources.a.lang: is false, a boolean, not text", yes_no),
        (6, 40): ("sources.b.license: is true, a boolean, not text", yes_no),
    }
    two = write_recipe(tmp_path, "name: t\nsources:\n  a: {source: dolly, take: 1}\n---\nname: u\n", "two.yaml")
    [diag] = validate_file(two)
    assert (diag.line, diag.message) == (4, "invalid YAML: but found another document")
    assert (
        diag.hint == "a recipe is one YAML document: delete this `---` and what follows, or give it a file of its own"
    )


@pytest.mark.parametrize(
    ("held_out", "message"),
    [
        ("5", "is 5, a whole number, not a mapping"),
        ("{}", "is empty"),
        ("{rows: 1, fraction: 0.1}", "names both rows and fraction"),
    ],
)
def test_held_out_rows_of_the_wrong_shape_are_shown_both_shapes(tmp_path, held_out, message):
    recipe = write_recipe(
        tmp_path, f"name: t\nsources:\n  a: {{source: dolly, take: 1}}\nmixture:\n  eval: {held_out}\n"
    )
    ((diag,),) = [validate_file(recipe)]
    assert (diag.line, diag.col, diag.message) == (5, 9, f"mixture.eval: {message}")
    assert (
        diag.hint
        == "held-out rows are `eval: {rows: N}` (that many) or `eval: {fraction: f}` (that share), one of them"
    )


def test_keys_of_other_tools_and_relative_weights_get_hints_in_our_terms(tmp_path):
    """Users of axolotl or LLaMA-Factory write `type:`, `max_samples:` or relative weights (2:3:1); a
    spelling match ("did you mean 'fields'?" for `filters`) sent them the wrong way."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          a: {source: oasst1, weight: 2, filters: {lang: [en]}}
          b: {source: dolly, weight: 3, type: dolly}
          c: {source: cot, weight: 1, max_samples: 10}
        mixture: {total: 600}
        """,
    )
    hints = {(d.line, d.col, d.message): d.hint for d in validate_file(recipe)}
    assert hints[(3, 34, "unknown key 'filters' in 'a'")].startswith(
        "filters are keys of the source itself: `lang: [en]`"
    )
    assert (
        hints[(4, 33, "unknown key 'type' in 'b'")]
        == "the record format is `format:` (alpaca, sharegpt, messages, ...)"
    )
    assert hints[(5, 31, "unknown key 'max_samples' in 'c'")] == "a number of rows is `take: N`"
    assert hints[(6, 18, "weights add up to 6, more than 1")] == (
        "weights are shares of mixture.total; as proportions of their sum they would be a: 0.333, b: 0.5, c: 0.166"
    )


def test_a_registry_name_as_a_format_is_told_the_source_and_its_format(tmp_path):
    """`format: code_alpaca` is what a user writes for Code-Alpaca's file; "did you mean 'alpaca'?" hid that the
    registry entry reads it too."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          a: {path: ca.json, format: code_alpaca, take: 5}
          b: {path: ca.json, format: alpacaa, take: 5}
        """,
    )
    (tmp_path / "ca.json").write_text("[]")
    hints = {(d.line, d.col, d.message): d.hint for d in validate_file(recipe)}
    assert hints[(3, 30, "unknown format 'code_alpaca'")] == (
        "'code_alpaca' is a source in the registry, not a format: write `source: code_alpaca` (a `path:` beside it "
        "reads your copy), or `format: alpaca`, the format its rows are in"
    )
    assert hints[(4, 30, "unknown format 'alpacaa'")] == "did you mean 'alpaca'?"


def test_a_llama_factory_dataset_entry_is_told_a_sources_keys(tmp_path):
    """dataset_info.json's `formatting`, `columns` and `file_name`, and axolotl's `split` and `field_*`, got a
    spelling match at best (`formatting`) or the list of allowed keys."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          a: {file_name: d.jsonl, formatting: alpaca, columns: {prompt: q, response: a}, take: 5}
          b: {source: dolly, take: 5, split: train, field_instruction: q}
        """,
    )
    hints = {d.message: d.hint for d in validate_file(recipe)}
    assert (
        hints["unknown key 'formatting' in 'a'"] == "the record format is `format:` (alpaca, sharegpt, messages, ...)"
    )
    assert hints["unknown key 'file_name' in 'a'"] == "local files are `path:` (a file, a glob or a list)"
    fields = hints["unknown key 'columns' in 'a'"]
    assert fields.startswith("a file's own field names are `fields: {canonical: field in the file}`")
    assert "LLaMA-Factory's prompt, query and response are instruction, input and output" in fields
    assert hints["unknown key 'field_instruction' in 'b'"] == fields
    assert hints["unknown key 'split' in 'b'"].startswith("a hub dataset's split and config: `hub: {id: org/name")


def test_all_errors_reported_at_once(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          a: {source: dolli, take: 1}
          b: {source: dolly, take: 1, fraction: 2}
          c: {path: nope.json, format: alpaca, take: 1}
        output: {dirr: x}
        """,
    )
    found = messages(recipe)
    assert [d[0] for d in found] == [3, 4, 5, 6]


def test_a_path_that_names_no_file_gets_the_likely_fix(tmp_path):
    """A typo deep in a data path is the usual cause: the hint names the closest file of the folder, the first
    folder that does not exist, or the endings a glob could have matched. An absolute path is not said to be
    relative to the recipe."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "code_alpaca_2k.json").write_text('[{"instruction": "a", "output": "b"}]')
    (data / "notes.txt").write_text("x")
    recipe = write_recipe(
        tmp_path,
        f"""
        name: t
        sources:
          a: {{path: data/code_alpaca_20k.json, format: alpaca, take: 1}}
          b: {{path: dta/code_alpaca_2k.json, format: alpaca, take: 1}}
          c: {{path: 'data/*.jsonl', format: alpaca, take: 1}}
          d: {{path: {data / "zzz.jsonl"}, format: alpaca, take: 1}}
          e: {{path: 'data/*/x.jsonl', format: alpaca, take: 1}}
        """,
    )
    found = {d.line: (d.message, d.hint) for d in validate_file(recipe)}
    relative = f"(relative to {tmp_path})"
    assert found == {
        3: (f"no file matches 'data/code_alpaca_20k.json' {relative}", "did you mean 'data/code_alpaca_2k.json'?"),
        4: (f"no file matches 'dta/code_alpaca_2k.json' {relative}", f"there is no folder {str(tmp_path / 'dta')!r}"),
        5: (f"no file matches 'data/*.jsonl' {relative}", "its folder holds 2 file(s), ending in .json, .txt"),
        6: (f"no file matches {str(data / 'zzz.jsonl')!r}", "check the name"),
        7: (f"no file matches 'data/*/x.jsonl' {relative}", "paths are relative to the recipe file; check the name"),
    }


def test_a_name_longer_than_the_file_system_allows_is_a_located_error_not_a_traceback(tmp_path):
    """Python's Path.is_file() raises for such a name (ENAMETOOLONG) where it returns False for a missing one."""
    long = "a" * 300
    recipe = write_recipe(tmp_path, f"name: t\nsources:\n  a: {{path: {long}.jsonl, format: alpaca, take: 1}}\n")
    [found] = validate_file(recipe)
    assert (found.line, found.col) == (3, 13)
    assert found.message == f"'{long}.jsonl' has a name longer than the file system allows (relative to {tmp_path})"
    assert found.hint == "shorten it: most file systems allow 255 bytes in one file or folder name"
    result = run_mixer("validate", str(recipe), str(tmp_path / f"{long}.yaml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{tmp_path / long}.yaml:1:1: error: cannot read recipe: [Errno 36] File name too long" in result.stderr


def test_a_bad_name_is_pointed_at_and_explained(tmp_path):
    """jsonschema reports a bad key as its `propertyNames` pattern, located at the whole mapping and worded as
    a regex; a user needs the name itself and the rule in words."""
    recipe = write_recipe(
        tmp_path,
        """
        name: my mix
        sources:
          "a b": {source: dolly, take: 1}
        stages:
          - {kind: sft, name: s 1, model: m, data: mixture}
        """,
    )
    rule = (
        "a name starts with an ASCII letter or digit and holds only ASCII letters, digits, '_', '.' and '-' (names "
        "become file names and columns)"
    )
    found = [(d.line, d.col, d.message, d.hint) for d in validate_file(recipe)]
    assert found == [
        (1, 7, "name: invalid name 'my mix'", f"{rule}: my-mix"),
        (3, 3, "sources: invalid name 'a b'", f"{rule}: a-b"),
        (5, 23, "stages.0.name: invalid name 's 1'", f"{rule}: s-1"),
    ]
    # "letters" read as any letter: 'ü' is one, and was refused with no name to write instead
    recipe.write_text(
        "name: ü mix\nsources:\n  _alpaca-ü: {source: dolly, take: 1}\n  '日本': {source: dolly, take: 1}\n"
    )
    assert [d.hint.removeprefix(rule) for d in validate_file(recipe)] == [": u-mix", ": alpaca-u", ""]


def test_a_count_that_is_not_a_whole_number_gets_the_fix_it_needs(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          a: {source: dolly, take: "10"}
          b: {source: dolly, take: al}
          c: {source: dolly, take: 0.5}
        """,
    )
    hints = {d.line: d.hint for d in validate_file(recipe)}
    assert hints == {
        3: "write the number without quotes: take: 10",
        4: "did you mean 'all'?",
        5: "take is a whole number of rows or `all` (a share of the source is `fraction: f`)",
    }


def test_values_of_the_wrong_type_anywhere_are_reported_never_raised(tmp_path):
    """No traceback for any user mistake: the bundled recipes with values swapped for others of any type, at
    random places (a fixed seed, so a failure repeats), give diagnostics or a clean recipe, never an exception
    other than RecipeInvalid. Each crash this found (`options: 5`, `source: [..]`, `path: 3`, a stage named
    by a mapping, a document that is only `null`) is covered because the walk reaches every key."""
    import yaml

    from mixer.errors import RecipeInvalid
    from mixer.validate import load_recipe

    values = [None, [], {}, [1, 2], {"x": 1}, -1, 0, 1, 2.5, "", "all", "x", True, [None], {"name": None}]
    bases = [
        yaml.safe_load((REPO / "recipes" / name).read_text())
        for name in ("tulu2.yaml", "tiny.yaml", "wizardcoder.yaml")
    ]
    path = tmp_path / "r.yaml"
    for doc in swapped_values(bases, values, seed=7, count=300):
        path.write_text(yaml.safe_dump(doc))
        validate_file(path)
        with contextlib.suppress(RecipeInvalid):
            load_recipe(path)


def test_a_yaml_alias_that_contains_itself_is_an_error_not_a_recursion(tmp_path):
    recipe = write_recipe(tmp_path, "name: t\ndescription: &a {x: *a}\nsources:\n  a: {source: dolly, take: 1}\n")
    [diag] = validate_file(recipe)
    assert (diag.line, diag.col) == (2, 14)
    assert diag.message == "an alias refers to a mapping or list that contains it (a loop)"
    (tmp_path / "null.yaml").write_text("null\n")
    [diag] = validate_file(tmp_path / "null.yaml")
    assert diag.message == "a recipe must be a mapping (name:, sources:, ...)"


def test_yaml_merge_keys_share_settings_and_x_keys_hold_the_anchors(tmp_path):
    """`<<: *defaults` is how teams share settings across entries (docker compose, CI files): it raised
    PyYAML's ConstructorError as a traceback. Top-level `x-` keys hold the anchors and are not part of the
    recipe; a value brought in by a merge is located where the anchor wrote it."""
    from mixer.validate import load_recipe

    samples = REPO / "sources" / "samples"
    text = (
        "name: shared\n"
        "x-defaults: &defaults {format: alpaca, take: 3, max_chars: 5000}\n"
        "x-dolly: &dolly {format: dolly, take: 1}\n"
        "sources:\n"
        f"  a: {{<<: *defaults, path: {samples / 'alpaca.json'}}}\n"
        "  b:\n"
        "    <<: [*defaults, *dolly]\n"
        f"    path: {samples / 'code_alpaca.json'}\n"
        "    take: 2\n"
    )
    recipe = load_recipe(write_recipe(tmp_path, text))
    a, b = recipe.sources
    assert (a.format, a.selector.value, a.filters.max_chars) == ("alpaca", 3, 5000)
    assert (b.format, b.selector.value, b.filters.max_chars) == ("alpaca", 2, 5000)  # the first listed wins
    assert "x-defaults" not in recipe.document
    assert validate_file(write_recipe(tmp_path, text + "x-notes: {anything: [1, 2]}\n", "b.yaml")) == []

    [diag] = validate_file(write_recipe(tmp_path, text.replace("take: 3", "take: -3"), "c.yaml"))
    assert (diag.line, diag.col, diag.message) == (2, 46, "sources.a.take: -3 is less than the minimum of 0")
    broken = text.replace("[*defaults, *dolly]", "3").replace("    take: 2\n", "    take: 2\n    format: alpaca\n")
    [diag] = validate_file(write_recipe(tmp_path, broken, "d.yaml"))
    assert (diag.line, diag.col) == (7, 9)
    assert (diag.message, diag.hint) == (
        "a merge key (<<) takes a mapping or a list of mappings",
        "name an anchored mapping: <<: *defaults, or <<: [*a, *b]",
    )
    # anchors are a file's own: a variant cannot merge its base's
    variant = write_recipe(tmp_path, "extends: recipe.yaml\nsources:\n  c: {<<: *defaults, take: 1}\n", "v.yaml")
    [diag] = validate_file(variant)
    assert (diag.line, diag.message) == (3, "invalid YAML: found undefined alias 'defaults'")
    assert diag.hint.startswith("an alias (*name) needs its anchor (&name) earlier in the same file")
    # anchors written under a key of their own name are told where such a block goes
    [diag] = validate_file(write_recipe(tmp_path, text.replace("x-defaults:", "defaults:"), "e.yaml"))
    assert (diag.line, diag.col, diag.message) == (2, 1, "unknown key 'defaults'")
    assert diag.hint.endswith("; a block of shared settings for anchors goes under a key starting with x- (x-defaults)")
    [diag] = validate_file(write_recipe(tmp_path, text + "epochs: 3\n", "f.yaml"))
    assert "x-" not in diag.hint  # a value, not a block


def test_a_file_mixer_wrote_given_as_the_recipe_names_the_recipe_it_came_from(tmp_path):
    """A build folder, its manifest, a lock or a shard is a tab completion away from the recipe: the manifest
    read as a recipe gave a dozen "unknown key" errors, a shard "save it as UTF-8"."""
    from mixer.build import Options, build
    from mixer.errors import MixerError
    from mixer.inherit import read_recipe_document

    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n", "t.yaml")
    out = build(recipe, Options(progress=False), out=tmp_path / "out").out_dir
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"recipe": {"path": "t.yaml"}, "training_fingerprint": "f"}))
    made_from = f"give the recipe it was made from: {recipe}"
    for path, message, hint in [
        (out, "is a build, not a recipe", made_from),
        (out / "manifest.json", "is a build's manifest, not a recipe", made_from),
        (tmp_path / "run", "is a training run, not a recipe", "give the recipe it was made from: t.yaml"),
        (tmp_path / "t.lock", "is a lock file, not a recipe", f"give the recipe it locks: {recipe}"),
        (out / "data" / "train-00000-of-00001.parquet", "is not a recipe (not text)", "a recipe is a .yaml file"),
    ]:
        with pytest.raises(MixerError) as refused:
            read_recipe_document(path)
        assert (refused.value.message, refused.value.hint) == (f"{path}: {message}", hint)


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        (
            "https://huggingface.co/datasets/tatsu-lab/alpaca/resolve/main/data/train-00000-of-00001.parquet",
            'read it from the Hub instead of `path:`: hub: {id: tatsu-lab/alpaca, revision: "main", '
            'data_files: "data/train-00000-of-00001.parquet"}',
        ),
        (
            "hf://datasets/tatsu-lab/alpaca@refs%2Fconvert%2Fparquet/default/train/*.parquet",
            'read it from the Hub instead of `path:`: hub: {id: tatsu-lab/alpaca, revision: "refs/convert/parquet", '
            'data_files: "default/train/*.parquet"}',
        ),
        (
            "https://example.com/a.jsonl",
            "download it first and name the file, or put it in --data-dir as <source>.<ext>",
        ),
    ],
)
def test_a_url_as_a_path_is_told_how_to_read_it(tmp_path, url, hint):
    """A Hub file's address pasted into `path:` read "no file matches ... there is no folder 'https:'"."""
    recipe = write_recipe(tmp_path, f"name: t\nsources:\n  a: {{path: '{url}', format: alpaca, take: 1}}\n")
    [diag] = validate_file(recipe)
    assert (diag.line, diag.col, diag.message) == (3, 13, f"{url!r} is a URL: `path:` names files on this machine")
    assert diag.hint == hint
    if "hub:" in hint:  # and what it suggests is a valid recipe
        suggested = hint.split("instead of `path:`: ")[1]
        assert (
            validate_file(write_recipe(tmp_path, f"name: t\nsources:\n  a: {{{suggested}, format: alpaca, take: 1}}\n"))
            == []
        )


def test_numbers_written_as_people_write_them_are_given_back_as_yaml_numbers(tmp_path):
    """`50%`, `10k`, `1,000`, a quoted `"0.2"` and `1e3` (YAML 1.1 reads an exponent without a dot as text) are
    all text to YAML; each hint says the number to write."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        seed: 1e3
        sources:
          a: {source: dolly, fraction: 50%}
          b: {source: dolly, take: 10k}
          c: {source: dolly, take: "1,000"}
          d: {source: dolly, take: 50%}
          e: {source: dolly, take: lots}
        mixture: {total: 1.5M}
        """,
    )
    hints = {d.line: d.hint for d in validate_file(recipe)}
    assert hints == {
        2: "YAML reads an exponent without a dot as text: write 1000",
        4: "write it as a plain number: 0.5",
        5: "write it as a plain number: take: 10000",
        6: "write it as a plain number: take: 1000",
        7: "a share of the source's rows is `fraction: 0.5`",
        8: "take is a whole number of rows or `all`",
        9: "write it as a plain number: 1500000",
    }
    # what the hint writes is a number to YAML: a learning rate of 2e-5 is text, 2.0e-05 is not
    import yaml

    from mixer.validate_schema import _as_number

    for text, value in [("2e-5", 2e-5), ("-5e-7", -5e-7), ("1e20", 1e20), ("50%", 0.5), ("1,000", 1000)]:
        assert yaml.safe_load(f"x: {_as_number(text)}")["x"] == value


def test_a_count_written_with_a_decimal_point_is_told_to_drop_it(tmp_path):
    """JSON Schema takes 100000.0 for a whole number; mixer carried it as a float (`take: 100000.0` in the plan,
    another fingerprint than `take: 100000`) and past the check of a registry entry's rows."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        seed: 42.0
        sources:
          a: {source: dolly, take: 1.0e+5}
          b: {source: dolly, take: 0.5}
          c: {source: dolly, fraction: 2.0}
        output: {shard_rows: 1000.0}
        """,
    )
    found = {d.line: (d.message, d.hint) for d in validate_file(recipe)}
    assert found == {
        2: ("seed: is 42.0, a number, not a whole number", "write it without a decimal point: 42"),
        4: (
            "sources.a.take: is 100000.0, a number, not a whole number",
            "write it without a decimal point: take: 100000",
        ),
        5: (
            "sources.b.take: is 0.5, a number, not a whole number",
            "take is a whole number of rows or `all` (a share of the source is `fraction: f`)",
        ),
        7: ("output.shard_rows: is 1000.0, a number, not a whole number", "write it without a decimal point: 1000"),
    }  # a fraction is a number: 2.0 is one


def test_a_file_no_reader_takes_is_refused_by_validate_at_its_path_with_the_command_that_fixes_it(tmp_path):
    """A `.jsonl.zst` shard (or a README caught by a glob) passed validation and stopped the build with
    "unsupported file type"; it is an error at the source's path now, and a file compressed other than with gzip
    is told the command that decompresses it."""
    from mixer.build import Options, build
    from mixer.errors import MixerError, RecipeInvalid

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl.zst").write_bytes(b"(compressed)")
    (tmp_path / "data" / "notes.txt").write_text("not data\n")
    recipe = write_recipe(
        tmp_path,
        "name: t\nsources:\n  a: {path: data/a.jsonl.zst, format: alpaca, take: all}\n"
        "  b: {path: 'data/*.txt', format: alpaca, take: all}\n",
    )
    found = [(d.line, d.col, d.message, d.hint) for d in validate_file(recipe)]
    assert found == [
        (
            3,
            13,
            "'data/a.jsonl.zst': zst-compressed files are not read",
            f"mixer reads plain or gzip text: `zstd -d {tmp_path / 'data' / 'a.jsonl.zst'}` "
            "(or recompress it with gzip)",
        ),
        (
            4,
            13,
            "'data/*.txt' (its file notes.txt): unsupported file type",
            "use one of .json, .jsonl, .jsonl.gz, .json.gz, .parquet, .arrow, .csv, .tsv, .tsv.gz, .csv.gz",
        ),
    ]
    with pytest.raises(RecipeInvalid):  # the build stops there too, before reading a row
        build(recipe, Options(progress=False), out=tmp_path / "out")
    # and a file met by the reader itself (a data dir's, say) is told the same
    from mixer.io import file_kind

    with pytest.raises(MixerError) as refused:
        file_kind(tmp_path / "data" / "a.jsonl.zst")
    assert refused.value.message == f"{tmp_path / 'data' / 'a.jsonl.zst'}: zst-compressed files are not read"


def test_every_adapter_option_has_a_rule_for_its_values():
    from mixer.adapters.formats import OPTION_VALUES, SPECS

    options = {name: default for spec in SPECS.values() for name, default in spec.options.items()}
    assert set(options) == set(OPTION_VALUES)
    assert all(OPTION_VALUES[name][1](default) for name, default in options.items())  # defaults pass


def test_a_drop_pattern_the_row_filter_cannot_run_is_refused_before_any_row_is_read(tmp_path, monkeypatch):
    """Python's `re` (validation) accepts look-around, back-references and `\\Z`; polars' regex engine, which
    filters the rows, does not: such a pattern passed `mixer validate` and failed the build after the inputs
    were read, with a polars traceback."""
    import mixer.pipeline
    from mixer.build import Options, build
    from mixer.errors import RecipeInvalid

    (tmp_path / "a.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          a: {path: a.jsonl, format: alpaca, take: all, drop_patterns: ["(?<=As an )AI", "ok"]}
        mixture: {drop_patterns: ["(a)\\\\1", "end\\\\Z"]}
        """,
    )
    expected = [
        (3, 65, "drop pattern '(?<=As an )AI': look-around, including look-ahead and look-behind, is not supported"),
        (4, 27, "drop pattern '(a)\\\\1': backreferences are not supported"),
        (4, 37, "drop pattern 'end\\\\Z': unrecognized escape sequence"),
    ]
    assert [(d.line, d.col, d.message) for d in validate_file(recipe)] == expected
    monkeypatch.setattr(mixer.pipeline, "stage_sources", lambda *a, **k: pytest.fail("no row may be read"))
    with pytest.raises(RecipeInvalid) as refused:
        build(recipe, Options(progress=False), out=tmp_path / "out")
    assert [(d.line, d.col, d.message) for d in refused.value.diagnostics] == expected


def test_yaml_syntax_error_is_located(tmp_path):
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a: [1, 2\n  b: 3\n")
    (diag,) = validate_file(recipe)
    assert (diag.line, diag.message.startswith("invalid YAML")) == (4, True)


@pytest.mark.parametrize(
    ("text", "where", "hint"),
    [
        ("name: t\nsources:\n\ta: {source: dolly, take: 1}\n", (3, 1), "YAML indents with spaces, not tabs"),
        ("name: t\ndescription: Tulu: a mix\n", (2, 18), "a value with ': ' in it must be quoted"),
        (
            "name: t\nsources:\n  a: {source: dolly, take: 1\n",
            (4, 1),
            "in the brackets opened at line 3, column 6: a comma or the closing bracket is missing",
        ),
        (
            "name: t\nsources:\n  a: {source: dolly take: 1}\n",
            (3, 25),
            "in the brackets opened at line 3, column 6: a comma or the closing bracket is missing",
        ),
        # an unquoted glob starting with * is an alias to YAML, and was told to check its indentation
        ("name: t\nsources:\n  a:\n    path: *.jsonl\n", (4, 12), "a value starting with * is read as a YAML alias"),
        ("name: t\nsources:\n  a: {path: **/*.jsonl}\n", (3, 14), "a value starting with * is read as a YAML alias"),
        ("name: t\nsources:\n  a: {path: &x.jsonl}\n", (3, 15), "a value starting with & is read as a YAML anchor"),
    ],
)
def test_yaml_mistakes_get_a_hint_naming_the_usual_cause(tmp_path, text, where, hint):
    (diag,) = validate_file(write_recipe(tmp_path, text))
    assert ((diag.line, diag.col), diag.hint.startswith(hint)) == (where, True), diag.hint


def test_text_with_a_colon_read_as_a_mapping_is_told_to_be_quoted(tmp_path):
    recipe = write_recipe(
        tmp_path, "name: t\nsources:\n  a: {source: dolly, take: 1}\nmixture: {drop_patterns: [As an AI: model]}\n"
    )
    (diag,) = validate_file(recipe)
    assert diag.hint == "unquoted text with ': ' in it is read as a mapping: quote it, \"As an AI: model\""


def test_env_interpolation(tmp_path, monkeypatch):
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    monkeypatch.setenv("MIXER_TEST_FILE", "d.jsonl")
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a: {path: '${MIXER_TEST_FILE}', format: alpaca, take: 1}\n")
    assert validate_file(recipe) == []


def test_an_unset_variable_is_one_problem_not_also_the_schemas_of_its_text(tmp_path, monkeypatch):
    """The `${VAR}` text left in place does not look like a URL: the schema said so too, a second error for a
    variable the user has only to export."""
    monkeypatch.delenv("MIXER_TEST_UNSET_URL", raising=False)
    body = (
        "name: t\nsources:\n  a: {source: dolly, take: 1}\n  e: {evolved: b, take: all}\n"
        "evolve:\n  b: {from: a, teacher: {model: m, base_url: '${MIXER_TEST_UNSET_URL}'}}\n"
    )
    recipe = write_recipe(tmp_path, body)
    assert [(d.line, d.col, d.message) for d in validate_file(recipe)] == [
        (6, 46, "environment variable MIXER_TEST_UNSET_URL is not set")
    ]
    monkeypatch.setenv("MIXER_TEST_UNSET_URL", "localhost:8000/v1")  # set, and wrong: the schema's to say
    assert [(d.line, d.col, d.message) for d in validate_file(recipe)] == [
        (6, 46, "evolve.b.teacher.base_url: 'localhost:8000/v1' is not an http:// or https:// URL")
    ]


def test_teacher_settings_of_the_wrong_shape_are_explained_and_a_pasted_key_is_never_echoed(tmp_path):
    body = (
        "name: t\nsources:\n  a: {source: dolly, take: 1}\n  e: {evolved: b, take: all}\n"
        "evolve:\n  b:\n    from: a\n"
        "    teacher: {model: m, base_url: 127.0.0.1:8000/v1, api_key_env: sk-proj-abc123}\n"
        "    operators: [{name: deepening, template: 'Rewrite this harder.'}]\n"
    )
    problems = validate_file(write_recipe(tmp_path, body))
    assert [(d.line, d.col, d.message) for d in problems] == [
        (8, 35, "evolve.b.teacher.base_url: '127.0.0.1:8000/v1' is not an http:// or https:// URL"),
        (
            8,
            67,
            "evolve.b.teacher.api_key_env: the value (not shown: it may be a key) is not an environment variable name",
        ),
        # inside the list, not "is not one of wizardlm, wizardcoder" (the preset names a list cannot be)
        (9, 45, "evolve.b.operators.0.template: 'Rewrite this harder.' has no {instruction}"),
    ]
    assert "sk-proj" not in json.dumps([d.to_json() for d in problems])
    assert problems[1].hint.startswith("name the variable that holds the key (OPENAI_API_KEY)")
    misspelt = body.replace("template: 'Rewrite this harder.'", "wieght: 2")
    (problem,) = [d for d in validate_file(write_recipe(tmp_path, misspelt)) if d.line == 9]
    assert (problem.col, problem.message, problem.hint) == (
        35,
        "unknown key 'wieght' in operators[0]",
        "did you mean 'weight'?",
    )


def test_a_recipe_saved_as_utf16_is_named_as_such(tmp_path):
    """PowerShell 5's `>` writes UTF-16; the error was a codec message about byte 0xff. The hint is the one a
    UTF-16 data file gets: a copy beside the file, named utf8-<name>."""
    text = "name: t\nsources:\n  a: {source: dolly, take: 1}\n"
    (tmp_path / "r.yaml").write_bytes(text.encode("utf-16"))
    [diag] = validate_file_cli(tmp_path / "r.yaml")
    assert diag["message"] == "the recipe is UTF-16LE (it starts with that byte-order mark); mixer reads UTF-8"
    command = f"iconv -f UTF-16 -t UTF-8 {tmp_path / 'r.yaml'} > {tmp_path / 'utf8-r.yaml'}"
    assert diag["hint"] == f"convert it first: {command}"
    if shutil.which("iconv"):  # the hint's command does what it says
        subprocess.run(command, shell=True, check=True)
        assert (tmp_path / "utf8-r.yaml").read_text(encoding="utf-8") == text
        assert validate_file_cli(tmp_path / "utf8-r.yaml") == []


def validate_file_cli(path):
    return json.loads(run_mixer("validate", str(path), "--json").stdout)["diagnostics"]


def test_missing_recipe_is_a_clean_error(tmp_path):
    good = write_recipe(tmp_path, "name: t\nsources:\n  a: {source: dolly, take: 1}\n", name="good.yaml")
    bad = write_recipe(tmp_path, "name: t\nsources:\n  a: {source: dolly, take: 1, fraction: 2}\n", name="bad.yaml")
    result = run_mixer("validate", str(good), str(tmp_path / "nope.yaml"), str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'nope.yaml'}:1:1: error: recipe not found\n" in result.stderr
    assert f"{bad}:3:" in result.stderr  # the files after it are still checked
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "a.yaml").write_text("name: a\n")
    result = run_mixer("build", str(tmp_path / "recipes"))
    assert result.returncode == 1
    assert f"{tmp_path / 'recipes'}: is a folder, not a recipe" in result.stderr
    assert "pass one of its recipe files (a.yaml)" in result.stderr
    for name in ("b.yml", "c.yaml", "d.yaml", "e.yaml", "f.yaml", "notes.txt"):
        (tmp_path / "recipes" / name).write_text("name: x\n")
    result = run_mixer("build", str(tmp_path / "recipes"))  # .yml counts; six are not shown as five
    assert "pass one of its recipe files (a.yaml, b.yml, c.yaml, d.yaml, e.yaml and 1 more)" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run_mixer("validate", str(tmp_path / "recipes"), str(tmp_path / "empty"))  # a folder: its recipes
    assert result.returncode == 2 and result.stderr.count("error:") == 7, result.stderr
    assert f"{tmp_path / 'recipes' / 'f.yaml'}:1:1: error: 'sources' is required" in result.stderr
    assert f"{tmp_path / 'empty'}:1:1: error: is a folder, not a recipe\n  hint: it holds no recipe" in result.stderr


def test_a_file_named_with_glob_characters_is_found_by_its_name(tmp_path):
    """`shard[1].jsonl` as a pattern matches `shard1.jsonl` only: the file itself would be "not found"."""
    from mixer.validate_sources import expand_paths

    (tmp_path / "shard[1].jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    (tmp_path / "shard1.jsonl").write_text('{"instruction": "c", "output": "d"}\n')
    assert expand_paths("shard[1].jsonl", tmp_path) == [tmp_path / "shard[1].jsonl"]
    assert expand_paths("shard[0-9].jsonl", tmp_path) == [tmp_path / "shard1.jsonl"]  # a pattern all the same
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a: {path: 'shard[1].jsonl', format: alpaca, take: 1}\n")
    assert messages(recipe) == []


def test_a_recipe_of_training_stages_alone_needs_no_sources(tmp_path):
    """DPO of a model trained elsewhere has no mixture; `sources:` was required, so such a recipe needed a
    made-up source to pass. Without sources, a stage on the mixture, or no stage at all, is refused."""
    dpo = "  - {name: dpo, kind: dpo, model: m, data: {source: ultrafeedback, take: all}}\n"
    recipe = write_recipe(tmp_path, "name: t\nstages:\n" + dpo)
    assert validate_file(recipe) == []
    recipe.write_text("name: t\nstages:\n" + dpo + "  - {name: sft, kind: sft, model: m, data: mixture}\n")
    (diag,) = validate_file(recipe)
    message = "stage 'sft' trains on the mixture, and the recipe has no `sources:`"
    assert (diag.line, diag.col, diag.message) == (4, 44, message)  # at `mixture`
    assert diag.hint == "add the mixture's `sources:`, or give the stage its own data: data: {source: ..., take: ...}"
    recipe.write_text("name: t\ndescription: nothing in it\n")
    (diag,) = validate_file(recipe)
    assert (diag.line, diag.col, diag.message) == (1, 1, "'sources' is required")
    assert diag.hint == "a recipe is a mixture (`sources:`), training stages on data of their own (`stages:`), or both"
    recipe.write_text("name: t\nstages:\n" + dpo)
    for command in ("plan", "build", "decontam"):  # a command about the mixture says there is none
        result = run_mixer(command, str(recipe))
        assert result.returncode == 1
        assert f"error: {recipe}: no `sources:`, so no mixture to " in result.stderr
        assert f"hint: `mixer train {recipe}` runs its stages" in " ".join(result.stderr.split())


def test_a_base_url_that_ends_with_the_endpoint_path_is_told_its_root(tmp_path):
    """A URL pasted from a server's docs (`.../v1/chat/completions`) had the client ask
    `.../chat/completions/chat/completions`; the 404's hint then said to append /v1 to it."""
    recipe = write_recipe(
        tmp_path,
        """
        name: t
        sources:
          s: {source: dolly, take: 0}
          e: {evolved: b, take: all}
        evolve:
          b:
            from: s
            teacher: {model: m, base_url: "http://127.0.0.1:8000/v1/chat/completions", prices: {}}
            judge: {model: m, base_url: "http://user:secret@gateway/v1/completions/"}
        """,
    )
    found = [(d.line, d.col, d.message, d.hint) for d in validate_file(recipe)]
    assert [f for f in found if "base_url ends" in f[2]] == [
        (
            8,
            35,
            "base_url ends with /chat/completions, which the client adds to it",
            "give the API's root: base_url: http://127.0.0.1:8000/v1",
        ),
        (
            9,
            33,
            "base_url ends with /completions, which the client adds to it",
            "give the API's root: base_url: http://***@gateway/v1",
        ),  # credentials stay out of messages
    ]


def test_a_recipe_that_is_not_utf8_is_told_where(tmp_path):
    """A Latin-1 `é` was "1:1: cannot read recipe: 'utf-8' codec can't decode byte 0xe9 in position 25"."""
    recipe = tmp_path / "latin.yaml"
    recipe.write_bytes("name: l1\ndescription: café\nsources:\n  a: {source: dolly, take: 5}\n".encode("latin-1"))
    result = run_mixer("validate", str(recipe), "--json")
    assert result.returncode == 2
    (diag,) = json.loads(result.stdout)["diagnostics"]
    assert (diag["line"], diag["col"], diag["message"]) == (2, 17, "not UTF-8 (byte 0xe9)")
    assert diag["hint"] == "save the recipe as UTF-8 (your editor's encoding setting, or iconv -t utf-8)"


def test_names_made_for_other_tools_datasets_are_valid_names():
    """The names written for open-instruct's and axolotl's datasets were made by their own rule: `données_fr`
    kept its `é` and `_mine v2.jsonl` its leading `_`, both names the pasted recipe then refused."""
    from mixer.key_hints import dataset_mixer_hint

    hint = dataset_mixer_hint("dataset_mixer", {"org/données_fr": 1.0, "data/_mine v2.jsonl": 2000})
    assert hint == (
        "open-instruct's dataset_mixer is `sources:` here: sources: {donnees_fr: {hub: org/données_fr, format: "
        "messages, take: all}, mine_v2: {path: data/_mine v2.jsonl, format: messages, take: 2000}}"
    )
