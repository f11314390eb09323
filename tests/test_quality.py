"""Decontamination, cross-source overlap and the statistics report of every build."""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from mixer.build import Options, build
from mixer.decontam import Index, benchmark_items
from mixer.errors import MixerError
from mixer.recipe import BenchmarkSpec

from conftest import run_mixer, write_recipe

ITEM = "A farmer has 17 sheep and all but 9 run away; how many sheep does the farmer have left at the end of the day?"
SHORT = "What is two plus two?"


def rows(*texts: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [f"t/{i}" for i in range(len(texts))],
            "messages": [[{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}] for t in texts],
        }
    )


@pytest.fixture
def index(tmp_path) -> Index:
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps({"question": q}) + "\n" for q in (ITEM, SHORT)))
    return Index({"toy": benchmark_items(BenchmarkSpec("toy", str(path), ("question",)), path)}, 13)


def test_planted_item_is_found_with_its_span_despite_case_and_punctuation(index):
    planted = "Homework help!!! " + ITEM.upper().replace(";", " --").replace("?", "...") + " Thanks a lot."
    twelve_words = " ".join(ITEM.split()[:12]) + " and then something else entirely different happens"
    hits = index.hits(rows(planted, "Write a poem about sheep.", twelve_words))
    assert hits.to_dicts() == [
        {
            "id": "t/0",
            "benchmark": "toy",
            "item": "toy/0",
            "span": "a farmer has 17 sheep and all but 9 run away how many sheep does the farmer have left at the end of "
            "the day",
        }
    ]


def test_items_shorter_than_n_match_whole_prompts_only(index):
    assert index.short_items == 1
    hits = index.hits(rows("what is TWO plus two", "Tell me: what is two plus two? And why?"))
    assert hits["id"].to_list() == ["t/0"] and hits["span"].to_list() == ["what is two plus two"]


