"""`extends:`: variants merged over a base recipe, with errors located in the file that holds them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mixer.build import Options, build
from mixer.inherit import read_recipe_document
from mixer.validate import load_recipe, validate_file

from conftest import run_mixer, write_recipe

QUIET = Options(progress=False)


def write_alpaca(path: Path, n: int, prefix: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": f"{prefix} task {i}", "input": "", "output": f"{prefix} answer {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def base_recipe(folder: Path) -> Path:
    for name, n in (("a", 40), ("b", 30), ("c", 20)):
        write_alpaca(folder / "data" / f"{name}.jsonl", n, name)
    return write_recipe(
        folder,
        """
        name: base
        seed: 7
        sources:
          a: {path: data/a.jsonl, format: alpaca, take: 10}
          b: {path: data/b.jsonl, format: alpaca, take: 10}
        mixture: {shuffle: true}
        output: {dir: out/base}
        """,
        name="base.yaml",
    )


def test_a_variant_overrides_removes_and_adds_sources(tmp_path):
    base_recipe(tmp_path)
    variant = write_recipe(
        tmp_path,
        """
        extends: base.yaml
        name: variant
        sources:
          a: {take: 25}
          b: null
          c: {path: data/c.jsonl, format: alpaca, fraction: 2}
        """,
        name="variant.yaml",
    )
    assert validate_file(variant) == []
    recipe = load_recipe(variant)
    assert recipe.name == "variant" and recipe.seed == 7 and recipe.mixture.shuffle
    assert [s.name for s in recipe.sources] == ["a", "c"]
    result = build(variant, QUIET, out=tmp_path / "o")
    counts = {name: s["counts"]["selected"] for name, s in result.manifest["sources"].items()}
    assert counts == {"a": 25, "c": 40}
    assert result.manifest["totals"]["rows"] == 65


def test_errors_are_reported_in_the_file_that_holds_them(tmp_path):
    base = write_recipe(
        tmp_path,
        """
        name: base
        sources:
          dolly:
            source: dolly
            take: -5
        """,
        name="base.yaml",
    )
    variant = write_recipe(
        tmp_path,
        """
        extends: base.yaml
        name: variant
        sources:
          flan: {source: flan_v3, take: 3}
        """,
        name="variant.yaml",
    )
    found = [(Path(d.file).name, d.line, d.col, d.message) for d in validate_file(variant)]
    assert found[0][:3] == ("variant.yaml", 4, 18) and "flan_v3" in found[0][3]
    assert found[1][:3] == ("base.yaml", 5, 11) and "-5" in found[1][3]
    assert len(found) == 2
    result = run_mixer("validate", str(variant))
    assert result.returncode == 2
    assert f"{base}:5:11: error:" in result.stdout + result.stderr


def test_a_source_a_variant_deletes_is_named_where_its_base_still_uses_it(tmp_path):
    """A variant that drops the seed source of its base's evolve block (`alpaca: null`) got an error at the
    base's `from:` line with no hint: the cause is a line of the variant, which the hint now names."""
    write_recipe(
        tmp_path,
        """
        name: base
        sources:
          seeds: {source: alpaca, take: 0}
          evolved: {evolved: block, take: all}
        evolve:
          block: {from: seeds, teacher: {model: gpt-4o-mini}}
        """,
        name="base.yaml",
    )
    variant = write_recipe(
        tmp_path, "extends: base.yaml\nname: variant\nsources:\n  seeds: null\n", name="variant.yaml"
    )
    (problem,) = validate_file(variant)
    assert (Path(problem.file).name, problem.line, problem.message) == (
        "base.yaml",
        6,
        "evolve block 'block' cannot start from 'seeds': no such source",
    )
    assert problem.hint == (f"{variant}:4:3 deletes it (`seeds: null`): keep the source, or start the block elsewhere")


def test_cycles_and_missing_bases_are_errors_at_the_extends_line(tmp_path):
    one = write_recipe(
        tmp_path, "name: one\nextends: two.yaml\nsources: {d: {source: dolly, take: 1}}\n", name="one.yaml"
    )
    two = write_recipe(tmp_path, "extends: one.yaml\n", name="two.yaml")
    [problem] = validate_file(one)  # reported where the cycle closes
    assert (problem.file, problem.line, problem.col) == (str(two), 1, 10)
    assert problem.message == "extends forms a cycle: one.yaml → two.yaml → one.yaml"

    lost = write_recipe(tmp_path, "name: lost\nextends: nowhere.yaml\n", name="lost.yaml")
    [problem] = validate_file(lost)
    assert (problem.line, problem.col) == (2, 10) and "nowhere.yaml does not exist" in problem.message

    empty = write_recipe(tmp_path, 'name: empty\nextends: ""\nsources: {d: {source: dolly, take: 1}}\n', name="e.yaml")
    [problem] = validate_file(empty)  # once: not again as the schema's "should be non-empty"
    assert (problem.line, problem.col, problem.message) == (2, 10, "extends must name another recipe file (a path)")


def test_relative_paths_of_a_base_elsewhere_still_name_its_files(tmp_path):
    base_recipe(tmp_path / "shared")
    (tmp_path / "experiments" / "x").mkdir(parents=True)
    variant = write_recipe(
        tmp_path / "experiments" / "x",
        "extends: ../../shared/base.yaml\nname: x\nsources:\n  b: {take: 5}\n",
        name="x.yaml",
    )
    recipe = load_recipe(variant)
    assert [s.paths for s in recipe.sources] == [("../../shared/data/a.jsonl",), ("../../shared/data/b.jsonl",)]
    result = build(variant, QUIET, out=tmp_path / "o")
    assert {n: s["counts"]["selected"] for n, s in result.manifest["sources"].items()} == {"a": 10, "b": 5}


def test_every_kind_of_path_in_a_base_is_rebased_and_other_strings_are_not(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "exp").mkdir()
    write_recipe(
        tmp_path / "shared",
        """
        name: base
        sources:
          a: {path: [data/a.jsonl, /abs/b.jsonl, "data/*.jsonl"], format: alpaca, take: 10}
        mixture:
          decontaminate: {benchmarks: [{name: gsm8k, path: bench/gsm8k.jsonl}], mode: report}
        output: {dir: out/base, tokenizer: tok/tokenizer.json}
        stages:
          - {name: sft, kind: sft, model: some/model, data: {path: sft/train.jsonl, format: alpaca, take: all}}
        """,
        name="base.yaml",
    )
    variant = write_recipe(tmp_path / "exp", "extends: ../shared/base.yaml\nname: v\n", name="v.yaml")
    data = read_recipe_document(variant).data
    assert data["sources"]["a"]["path"] == ["../shared/data/a.jsonl", "/abs/b.jsonl", "../shared/data/*.jsonl"]
    assert data["mixture"]["decontaminate"]["benchmarks"][0]["path"] == "../shared/bench/gsm8k.jsonl"
    assert data["output"] == {"dir": "out/base", "tokenizer": "../shared/tok/tokenizer.json"}
    assert data["stages"][0]["data"]["path"] == "../shared/sft/train.jsonl"
    assert data["stages"][0]["model"] == "some/model"  # a hub id or a path: left as written


def test_a_change_to_the_base_rebuilds_the_variant(tmp_path):
    base = base_recipe(tmp_path)
    variant = write_recipe(tmp_path, "extends: base.yaml\nname: v\n", name="v.yaml")
    assert build(variant, QUIET, out=tmp_path / "o").status == "built"
    assert build(variant, QUIET, out=tmp_path / "o").status == "up-to-date"
    base.write_text(base.read_text().replace("seed: 7", "seed: 8"), encoding="utf-8")
    assert build(variant, QUIET, out=tmp_path / "o").status == "built"


def test_diff_reads_a_variant_and_its_base_at_the_same_revision(tmp_path):
    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    base = base_recipe(tmp_path)
    variant = write_recipe(tmp_path, "extends: base.yaml\nname: v\nsources:\n  b: null\n", name="v.yaml")
    git("add", ".")
    git("commit", "-qm", "one")
    base.write_text(base.read_text().replace("take: 10}", "take: 12}"), encoding="utf-8")  # only the base changes

    result = run_mixer("diff", f"{variant}@HEAD", str(variant), "--format", "json")
    assert result.returncode == 0, result.stderr
    composition = json.loads(result.stdout)[0]["composition"]
    assert {s["name"]: (s["status"], s["changes"]) for s in composition["sources"]} == {
        "a": ("changed", ["take: 10 → 12"])
    }


def test_a_selector_conflict_with_the_base_says_how_to_replace_it(tmp_path):
    base = base_recipe(tmp_path)
    variant = write_recipe(tmp_path, "extends: base.yaml\nname: v\nsources:\n  a: {fraction: 2}\n", name="v.yaml")
    [problem] = validate_file(variant)
    assert (Path(problem.file).name, problem.line, problem.col) == ("v.yaml", 4, 7)
    assert problem.hint == f"'take' comes from {base}:4; write `take: null` beside 'fraction' to replace it"
    variant.write_text("extends: base.yaml\nname: v\nsources:\n  a: {fraction: 2, take: null}\n", encoding="utf-8")
    assert validate_file(variant) == []


def test_extends_may_name_its_base_through_an_environment_variable(tmp_path, monkeypatch):
    base_recipe(tmp_path / "bases")
    variant = write_recipe(tmp_path, "extends: ${RECIPES}/base.yaml\nname: v\n", name="v.yaml")
    [problem] = validate_file(variant)
    assert (problem.line, problem.col, problem.message) == (1, 10, "environment variable RECIPES is not set")
    monkeypatch.setenv("RECIPES", str(tmp_path / "bases"))
    assert validate_file(variant) == []
    assert [s.name for s in load_recipe(variant).sources] == ["a", "b"]