def test_hits_keep_their_rows_across_batches_and_long_rows(index):
    """Rows are hashed in ~1 MB batches (ngrams.BATCH_BYTES): hits on either side of a batch boundary, in the
    last row, and at the end of one row longer than a batch all name the right row and span."""
    from mixer.ngrams import BATCH_BYTES

    filler = [f"row {i} talks about item {i} and nothing else " * 10 for i in range(4_000)]  # ~2 batches
    long_row = "word " * (BATCH_BYTES // 4) + ITEM
    planted = {5: "Q: " + ITEM, 2_700: ITEM.lower(), 3_999: ITEM + " A: 8"}
    texts = [planted.get(i, text) for i, text in enumerate(filler)] + [long_row, "clean after the long row"]
    hits = index.hits(rows(*texts))
    span = "a farmer has 17 sheep and all but 9 run away how many sheep does the farmer have left at the end of the day"
    assert hits["id"].to_list() == sorted(["t/5", "t/2700", "t/3999", "t/4000"])
    assert set(hits["span"]) == {span}


def _recipe(tmp_path: Path, mode: str) -> Path:
    (tmp_path / "bench.jsonl").write_text(json.dumps({"question": ITEM}) + "\n")
    with (tmp_path / "a.jsonl").open("w") as f:
        for i in range(20):
            f.write(
                json.dumps({"instruction": f"Task number {i}: describe item {i}.", "input": "", "output": "done"})
                + "\n"
            )
        f.write(json.dumps({"instruction": "Solve: " + ITEM.lower(), "input": "", "output": "9"}) + "\n")
    with (tmp_path / "b.jsonl").open("w") as f:
        for i in range(5):  # b shares prompts 0..2 with a (different answers, so exact dedup keeps both)
            f.write(
                json.dumps({"instruction": f"Task number {i}: describe item {i}.", "input": "", "output": f"b{i}"})
                + "\n"
            )
        f.write(json.dumps({"instruction": "Only in b.", "input": "", "output": "x"}) + "\n")
    with (tmp_path / "c.jsonl").open("w") as f:
        f.write(json.dumps({"instruction": "Only in c.", "input": "", "output": "y"}) + "\n")
    return write_recipe(
        tmp_path,
        f"""
        name: quality
        sources:
          a: {{path: a.jsonl, format: alpaca, take: all}}
          b: {{path: b.jsonl, format: alpaca, take: all}}
          c: {{path: c.jsonl, format: alpaca, take: all}}
        mixture:
          dedup: exact
          decontaminate: {{benchmarks: [{{name: toy, path: bench.jsonl, fields: [question]}}], mode: {mode}}}
        output: {{dir: out}}
        """,
    )


def test_remove_mode_drops_hits_and_counts_them(tmp_path):
    build(_recipe(tmp_path, "remove"), Options(progress=False), out=tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["sources"]["a"]["counts"]["decontaminate"] == 1
    assert manifest["decontamination"]["removed"] == 1
    assert [(h["source"], h["rows"]) for h in manifest["decontamination"]["hits"]] == [("a", 1), ("b", 0), ("c", 0)]
    built = pl.read_parquet(tmp_path / "out" / "data")
    assert built.height == 20 + 6 + 1
    assert not built["messages"].list.first().struct.field("content").str.contains("17 sheep").any()


def test_report_mode_keeps_rows_and_overlap_matrix_counts_shared_prompts(tmp_path):
    build(_recipe(tmp_path, "report"), Options(progress=False), out=tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["decontamination"]["removed"] == 0 and manifest["totals"]["rows"] == 28
    overlap = manifest["overlap"]
    assert overlap["sources"] == ["a", "b", "c"]
    assert overlap["matrix"] == [[None, 5, 0], [5, None, 0], [0, 0, None]]
    assert (
        overlap["examples"][0]["a"] == "a" and overlap["examples"][0]["prompts"][0] == "task number 0 describe item 0"
    )


def test_the_builds_overlap_compares_normalised_prompts_of_the_selected_rows_once_each(tmp_path):
    """A build's overlap compares the first prompts of the rows it selected (not every available row): prompts
    equal once lower-cased, with punctuation and runs of spaces made one space, are shared; an upsampled row
    counts once, and is quoted once among the examples; a row the mixture did not take shares nothing."""

    def alpaca(name: str, prompts: list[str]) -> None:
        lines = [json.dumps({"instruction": p, "input": "", "output": f"{name}{i}"}) for i, p in enumerate(prompts)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")

    alpaca("a", [f"Describe item {i}." for i in range(5)] + ["Only in a."])
    alpaca("b", ["DESCRIBE item 0!!", "  describe\titem   1 ", "Describe item 9."])
    alpaca("c", ["describe item 2", "describe item 3", "describe item 4"])
    recipe = write_recipe(
        tmp_path,
        """
        name: overlap
        sources:
          a: {path: a.jsonl, format: alpaca, fraction: 2.0}
          b: {path: b.jsonl, format: alpaca, fraction: 2.0}
          c: {path: c.jsonl, format: alpaca, take: 1}
        output: {dir: out}
        """,
    )
    build(recipe, Options(progress=False), out=tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["totals"]["rows"] == 12 + 6 + 1
    assert manifest["overlap"]["matrix"] == [[None, 2, 1], [2, None, 0], [1, 0, None]]
    assert manifest["overlap"]["rows_in_several_sources"] == {"a": 3, "b": 2, "c": 1}
    first = manifest["overlap"]["examples"][0]
    assert (first["a"], first["b"], first["prompts"]) == ("a", "b", ["describe item 0", "describe item 1"])


def test_build_output_names_hits_removed_rows_overlap_and_the_report(tmp_path):
    result = run_mixer("build", str(_recipe(tmp_path, "remove")), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    title = lines.index("decontamination against toy: 1 row(s) removed before selection")
    table = [line.split("│")[1:4] for line in lines[title + 1 : title + 6] if line.startswith("│")]
    assert [[cell.strip() for cell in row] for row in table] == [["a", "toy", "1"]]  # sources without hits left out
    assert (
        "overlap: 10 selected row(s) have a prompt that another source also has; most between a and b (5 rows each)"
        in lines
    )
    assert f"report: {tmp_path / 'out' / 'report.html'}" in lines

    result = run_mixer("build", str(_recipe(tmp_path, "report")), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["decontamination"] == {
        "mode": "report",
        "n": 13,
        "removed": 0,
        "hits": [
            {"source": "a", "benchmark": "toy", "rows": 1},
            {"source": "b", "benchmark": "toy", "rows": 0},
            {"source": "c", "benchmark": "toy", "rows": 0},
        ],
    }
    assert summary["rows_in_several_sources"] == {"a": 5, "b": 5, "c": 0}
    assert summary["report"] == str(tmp_path / "out" / "report.html")


def test_diff_marks_a_source_changed_when_decontamination_changed_what_it_was_drawn_from(tmp_path):
    """Same recipe entry, same 10 rows written, but in remove mode they were drawn from 20 rows instead of 21:
    the rows can differ, so the source is not 'same'."""
    from mixer.diff import compare, load_side

    outs = {}
    for mode in ("remove", "report"):
        recipe = _recipe(tmp_path, mode)
        recipe.write_text(
            recipe.read_text().replace(
                "a: {path: a.jsonl, format: alpaca, take: all}", "a: {path: a.jsonl, format: alpaca, take: 10}"
            )
        )
        outs[mode] = build(recipe, Options(progress=False), out=tmp_path / mode).out_dir
    sides = load_side(str(outs["remove"])), load_side(str(outs["report"]))
    for _ in range(2):  # a side compared again (--baseline) gives the same answer
        rows = {r.name: r for r in compare(*sides).composition.sources}
        assert (rows["a"].status, rows["a"].a_rows, rows["a"].b_rows) == ("changed", 10, 10)
        assert rows["a"].changes == ["built.available: 20 → 21", "built.removed.decontaminate: 1 → 0"]
        assert (rows["b"].status, rows["b"].changes) == ("same", [])


def test_largest_overlap_pairs_count_both_directions_and_keep_the_top_ones():
    from mixer.overlap import largest_pairs

    overlap = {
        "sources": ["a", "b", "c", "d"],
        "matrix": [[None, 2, 0, 1], [3, None, 0, 0], [0, 0, None, 4], [1, 0, 4, None]],
    }
    assert largest_pairs(overlap) == [("c", "d", 4, 4), ("a", "b", 2, 3), ("a", "d", 1, 1)]
    assert largest_pairs(overlap, count=1) == [("c", "d", 4, 4)]
    assert largest_pairs({"sources": ["a"], "matrix": [[None]]}) == []


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append(dict(attrs)["id"])
        self.svgs += tag == "svg"


def test_every_build_writes_stats_and_a_report_that_regenerates(tmp_path):
    build(_recipe(tmp_path, "report"), Options(progress=False), out=tmp_path / "out")
    out = tmp_path / "out"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows"] == 28 and {n: s["rows"] for n, s in stats["sources"].items()} == {"a": 21, "b": 6, "c": 1}
    assert sum(h["rows"] for h in stats["sources"]["a"]["length_histogram"]) == 21
    assert stats["top_first_words"][0] == {"word": "task", "rows": 25}
    page = _Collect()
    page.feed((out / "report.html").read_text())
    assert page.tables == ["sources", "first_words", "decontamination", "overlap"] and page.svgs == 2
    before = (out / "stats.json").read_bytes()
    (out / "stats.json").unlink()
    result = run_mixer("stats", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "stats.json").read_bytes() == before


def test_the_first_word_is_taken_after_leading_whitespace():
    from mixer.load import META
    from mixer.stats import row_features

    prompts = ["Write a poem", " \n\tsummarise this", "\u00a0Translate: hi", "  ", "42 apples", "Écris"]
    rows = pl.DataFrame(
        {
            "dataset": ["a"] * len(prompts),
            "messages": [[{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}] for p in prompts],
            "meta": [None] * len(prompts),
        },
        schema_overrides={"meta": META},
    )
    assert row_features(rows)["first_word"].cast(pl.String).to_list() == [
        "write",
        "summarise",
        "translate",
        None,
        None,
        None,
    ]


def test_decontam_command_reports_without_writing(tmp_path):
    recipe = _recipe(tmp_path, "remove")
    result = run_mixer("decontam", str(recipe), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["decontamination"]
    assert report["mode"] == "report" and report["hits"][0]["rows"] == 1 and report["removed"] == 0
    assert not (tmp_path / "out").exists()


def test_real_benchmarks_against_real_training_files(tmp_path, shared_data):
    """Found on the real files: Code-Alpaca 2K has one HumanEval 13-gram (the hex digit list of HumanEval/78),
    and 4 GSM8K train questions share a 13-gram with GSM8K test questions."""
    recipe = write_recipe(
        tmp_path,
        f"""
        name: real-decontam
        sources:
          code: {{path: {shared_data}/code_alpaca/code_alpaca_2k.json, format: alpaca, take: all, on_error: skip}}
          gsm: {{path: {shared_data}/gsm8k/train.jsonl, format: alpaca, fields: {{instruction: question, output: answer}}, take: all}}
        mixture:
          decontaminate:
            benchmarks:
              - {{name: humaneval, path: {shared_data}/humaneval/HumanEval.jsonl.gz}}
              - {{name: gsm8k, path: {shared_data}/gsm8k/test.jsonl}}
            mode: remove
        output: {{dir: out}}
        """,
    )
    build(recipe, Options(progress=False), out=tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    hits = {(h["source"], h["benchmark"]): h for h in manifest["decontamination"]["hits"]}
    assert {k: h["rows"] for k, h in hits.items()} == {
        ("code", "humaneval"): 1,
        ("code", "gsm8k"): 0,
        ("gsm", "humaneval"): 0,
        ("gsm", "gsm8k"): 4,
    }
    assert hits[("code", "humaneval")]["examples"][0]["item"] == "humaneval/78"
    assert manifest["totals"]["rows"] == 2015 - 1 + 7473 - 4


def test_unknown_decontam_mode_is_a_located_error(tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        name: bad
        sources:
          a: {path: a.jsonl, format: alpaca, take: all}
        mixture:
          decontaminate: {benchmarks: [gsm8k], mode: delete}
        """,
    )
    (tmp_path / "a.jsonl").write_text('{"instruction": "x", "input": "", "output": "y"}\n')
    result = run_mixer("validate", str(recipe))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"{recipe}:5:46: error: mixture.decontaminate.mode: 'delete' is not one of report, remove"
    )


def test_diff_shows_what_the_builds_measured(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    build(_recipe(tmp_path / "a", "report"), Options(progress=False), out=tmp_path / "a" / "out")
    build(_recipe(tmp_path / "b", "remove"), Options(progress=False), out=tmp_path / "b" / "out")
    result = run_mixer("diff", str(tmp_path / "a" / "out"), str(tmp_path / "b" / "out"), "--format", "markdown")
    assert result.returncode == 0, result.stderr
    assert "built.decontaminated_rows_removed: 0 → 1" in result.stdout
    assert "built.contaminated_rows_found" not in result.stdout  # found 1 in both: unchanged, not listed


def test_stats_count_tokens_with_a_given_tokenizer(tmp_path):
    pytest.importorskip(
        "tokenizers", reason="counting with a tokenizer needs the training extras (pip install -e '.[train]')"
    )
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    recipe = _recipe(tmp_path, "report")
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        ["Task number describe item done", ITEM], trainers.BpeTrainer(vocab_size=120, special_tokens=["[UNK]"])
    )
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    recipe.write_text(recipe.read_text().replace("output: {dir: out}", "output: {dir: out, tokenizer: tokenizer.json}"))
    build(recipe, Options(progress=False), out=tmp_path / "out")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    built = pl.read_parquet(tmp_path / "out" / "data")
    texts = built["messages"].list.eval(pl.element().struct.field("content")).list.join("\n").to_list()
    expected = sum(len(tokenizer.encode(t, add_special_tokens=False).ids) for t in texts)
    sha = hashlib.sha256((tmp_path / "tokenizer.json").read_bytes()).hexdigest()
    # which tokenizer: "tokenizer tokenizer.json" named none (its folder names the model), the sha256 the file
    assert stats["tokens_method"] == f"tokenizer {tmp_path.name}/tokenizer.json (sha256 {sha[:12]})"
    assert stats["est_tokens"] == expected == sum(s["est_tokens"] for s in stats["sources"].values())
    assert expected != sum(len(t) for t in texts) // 4  # really counted, not the chars/4 estimate

    result = run_mixer("stats", str(tmp_path / "out"), "--json")  # without --tokenizer: back to chars / 4
    assert json.loads(result.stdout)["tokens_method"] == "characters / 4"

    recipe.write_text(recipe.read_text().replace("tokenizer.json}", "missing.json}"))
    bad = run_mixer("validate", str(recipe))
    assert bad.returncode == 2 and "error: no tokenizer at 'missing.json'" in bad.stderr

    (tmp_path / "broken.json").write_text("{}")  # a file, but not one tokenizers can read: said before any work
    recipe.write_text(recipe.read_text().replace("missing.json}", "broken.json}"))
    with pytest.raises(MixerError, match=r"tokenizers cannot read it \(Model missing"):
        build(recipe, Options(progress=False), out=tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


NEAR = "Write a short story about a brave little robot who learns to paint the sunset over the sea"


def _near_recipe(tmp_path: Path, dedup: str) -> Path:
    def dump(name: str, prompts: list[str]) -> None:
        with (tmp_path / f"{name}.jsonl").open("w") as f:
            for i, p in enumerate(prompts):
                f.write(json.dumps({"instruction": p, "input": "", "output": f"{name} answer {i}"}) + "\n")

    dump("a", [NEAR, "Explain photosynthesis to a ten year old child in three short paragraphs please"])
    # one word changed: 9 of 19 distinct 5-grams shared (0.47, not near); one word appended: 14/15 = 0.93 (near)
    dump("b", [NEAR.replace("brave", "shy"), NEAR + " tonight", "Completely unrelated question about the tax code"])
    return write_recipe(
        tmp_path,
        f"""
        name: near
        sources:
          a: {{path: a.jsonl, format: alpaca, take: all}}
          b: {{path: b.jsonl, format: alpaca, take: all}}
        mixture: {{dedup: {dedup}}}
        output: {{dir: out}}
        """,
    )


def test_near_duplicates_are_counted_across_sources_and_dropped_with_dedup_near(tmp_path):
    recipe = _near_recipe(tmp_path, "exact")
    audit = run_mixer("decontam", str(recipe), "--json")
    assert audit.returncode == 0, audit.stderr
    report = json.loads(audit.stdout)
    assert report["decontamination"] is None  # the recipe names no benchmarks: overlap only
    assert report["overlap"]["matrix"] == [[None, 0], [0, None]]  # no exact repeats
    assert report["overlap"]["near"]["matrix"] == [[None, 1], [1, None]]
    assert "near duplicate" in run_mixer("decontam", str(recipe)).stdout
    build(recipe, Options(progress=False), out=tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["totals"]["rows"] == 5 and "near" not in manifest["overlap"]  # builds skip the costly part

    near = _near_recipe(tmp_path, "near")
    plan = json.loads(run_mixer("plan", str(near), "--json", cwd=tmp_path).stdout)  # counts only, n-grams on disk
    assert [s["counts"]["dedup_near"] for s in plan["sources"]] == [0, 1] and plan["total_rows"] == 4
    build(near, Options(progress=False), out=tmp_path / "out", force=True)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (
        manifest["sources"]["b"]["counts"]["dedup_near"] == 1 and manifest["sources"]["a"]["counts"]["dedup_near"] == 0
    )
    prompts = pl.read_parquet(tmp_path / "out" / "data")["messages"].list.first().struct.field("content").to_list()
    assert NEAR + " tonight" not in prompts and NEAR.replace("brave", "shy") in prompts and NEAR in prompts


def test_the_audit_counts_the_copies_the_recipes_dedup_would_remove(tmp_path):
    """With `dedup: near` (or `exact`) in the recipe, the audit deduplicated first and then looked for copies:
    its near matrix was all zeros on the real FLAN CoT and GSM8K files, while a build dropped 7,469 GSM8K rows as
    near copies of CoT's."""
    recipe = _near_recipe(tmp_path, "near")
    with (tmp_path / "b.jsonl").open("a") as f:  # a's first row, word for word: exact dedup drops it
        f.write(json.dumps({"instruction": NEAR, "input": "", "output": "a answer 0"}) + "\n")
    audit = run_mixer("decontam", str(recipe), "--json")
    assert audit.returncode == 0, audit.stderr
    overlap = json.loads(audit.stdout)["overlap"]
    assert overlap["matrix"] == [[None, 1], [1, None]]
    assert overlap["near"]["matrix"] == [[None, 1], [2, None]]  # b's copy and its "... tonight"
    counts = build(recipe, Options(progress=False), out=tmp_path / "out").manifest["sources"]["b"]["counts"]
    assert counts == {
        "read": 4,
        "malformed": 0,
        "dedup": 1,
        "dedup_near": 1,
        "available": 2,
        "selected": 2,
        "written": 2,
    }


def test_a_source_that_adds_no_rows_takes_none_from_the_sources_after_it(tmp_path):
    """`take: 0` keeps a source out of the mixture (an evolve block's seed pool, or one switched off), but its
    rows still took rows from every later source by dedup: an evolved rewrite is a near duplicate of the seed it
    came from, and dropped for a seed the mixture does not hold. They take none now, exact or near; the plan's
    remembered counts follow the change of `take`."""
    for dedup, step in (("exact", "dedup"), ("near", "dedup_near")):
        recipe = _near_recipe(tmp_path, dedup)
        if dedup == "exact":  # b repeats a's second row word for word
            with (tmp_path / "b.jsonl").open("a") as f:
                f.write(
                    json.dumps(
                        {
                            "instruction": "Explain photosynthesis to a ten year old child in three short "
                            "paragraphs please",
                            "input": "",
                            "output": "a answer 1",
                        }
                    )
                    + "\n"
                )
        removed = 1  # what a takes from b when a is in the mixture
        env = {"MIXER_CACHE_DIR": str(tmp_path / "cache")}
        planned = json.loads(run_mixer("plan", str(recipe), "--json", cwd=tmp_path, env=env).stdout)
        assert [s["counts"].get(step, 0) for s in planned["sources"]] == [0, removed]
        recipe.write_text(
            recipe.read_text().replace(
                "a: {path: a.jsonl, format: alpaca, take: all}", "a: {path: a.jsonl, format: alpaca, take: 0}"
            )
        )
        planned = json.loads(run_mixer("plan", str(recipe), "--json", cwd=tmp_path, env=env).stdout)
        assert [s["counts"].get(step, 0) for s in planned["sources"]] == [0, 0], dedup
        built = build(recipe, Options(progress=False, cache_dir=tmp_path / "cache"), out=tmp_path / f"out-{dedup}")
        assert built.manifest["sources"]["b"]["counts"][step] == 0
        assert (
            built.manifest["totals"]["rows"]
            == planned["total_rows"]
            == len((tmp_path / "b.jsonl").read_text().splitlines())
        )


def test_a_changed_benchmark_file_makes_the_next_build_rebuild(tmp_path):
    recipe = _recipe(tmp_path, "remove")
    assert build(recipe, Options(progress=False), out=tmp_path / "out").status == "built"
    assert build(recipe, Options(progress=False), out=tmp_path / "out").status == "up-to-date"
    (tmp_path / "bench.jsonl").write_text(json.dumps({"question": "Task number 3: describe item 3."}) + "\n")
    rebuilt = build(recipe, Options(progress=False), out=tmp_path / "out")
    assert rebuilt.status == "built" and rebuilt.manifest["sources"]["a"]["counts"]["decontaminate"] == 1
    assert rebuilt.manifest["sources"]["b"]["counts"]["decontaminate"] == 1


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 16])
def test_window_hashes_equal_the_direct_polynomial_and_never_cross_rows(n):
    import random

    import numpy as np

    from mixer.ngrams import GRAM_BASE, Words

    rng = random.Random(n)
    hashes = [rng.getrandbits(64) for _ in range(120)]
    rows = [i // 37 for i in range(120)]  # rows of 37 words: windows must not span two rows
    unused = np.zeros(120, dtype=np.int64)
    words = Words(np.zeros(0, np.uint8), np.array(rows), unused, unused, np.array(hashes, dtype=np.uint64))
    expected = []
    for start in range(len(hashes) - n + 1):
        if rows[start + n - 1] == rows[start]:
            value = 0
            for k in range(n):
                value = (value * GRAM_BASE + hashes[start + k]) % 2**64
            expected.append((start, value))
    first, grams = words.windows(n)
    assert list(zip(first.tolist(), grams.tolist(), strict=True)) == expected


def test_words_are_split_as_normalised_text_is_whatever_the_bytes():
    """The byte-level splitter gives the words of `normalise` (polars' Unicode lowercasing, punctuation as
    spaces), row by row, and no word runs from one row into the next."""
    from mixer.decontam import normalise
    from mixer.ngrams import words

    texts = pl.Series(
        ["Hello,  WORLD!", None, "", "  ", "don't\tstop\n\nnow", "Ünïcode ÉCOLE \u2014 café’s", "end", "start"]
    )
    split = words(texts)
    got = [[] for _ in range(len(texts))]
    for first, row in enumerate(split.row.tolist()):
        got[row].append(split.phrase(first, 1))
    expected = [(t.split(" ") if t else []) for t in pl.select(normalise(pl.lit(texts))).to_series().fill_null("")]
    assert got == expected
    assert got[5] == ["ünïcode", "école", "café", "s"]
    assert got[6:] == [["end"], ["start"]]


def test_word_hashes_depend_on_the_word_alone():
    """Equal words hash equal wherever they sit (any byte alignment, any row, any case), different words
    differ: around the 8-byte steps of the hash (7, 8, 9, 16, 17 bytes), past LONG_WORD, and with NUL bytes."""
    from mixer.ngrams import LONG_WORD, words

    vocabulary = ["a", "a\0", "ab", "abcdefg", "abcdefgh", "abcdefgi", "abcdefghi", "abcdefghj", "x" * 16]
    vocabulary += ["x" * 17, "x" * 16 + "y", "y" * LONG_WORD, "y" * (LONG_WORD + 1), "y" * LONG_WORD + "z", "é" * 40]
    texts = [" ".join(vocabulary), "pad " + " ".join(reversed(vocabulary)), "!" * 3 + " ".join(vocabulary).upper()]
    split = words(pl.Series(texts))
    by_word = {}
    for first, value in enumerate(split.hash.tolist()):
        assert by_word.setdefault(split.phrase(first, 1), value) == value
    assert set(by_word) == {*vocabulary, "pad"}
    assert len(set(by_word.values())) == len(by_word)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 13])
def test_the_screen_lets_through_every_text_that_shares_an_n_gram_and_no_clean_one(n):
    """The screen looks only at windows starting at every s-th word: an n-gram planted at every word offset
    (every remainder mod s, after rows of other lengths, so the batch's word count shifts too) must still let
    its text through, clean texts must not pass, and the exact pass reports exactly the planted rows (not those
    holding only n - 1 of the words)."""
    import random

    from mixer.decontam import Index
    from mixer.ngrams import Screen

    rng = random.Random(n)
    vocabulary = [f"word{i}" for i in range(5_000)]
    item = " ".join(rng.choice(vocabulary[:50]) for _ in range(n + 6))
    items = pl.DataFrame({"item": ["b/0"], "text": [item]})
    shared = item.split(" ")[3 : 3 + n]
    texts, planted, partial = [], set(), set()
    for offset in range(2 * n + 3):
        texts.append(" ".join(rng.choice(vocabulary[50:]) for _ in range(rng.randint(0, 9))))  # shifts the batch
        before = [rng.choice(vocabulary[50:]) for _ in range(offset)]
        planted.add(len(texts))
        texts.append(" ".join([*before, *[w.upper() + "," for w in shared], "tail"]))
        partial.add(len(texts))  # n - 1 words of the item: may pass the screen, must not be a hit
        texts.append(" ".join([*before, *shared[1:], "tail"]))
    passed = set(Screen(items["text"], n).candidates(pl.Series(texts)).tolist())
    assert planted <= passed <= planted | partial

    index = Index({"b": items.drop("item").with_columns(pl.lit("b/0").alias("item"))}, n)
    rows = pl.DataFrame(
        {"id": [f"r{i:03d}" for i in range(len(texts))], "messages": [[{"role": "user", "content": t}] for t in texts]}
    )
    found = index.hits(rows)
    assert sorted(found["id"].to_list()) == [f"r{i:03d}" for i in sorted(planted)]
    assert set(found["span"].to_list()) == {" ".join(shared)}


def test_hash_set_answers_membership_exactly():
    import numpy as np

    from mixer.ngrams import HashSet

    rng = np.random.default_rng(7)
    members = rng.integers(0, 2**63, 5_000, dtype=np.uint64)
    others = rng.integers(0, 2**63, 200_000, dtype=np.uint64)
    twins = (members[:100] & ~np.uint64(0xFFFFFF)) | (members[100:200] & np.uint64(0xFFFFFF))  # same low bits
    # the same bits as a member in both flag tables (low bits, and bits from 32 up), another bit between them
    flag_twins = members[200:300] ^ np.uint64(1 << 28)
    values = np.concatenate([members, others, twins, flag_twins])
    expected = np.isin(values, members)
    assert (HashSet(members).contains(values) == expected).all()
    assert expected[:5_000].all() and not expected[-100:].any()
    assert not HashSet(np.zeros(0, dtype=np.uint64)).contains(values).any()


def _template_prompts(seed: int) -> list[str]:
    """Variants of a few templates at every similarity to each other (near and just under the near-duplicate
    threshold), n-grams repeated inside a prompt, boilerplate n-grams (8 copies: more than 6 prompts), short and
    empty prompts."""
    import random

    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(40)]
    templates = [[rng.choice(vocabulary) for _ in range(rng.randint(10, 40))] for _ in range(70)]
    for _ in range(20):  # periodic: the same n-grams several times in one prompt (counted once)
        unit = [rng.choice(vocabulary) for _ in range(rng.randint(5, 7))]
        templates.append(unit * rng.randint(2, 5) + [rng.choice(vocabulary) for _ in range(rng.randint(0, 12))])
    prompts = []
    for _ in range(300):
        words = list(rng.choice(templates))
        for _ in range(rng.choice([0, 1, 1, 2])):  # edits near an end cost few n-grams, in the middle up to 5
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        prompts.append(" ".join(words[: rng.choice([len(words), len(words), 3])]))
    return prompts + ["", "one two"] * 4 + ["boiler plate words here " * 3] * 8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_near_pairs_equal_a_brute_force_count_of_every_pair(seed, monkeypatch):
    """The prefix-filtered near-duplicate search finds exactly the pairs that comparing every pair of prompts
    finds: variants of a few templates at every similarity (near and just under the threshold), n-grams
    repeated inside a prompt, boilerplate n-grams (held by more prompts than the limit), short and empty
    prompts."""
    from mixer import overlap

    monkeypatch.setattr(overlap, "BOILERPLATE_ROWS", 6)
    prompts = _template_prompts(seed)

    def grams(text):
        words = text.split()
        return {tuple(words[i : i + 5]) for i in range(len(words) - 4)}

    sets = [grams(p) for p in prompts]
    held = {}
    for g in (g for s in sets for g in s):
        held[g] = held.get(g, 0) + 1
    expected, narrow_misses = [], 0
    for a in range(len(prompts)):
        for b in range(a + 1, len(prompts)):
            shared = sum(1 for g in sets[a] & sets[b] if held[g] <= 6)
            similarity = shared / (len(sets[a]) + len(sets[b]) - shared) if shared else 0.0
            expected += [(a, b)] if similarity >= overlap.NEAR_THRESHOLD else []
            narrow_misses += 0.6 <= similarity < overlap.NEAR_THRESHOLD
    found = overlap.near_pairs(pl.Series(prompts))
    assert list(found.iter_rows()) == expected
    assert len(expected) >= 8 and narrow_misses >= 8  # the threshold is exercised from both sides
    assert not [pair for pair in expected if min(pair) >= len(prompts) - 8]  # boilerplate copies never pair


@pytest.mark.parametrize("seed", [0, 1])
def test_near_pairs_from_n_grams_on_disk_equal_the_search_in_memory(seed, tmp_path, monkeypatch):
    """Three sources staged in chunks of uneven sizes, some rows dropped afterwards (dedup, decontamination),
    the n-gram files read a few partitions at a time: the same pairs as the in-memory search over the
    concatenated prompts of the rows left, with each pair's rows labelled by source and position. Seven
    copies of one prompt, two of them dropped: the five left pair up (held by 5 prompts, not boilerplate)."""
    import random

    from mixer import gram_store, overlap
    from mixer.gram_store import GramStore, source_and_position

    monkeypatch.setattr(overlap, "BOILERPLATE_ROWS", 6)  # in-memory search and store alike
    monkeypatch.setattr(gram_store, "READ_BYTES", 2_000)  # many groups of partitions
    monkeypatch.setattr(gram_store, "PREFIX_ROWS", 50)  # prefixes cut to size while the groups are read
    monkeypatch.setattr(gram_store, "KEPT_ROWS", 0 if seed else 10**6)  # each pass reads the files / kept
    rng = random.Random(seed)
    copy = "seven copies of this prompt two of them dropped later"
    prompts = _template_prompts(seed) + [copy] * 7
    rng.shuffle(prompts)
    cuts = [0, 120, 250, len(prompts)]
    copies_seen = iter(range(7))
    store = GramStore(tmp_path / "grams")
    sources = []
    for index in range(3):
        mine = prompts[cuts[index] : cuts[index + 1]]
        sizes, first = [], 0
        while first < len(mine):
            step = rng.randint(1, 40)
            sizes += store.add(f"s{index}", first, pl.Series(mine[first : first + step])).to_list()
            first += step
        assert sizes == [len(overlap.distinct_grams(pl.Series([p]), 5)[1]) for p in mine]
        keys = pl.DataFrame(
            {"__pos": range(len(mine)), "grams": sizes}, schema={"__pos": pl.UInt32, "grams": pl.UInt32}
        )
        kept = [next(copies_seen) >= 2 if text == copy else rng.random() > 0.15 for text in mine]
        sources.append((f"s{index}", keys.filter(pl.Series(kept))))
    assert len(store._groups(sources)) > 4

    found = store.near_pairs(sources)
    left = [(i, p) for i, (_, keys) in enumerate(sources) for p in keys["__pos"].to_list()]
    texts = [prompts[cuts[i] + p] for i, p in left]
    expected = [(left[a], left[b]) for a, b in overlap.near_pairs(pl.Series(texts)).iter_rows()]
    source, position = source_and_position(pl.col("row"))
    source_b, position_b = source_and_position(pl.col("row_b"))
    labelled = found.select(source, position.alias("p"), source_b.alias("sb"), position_b.alias("pb")).rows()
    assert [((a, p), (b, q)) for a, p, b, q in labelled] == expected
    assert len(expected) >= 5 and any(a != b for (a, _), (b, _) in expected)  # pairs within and across sources
    assert sum(texts[left.index(a)] == copy for a, _ in expected) == 10  # 5 copies: 4 + 3 + 2 + 1 pairs

    class Steps:  # rich's Progress as the search uses it: one task, advanced once per group per pass
        def add_task(self, description: str, total: int) -> int:
            self.total, self.done = total, 0
            return 0

        def advance(self, task: int, amount: float = 1) -> None:
            self.done += amount

    steps = Steps()
    assert store.near_pairs(sources, progress=steps).equals(found)
    assert steps.total == steps.done == 3 * len(store._groups(sources))


def test_near_pairs_from_n_grams_on_disk_equal_the_search_in_memory_on_real_prompts(shared_data, tmp_path):
    """GSM8K's training questions twice (the FLAN CoT copy and the original, with their small differences)
    and Code-Alpaca's instructions, staged in chunks of 1,000 rows: the same pairs both ways."""
    from mixer import overlap
    from mixer.gram_store import GramStore, source_and_position

    sources = {
        "flan_cot_gsm8k": pl.read_csv(
            shared_data / "flan_cot" / "gsm8k_train.tsv", separator="\t", has_header=False, quote_char=None
        )[:, 0],
        "gsm8k": pl.read_ndjson(shared_data / "gsm8k" / "train.jsonl")["question"],
        "code_alpaca": pl.read_json(shared_data / "code_alpaca" / "code_alpaca_2k.json")["instruction"],
    }
    store = GramStore(tmp_path / "grams")
    staged = []
    for name, prompts in sources.items():
        sizes = [store.add(name, first, prompts.slice(first, 1_000)) for first in range(0, prompts.len(), 1_000)]
        positions = pl.int_range(prompts.len(), eager=True, dtype=pl.UInt32).alias("__pos")
        staged.append((name, pl.DataFrame([positions, pl.concat(sizes)])))

    found = store.near_pairs(staged)
    expected = overlap.near_pairs(pl.concat(list(sources.values())))
    starts = [0, sources["flan_cot_gsm8k"].len(), sources["flan_cot_gsm8k"].len() + sources["gsm8k"].len()]
    as_rows = []
    for column in ("row", "row_b"):
        source, position = source_and_position(pl.col(column))
        as_rows.append(found.select(position.cast(pl.Int64) + source.replace_strict([0, 1, 2], starts)).to_series())
    assert list(zip(*(column.to_list() for column in as_rows), strict=True)) == list(expected.iter_rows())
    across = found.filter(source_and_position(pl.col("row"))[0] != source_and_position(pl.col("row_b"))[0])
    assert (expected.height, across.height) == (7_477, 7_475)  # all but 2 pair a question with its other copy


def test_overlap_examples_are_the_first_shared_rows_in_file_order_whatever_the_row_order():
    from mixer.overlap import overlap_matrix

    # source a repeats prompt 10 (rows 2 and 3); its first shared rows in file order are 1 (20) and 2 (10)
    a = pl.DataFrame({"__pos": [3, 1, 2, 0], "prompt_hash": [10, 20, 10, 30]}, schema_overrides={"__pos": pl.UInt32})
    b = pl.DataFrame({"__pos": [0, 1], "prompt_hash": [20, 10]}, schema_overrides={"__pos": pl.UInt32})
    seen = []

    def prompt_text(source, positions):
        seen.append((source, positions.to_list()))
        return [f"{source}:{p}" for p in positions]

    for order in ([0, 1, 2, 3], [2, 0, 3, 1], [3, 2, 1, 0]):
        seen.clear()
        report = overlap_matrix(
            {"a": a[order].cast({"prompt_hash": pl.UInt64}), "b": b.cast({"prompt_hash": pl.UInt64})}, prompt_text
        )
        assert seen == [("a", [1, 2])]
        assert report["matrix"] == [[None, 3], [2, None]]
        assert report["rows_in_several_sources"] == {"a": 3, "b": 2}


def test_benchmark_hits_are_remembered_per_source_and_found_again_when_a_file_changes(tmp_path, monkeypatch):
    """A rebuild with other takes reuses each source's hits instead of hashing every word again; a changed
    source file or benchmark file, or another n, finds them again; the output is the same either way."""
    from mixer.decontam import Index

    scanned: list[int] = []  # rows of every batch Index.hits is asked to scan
    original = Index.hits
    monkeypatch.setattr(Index, "hits", lambda self, rows: scanned.append(rows.height) or original(self, rows))
    recipe = _recipe(tmp_path, "remove")
    options = Options(progress=False, cache_dir=tmp_path / "cache")

    first = build(recipe, options, out=tmp_path / "one")
    assert sorted(scanned) == [1, 6, 21] and len(list((tmp_path / "cache" / "decontam-hits").iterdir())) == 3
    scanned.clear()
    again = build(recipe, options, out=tmp_path / "two")  # another output: a real build, not a no-op
    assert scanned == []
    assert again.manifest["decontamination"] == first.manifest["decontamination"]
    assert again.manifest["sources"]["a"]["counts"]["decontaminate"] == 1
    assert pl.read_parquet(tmp_path / "one" / "data").equals(pl.read_parquet(tmp_path / "two" / "data"))

    recipe.write_text(
        recipe.read_text().replace(
            "b: {path: b.jsonl, format: alpaca, take: all}", "b: {path: b.jsonl, format: alpaca, take: 3}"
        )
    )
    build(recipe, options, out=tmp_path / "three")
    assert scanned == []  # only a selector changed

    with (tmp_path / "c.jsonl").open("a") as f:  # c gains the contaminated row: only c is scanned again
        f.write(json.dumps({"instruction": "Copied: " + ITEM, "input": "", "output": "9"}) + "\n")
    changed = build(recipe, options, out=tmp_path / "four")
    assert scanned == [2] and changed.manifest["sources"]["c"]["counts"]["decontaminate"] == 1

    scanned.clear()
    (tmp_path / "bench.jsonl").write_text(json.dumps({"question": "Task number 3: describe item 3."}) + "\n")
    build(recipe, options, out=tmp_path / "five")
    assert sorted(scanned) == [2, 6, 21]  # another benchmark file: every source again


def test_an_unreadable_remembered_hits_entry_is_found_again(tmp_path):
    recipe = _recipe(tmp_path, "remove")
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    first = build(recipe, options, out=tmp_path / "one")
    for entry in (tmp_path / "cache" / "decontam-hits").iterdir():
        entry.write_bytes(b"not parquet")
    again = build(recipe, options, out=tmp_path / "two")
    assert again.manifest["decontamination"] == first.manifest["decontamination"]
    assert all(pl.read_parquet(e).height >= 0 for e in (tmp_path / "cache" / "decontam-hits").iterdir())


def test_hits_of_evolved_rows_are_never_remembered(tmp_path):
    """Evolved sources have no input files: a key without file hashes would hand one evolve run's hits to the
    next run's different rows."""
    from mixer.benchmark_sets import resolve_benchmarks
    from mixer.decontam import Decontamination
    from mixer.resolve import ResolvedSource
    from mixer.validate import load_recipe

    recipe = load_recipe(_recipe(tmp_path, "remove"))
    spec = recipe.sources[0]
    evolved = ResolvedSource(spec, None, "messages", "evolve", (), None, "unknown")
    benchmarks = resolve_benchmarks(recipe, data_dir=None, cache_dir=tmp_path / "hashes")
    assert recipe.mixture.decontaminate is not None
    decontam = Decontamination(recipe.mixture.decontaminate, benchmarks, tmp_path / "c")
    hits = pl.DataFrame({"__pos": [0], "benchmark": ["toy"], "item": ["toy/0"], "span": ["x"]})
    decontam.remember_hits(evolved, (), hits.cast({"__pos": pl.UInt32}))
    assert decontam.known_hits(evolved, ()) is None and not (tmp_path / "c").exists()


def test_remembered_hits_are_not_reused_by_other_code(tmp_path, monkeypatch):
    import mixer.hits_cache
    from mixer.decontam import Index

    scanned: list[int] = []
    original = Index.hits
    monkeypatch.setattr(Index, "hits", lambda self, rows: scanned.append(rows.height) or original(self, rows))
    recipe = _recipe(tmp_path, "remove")
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    build(recipe, options, out=tmp_path / "one")
    scanned.clear()
    monkeypatch.setattr(mixer.hits_cache, "code_fingerprint", lambda: "edited normalisation")
    build(recipe, options, out=tmp_path / "two")
    assert sorted(scanned) == [1, 6, 21]


def test_plan_of_a_decontaminating_recipe_reuses_counts_until_a_benchmark_file_changes(tmp_path, monkeypatch):
    import mixer.pipeline as pipeline_module
    from mixer.pipeline import plan_recipe

    recipe = _recipe(tmp_path, "remove")
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    _, first = plan_recipe(recipe, options)
    assert [s.counts.get("decontaminate") for s in first.sources] == [1, 0, 0]

    def must_not_load(*args, **kwargs):
        raise AssertionError("the counts should have come from the cache")

    recipe.write_text(
        recipe.read_text().replace(
            "a: {path: a.jsonl, format: alpaca, take: all}", "a: {path: a.jsonl, format: alpaca, take: 5}"
        )
    )
    with monkeypatch.context() as patch:
        patch.setattr(pipeline_module, "stage_sources", must_not_load)
        _, second = plan_recipe(recipe, options)
    assert [s.selected for s in second.sources] == [5, 6, 1] and second.sources[0].counts == first.sources[0].counts

    (tmp_path / "bench.jsonl").write_text(json.dumps({"question": "Task number 3: describe item 3."}) + "\n")
    _, third = plan_recipe(recipe, options)  # another benchmark file: counted from the data again
    assert [s.counts.get("decontaminate") for s in third.sources] == [1, 1, 0]
