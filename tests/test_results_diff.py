"""Results ingestion and `mixer diff`: every format, the significance rule, comparability, git refs, HTML."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
from html.parser import HTMLParser

import pytest

from mixer.build import Options, build
from mixer.diff import OWN_UNITS, POINTS, Side, compare, compare_metrics, load_side, significance
from mixer.errors import MixerError
from mixer.results import Score, add_results, parse_file, run_scores

from conftest import REPO, run_mixer, swapped_values, write_recipe


def score(task, metric, value, stderr=None, better=True, **config):
    return Score(task, metric, value, stderr, 100, better, eval_config={"shots": 0, **config})


# ---- parsing ----


def test_lm_eval_real_file(shared_data):
    scores = {(s.task, s.metric): s for s in parse_file(shared_data / "lm_eval" / "model_a_0shot.json")}
    assert set(scores) == {
        ("creak_mc", "acc"),
        ("creak_mc", "acc_norm"),
        ("strategyqa_mc", "acc"),
        ("strategyqa_mc", "acc_norm"),
        ("gsm8k_local", "exact_match"),
        ("cot_yesno", "acc"),
    }
    creak = scores[("creak_mc", "acc")]
    assert (creak.value, creak.stderr, creak.n, creak.group) == (0.52, 0.02889260474058464, 300, "cot_yesno")
    assert creak.eval_config["harness_version"] == "0.4.13" and creak.eval_config["shots"] == 0
    assert {s.unit for s in scores.values()} == {"proportion"}  # acc, acc_norm, exact_match: shares of items
    assert scores[("cot_yesno", "acc")].is_group and scores[("cot_yesno", "acc")].n == 600
    three = {s.task: s for s in parse_file(shared_data / "lm_eval" / "model_a_3shot.json")}
    assert three["creak_mc"].eval_config["shots"] == 3


def test_lm_eval_filters_na_stderr_and_lower_is_better(tmp_path):
    data = {
        "results": {
            "gsm8k": {
                "exact_match,strict-match": 0.25,
                "exact_match_stderr,strict-match": 0.01,
                "exact_match,flexible-extract": 0.3,
                "exact_match_stderr,flexible-extract": "N/A",
            },
            "wikitext": {"word_perplexity,none": 12.5, "word_perplexity_stderr,none": "N/A"},
            "ifeval": {"prompt_level_strict_acc,none": 0.41, "inst_level_loose_acc,none": 0.52},
            "truthfulqa_gen": {"bleu_max,none": 20.3, "bleu_acc,none": 0.35, "rouge1_max,none": 45.1},
        },
        "versions": {"gsm8k": 3, "wikitext": 2},
        "n-shot": {"gsm8k": 5, "wikitext": 0},
        "higher_is_better": {"gsm8k": {"exact_match": True}, "wikitext": {"word_perplexity": False}},
        "config": {"limit": 100},
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    scores = {(s.task, s.metric): s for s in parse_file(path)}
    assert scores[("gsm8k", "exact_match[strict-match]")].stderr == 0.01
    assert scores[("gsm8k", "exact_match[flexible-extract]")].stderr is None
    assert scores[("wikitext", "word_perplexity")].higher_is_better is False
    assert scores[("gsm8k", "exact_match[strict-match]")].eval_config["limit"] == 100
    # which scores are shares of items, which a diff's mean reads in percentage points
    proportions = {key for key, s in scores.items() if s.unit == "proportion"}
    assert proportions == {
        ("gsm8k", "exact_match[strict-match]"),
        ("gsm8k", "exact_match[flexible-extract]"),
        ("ifeval", "prompt_level_strict_acc"),
        ("ifeval", "inst_level_loose_acc"),
        ("truthfulqa_gen", "bleu_acc"),
    }
    assert {s.unit for s in scores.values()} == {"proportion", None}


def test_alpaca_eval_csv_needs_a_model_and_reads_its_row(shared_data, tmp_path):
    board = shared_data / "alpaca_eval" / "alpaca_eval_gpt4_leaderboard.csv"
    with pytest.raises(MixerError, match="a leaderboard with 102 models"):
        parse_file(board)
    scores = {s.metric: s for s in parse_file(board, "tulu-2-dpo-70b")}
    assert scores["win_rate"].value == pytest.approx(95.03105590062113)
    assert scores["win_rate"].stderr == pytest.approx(0.7613100978662208)
    assert scores["win_rate"].n == 805 and scores["win_rate"].task == "alpaca_eval"
    assert scores["win_rate"].eval_config["judge"] == "alpaca_eval_gpt4"
    assert scores["length_controlled_winrate"].stderr is None  # AlpacaEval 1 has no LC stderr column
    v2 = {
        s.metric: s
        for s in parse_file(
            shared_data / "alpaca_eval" / "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv", "tulu-2-dpo-70b"
        )
    }
    assert v2["win_rate"].task == "alpaca_eval_2"
    assert v2["length_controlled_winrate"].value == pytest.approx(21.238610038371124)
    # a mistyped model is told the nearest names (its case aside), not the board's first eight
    with pytest.raises(MixerError, match="no model 'Tulu-2-DPO-7' in the leaderboard") as mistyped:
        parse_file(board, "Tulu-2-DPO-7")
    assert mistyped.value.hint == "did you mean 'tulu-2-dpo-7b', 'tulu-2-dpo-70b', 'tulu-2-dpo-13b'? (--model NAME)"


def test_alpaca_eval_json_and_plain_formats(tmp_path):
    (tmp_path / "lb.json").write_text(
        json.dumps({"my-model": {"win_rate": 12.5, "standard_error": 1.1, "n_total": 805}})
    )
    (scored,) = [s for s in parse_file(tmp_path / "lb.json") if s.metric == "win_rate"]
    assert (scored.value, scored.stderr, scored.n) == (12.5, 1.1, 805)
    (tmp_path / "plain.yaml").write_text(
        "mmlu:\n  acc: 0.61\n  acc_stderr: 0.004\n  n: 14042\nbbh:\n  em: 0.4\nheld_out:\n  perplexity: 6.1\n"
        "  val_loss: 1.8\n"
    )
    plain = {(s.task, s.metric): s for s in parse_file(tmp_path / "plain.yaml")}
    assert (plain[("mmlu", "acc")].stderr, plain[("mmlu", "acc")].n) == (0.004, 14042)
    assert plain[("bbh", "em")].stderr is None
    directions = {key: score.higher_is_better for key, score in plain.items()}
    assert directions == {
        ("mmlu", "acc"): True,
        ("bbh", "em"): True,
        ("held_out", "perplexity"): False,
        ("held_out", "val_loss"): False,
    }


def test_a_leaderboard_row_is_picked_by_its_model_name_alone(tmp_path):
    """A JSON list's row without a name was named by its position, so `--model 1` took the second row, and of
    two rows of one model the last was taken in silence."""
    board = tmp_path / "lb.json"
    rows = [{"generator": "a", "win_rate": 10.0}, {"win_rate": 20.0}, {"name": "b", "win_rate": 30.0}]
    board.write_text(json.dumps(rows))
    assert [s.value for s in parse_file(board, "b") if s.metric == "win_rate"] == [30.0]
    with pytest.raises(MixerError, match=r"lb\.json: no model '1' in the leaderboard") as raised:
        parse_file(board, "1")
    assert raised.value.hint == "pass --model NAME (e.g. a, b, ...)"
    board.write_text(json.dumps([*rows, {"model": "a", "win_rate": 40.0}]))
    with pytest.raises(MixerError, match=r"lb\.json: model 'a' has 2 rows in the leaderboard; which one is this run"):
        parse_file(board, "a")
    assert [s.value for s in parse_file(board, "b") if s.metric == "win_rate"] == [30.0]
    with pytest.raises(MixerError, match="no model 'c'") as raised:
        parse_file(board, "c")
    assert raised.value.hint == "pass --model NAME (e.g. a, b, ...)"  # each name once
    board.write_text(json.dumps([{"win_rate": 10.0}, {"win_rate": 20.0}]))
    with pytest.raises(MixerError, match=r"a leaderboard of 2 rows, none of which names its model") as raised:
        parse_file(board, "0")
    assert raised.value.hint == "add each row's model name, then pick this run's with --model NAME"
    board.write_text(json.dumps([{"win_rate": 10.0}]))  # one row is the run's, named or not
    assert [s.value for s in parse_file(board) if s.metric == "win_rate"] == [10.0]
    csv_board = tmp_path / "lb.csv"
    csv_board.write_text(",win_rate\nmine,10.0\nmine,20.0\nother,30.0\n")
    with pytest.raises(MixerError, match=r"lb\.csv: model 'mine' has 2 rows"):
        parse_file(csv_board, "mine")


def test_a_score_written_but_not_as_a_number_is_left_out_and_said(tmp_path):
    """A score of "abc" or NaN was dropped in silence: a leaderboard row whose win_rate was unreadable was added
    with its other two scores, and the diff compared those alone. An empty cell is no score (older models' rows
    have no length-controlled win rate) and is not said."""
    (tmp_path / "lb.csv").write_text(
        ",win_rate,standard_error,n_total,discrete_win_rate,length_controlled_winrate\n"
        "mine,abc,0.5,805,51.2,\nother,50.0,0.5,805,50.0,49.0\n"
    )
    (tmp_path / "lm.json").write_text(
        '{"results": {"gsm8k": {"exact_match,strict-match": NaN, "exact_match_stderr,strict-match": "N/A", '
        '"exact_match,flexible-extract": 0.25, "alias": "gsm8k"}}}'
    )
    (tmp_path / "plain.yaml").write_text("mmlu:\n  acc: n/a\n  acc_stderr: n/a\n  acc_norm: 0.6\n  n: 100\n")
    run = tmp_path / "run"
    run.mkdir()
    unread: list[str] = []
    for file, model in (("lb.csv", "mine"), ("lm.json", None), ("plain.yaml", None)):
        scores = add_results(run, [tmp_path / file], model, unread)
        assert len(scores) == 1
    assert unread == [
        'lb.csv: alpaca_eval win_rate is "abc"',
        "lm.json: gsm8k exact_match[strict-match] is NaN",
        'plain.yaml: mmlu acc is "n/a"',
    ]
    result = run_mixer("results", "add", str(tmp_path / "run2"), str(tmp_path / "lb.csv"), "--model", "mine")
    assert result.returncode == 1 and "warning" not in result.stderr  # no run folder: the files are not read
    (tmp_path / "run2").mkdir()
    result = run_mixer("results", "add", str(tmp_path / "run2"), str(tmp_path / "lb.csv"), "--model", "mine")
    assert result.returncode == 0
    assert result.stderr == 'warning: lb.csv: alpaca_eval win_rate is "abc", not a number: left out\n'
    # --json: an object like every command's result, the scores left out in it for a script to see
    (tmp_path / "run3").mkdir()
    result = run_mixer("results", "add", str(tmp_path / "run3"), str(tmp_path / "lb.csv"), "--model", "mine", "--json")
    added = json.loads(result.stdout)
    assert (added["ok"], added["results"], added["left_out"]) == (
        True,
        str(tmp_path / "run3" / "results"),
        ['lb.csv: alpaca_eval win_rate is "abc"'],
    )
    assert [(s["task"], s["metric"], s["value"]) for s in added["scores"]] == [
        ("alpaca_eval", "discrete_win_rate", 51.2)
    ]
    (tmp_path / "none.csv").write_text(",win_rate,discrete_win_rate\nmine,abc,\n")
    with pytest.raises(MixerError, match=r'none\.csv: no scores in this file \(alpaca_eval win_rate is "abc": not'):
        add_results(run, [tmp_path / "none.csv"], "mine")


def test_lm_eval_0_3_results_are_read_and_a_file_with_no_scores_is_refused(tmp_path):
    """lm-eval 0.3 wrote bare metric names (`acc`, `acc_stderr`) and the shots in `config`; older papers and
    leaderboards still publish that form, which gave no scores at all, and `results add` said "added 0"."""
    old = {
        "results": {
            "hellaswag": {"acc": 0.5, "acc_stderr": 0.01, "acc_norm": 0.6},
            "arc_easy": {"acc": 0.7},
            "wikitext": {"word_perplexity": 12.5, "byte_perplexity": 1.6, "bits_per_byte": 0.68},
        },
        "versions": {"hellaswag": 0, "arc_easy": 0, "wikitext": 1},
        "config": {"model": "hf-causal", "num_fewshot": 5, "limit": None},
    }
    (tmp_path / "v03.json").write_text(json.dumps(old))
    scores = {(s.task, s.metric): s for s in parse_file(tmp_path / "v03.json")}
    assert sorted(scores)[:3] == [("arc_easy", "acc"), ("hellaswag", "acc"), ("hellaswag", "acc_norm")]
    # 0.3 wrote no higher_is_better: a perplexity read as higher-is-better had a fall called worse
    lower = {key for key, score in scores.items() if not score.higher_is_better}
    assert lower == {("wikitext", "word_perplexity"), ("wikitext", "byte_perplexity"), ("wikitext", "bits_per_byte")}
    assert (scores[("hellaswag", "acc")].value, scores[("hellaswag", "acc")].stderr) == (0.5, 0.01)
    assert scores[("hellaswag", "acc_norm")].stderr is None
    assert scores[("arc_easy", "acc")].eval_config["shots"] == 5
    (tmp_path / "none.json").write_text(json.dumps({"mmlu": {"acc": "n/a"}}))
    with pytest.raises(MixerError, match=r"none\.json: no scores in this file"):
        parse_file(tmp_path / "none.json")
    (tmp_path / "flat.json").write_text(json.dumps({"results": {"gsm8k": 0.5}}))
    with pytest.raises(MixerError, match=r"^flat\.json: results\.gsm8k must map metric names to numbers, not float"):
        parse_file(tmp_path / "flat.json")
    # any other JSON object is read as plain {task: {metric: value}}: one that is not is told the forms read
    (tmp_path / "other.json").write_text(json.dumps({"model": "x", "scores": [0.5]}))
    with pytest.raises(MixerError, match=r"^other\.json: task 'model' must map metric names to numbers") as raised:
        parse_file(tmp_path / "other.json")
    assert raised.value.hint.startswith("results are read from lm-evaluation-harness JSON")
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(MixerError, match="no scores"):
        add_results(run, [tmp_path / "v03.json", tmp_path / "none.json"])
    assert not (run / "results").exists()  # nothing copied when one file fails


def test_a_results_file_of_any_shape_is_read_or_refused_never_a_traceback(tmp_path):
    """A results file edited by hand or written by another tool may hold anything in any section; feeding
    `parse_file` an lm-eval file with values of every type swapped in at random places (a fixed seed) found
    a dozen tracebacks. Each section of another shape now only means less eval-config detail."""
    results = {
        "results": {"arc": {"alias": "arc", "acc,none": 0.5, "acc_stderr,none": 0.01}, "mmlu": {"acc,none": 0.6}},
        "groups": {"mmlu": {"acc,none": 0.6}},
        "group_subtasks": {"mmlu": ["mmlu_math"]},
        "configs": {"arc": {"num_fewshot": 0}},
        "versions": {"arc": 1.0},
        "n-shot": {"arc": 0},
        "n-samples": {"arc": {"original": 100, "effective": 100}},
        "higher_is_better": {"arc": {"acc": True}},
        "config": {"limit": None},
        "lm_eval_version": "0.4.5",
    }
    values = [None, [], {}, [1], {"a": 1}, -1, 0, 0.5, "", "N/A", "x", True]
    path = tmp_path / "r.json"
    for doc in swapped_values([results], values, seed=11, count=500, most=4):
        path.write_text(json.dumps(doc))
        with contextlib.suppress(MixerError):
            parse_file(path)


def test_results_add_copies_and_remembers_leaderboard_model(tmp_path, shared_data):
    run = tmp_path / "run"
    run.mkdir()
    add_results(run, [shared_data / "alpaca_eval" / "alpaca_eval_gpt4_leaderboard.csv"], model="tulu-2-dpo-13b")
    add_results(run, [shared_data / "lm_eval" / "model_a_0shot.json"])
    tasks = {s.task for s in run_scores(run)}
    assert tasks == {"alpaca_eval", "creak_mc", "strategyqa_mc", "gsm8k_local", "cot_yesno"}
    result = run_mixer("results", "add", str(run), str(tmp_path / "missing.json"))
    assert result.returncode == 1 and "results file not found" in result.stderr and "Traceback" not in result.stderr


def test_results_show_says_when_there_are_none_and_refuses_a_missing_folder(tmp_path):
    """Both printed an empty table and exited 0: a mistyped run directory looked like a run without results."""
    run = tmp_path / "run"
    run.mkdir()
    empty = run_mixer("results", "show", str(run))
    assert empty.returncode == 0 and empty.stdout == ""
    assert f"no results in {run}: attach them with `mixer results add {run} FILE`" in empty.stderr
    assert json.loads(run_mixer("results", "show", str(run), "--json").stdout) == []
    missing = run_mixer("results", "show", str(tmp_path / "rnu"))
    assert missing.returncode == 1 and f"error: {tmp_path / 'rnu'}: not a directory" in missing.stderr


def test_a_recipe_or_a_mistyped_folder_given_where_a_build_belongs_is_told_which_folders_there_are(tmp_path):
    """`mixer stats recipes/x.yaml` said "no manifest.json"; the folder a user means is the recipe's build."""
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_recipe(tmp_path, "name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    result = run_mixer("stats", "recipe.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert (
        "error: recipe.yaml: is a file, not a build\n  hint: it is a recipe: build it (`mixer build recipe.yaml`), "
        "then give out/t\n"
    ) in result.stderr
    assert run_mixer("build", "recipe.yaml", cwd=tmp_path).returncode == 0
    result = run_mixer("stats", "out/tt", cwd=tmp_path)
    assert "error: out/tt: no such folder\n  hint: builds here: out/t\n" in result.stderr
    result = run_mixer("results", "show", "recipe.yaml", cwd=tmp_path)
    assert "error: recipe.yaml: not a directory\n  hint: it is a recipe: give out/t\n" in result.stderr


def test_results_add_takes_an_lm_eval_output_folder_with_one_results_file(tmp_path, shared_data):
    """`lm_eval --output_path out` writes out/<model>/results_<time>.json; `out` is what gets passed."""
    out = tmp_path / "out"
    (out / "org__model").mkdir(parents=True)
    real = shared_data / "lm_eval" / "model_a_0shot.json"
    (out / "org__model" / "results_2026-11-29T10-00-00.json").write_bytes(real.read_bytes())
    (out / "org__model" / "samples_creak_mc_2026-11-29T10-00-00.jsonl").write_text("{}\n")
    run = tmp_path / "run"
    run.mkdir()
    assert {s.task for s in add_results(run, [out])} == {"creak_mc", "strategyqa_mc", "gsm8k_local", "cot_yesno"}
    assert [p.name for p in (run / "results").iterdir()] == ["results_2026-11-29T10-00-00.json"]
    (out / "org__model" / "results_2026-11-30T10-00-00.json").write_bytes(real.read_bytes())
    with pytest.raises(MixerError) as two:
        add_results(run, [out])
    assert two.value.message == (
        f"{out}: a folder with 2 lm-eval results files (org__model/results_2026-11-29T10-00-00.json,"
        " org__model/results_2026-11-30T10-00-00.json)"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(MixerError) as none:
        add_results(run, [tmp_path / "empty"])
    assert none.value.message == f"{tmp_path / 'empty'}: a folder with 0 lm-eval results files"
    assert none.value.hint.startswith("pass the results file of this run")
    with pytest.raises(MixerError) as renamed:  # results files kept under names of their own
        add_results(run, [shared_data / "lm_eval"])
    assert renamed.value.hint == (
        "it holds 3 other JSON file(s) (model_a_0shot.json, model_a_3shot.json, model_b_0shot.json): pass the one "
        "of this run"
    )
    again = add_results(run, [run / "results" / "results_2026-11-29T10-00-00.json"])  # a file already there
    assert len(again) == 6


# ---- the significance rule ----


@pytest.mark.parametrize(
    ("delta", "se_a", "se_b", "expected"),
    [
        (0.11, 0.03, 0.04, (0.05, True)),  # 2·√(0.03² + 0.04²) = 0.10
        (0.09, 0.03, 0.04, (0.05, False)),
        (-0.11, 0.03, 0.04, (0.05, True)),
        (0.5, None, 0.04, (None, False)),  # missing stderr: no claim
        (0.5, 0.0, 0.0, (None, False)),  # lm-eval's 0 for all-wrong tasks is not certainty
        (0.5, 3e200, 4e200, (5e200, False)),  # a stderr this large is nonsense, but squaring it overflowed
    ],
)
def test_significance_hand_computed(delta, se_a, se_b, expected):
    se, significant = significance(delta, se_a, se_b)
    assert (None if se is None else se, significant) == (
        None if expected[0] is None else pytest.approx(expected[0], rel=1e-9),
        expected[1],
    )


def test_direction_aware_rows_and_aggregate():
    a = Side(
        "a",
        None,
        None,
        [
            score("ppl", "ppl", 10.0, 0.1, better=False),
            score("qa", "acc", 0.5, 0.01),
            score("qa", "f1", 0.6, 0.01),
            score("gone", "acc", 0.1, 0.01),
        ],
    )
    b = Side(
        "b",
        None,
        None,
        [
            score("ppl", "ppl", 9.0, 0.1, better=False),
            score("qa", "acc", 0.45, 0.01),
            score("qa", "f1", 0.58, 0.01),
            score("new", "acc", 0.2),
        ],
    )
    diff = compare_metrics(a, b)
    rows = {(r.task, r.metric): r for r in diff.rows}
    assert rows[("ppl", "ppl")].direction == "better" and rows[("ppl", "ppl")].significant
    assert rows[("qa", "acc")].direction == "worse" and rows[("qa", "acc")].significant
    assert rows[("qa", "f1")].significant is False  # 0.02 < 2·√2·0.01
    # per task first (ppl: +1.0 oriented; qa: mean(-0.05, -0.02)), then over tasks; no scale is known for these
    # hand-made scores, so the mean is in their own units
    assert diff.mean_delta == pytest.approx((1.0 + (-0.05 - 0.02) / 2) / 2)
    assert (diff.mean_unit, diff.left_out) == (OWN_UNITS, [])
    assert (diff.tasks, diff.tasks_better, diff.tasks_worse) == (2, 1, 1)
    assert diff.only_a == [("gone", "acc")] and diff.only_b == [("new", "acc")]


def test_the_mean_reads_accuracies_and_win_rates_in_percentage_points(shared_data, tmp_path):
    """lm-eval's accuracies are 0-1 and AlpacaEval's win rates 0-100: averaged as they were, the win rate's
    +3.9 drowned two accuracies that fell by 4 and 10.7 points, and the mean said B was better (+0.91)."""
    lm_eval, board = shared_data / "lm_eval", shared_data / "alpaca_eval" / "alpaca_eval_gpt4_leaderboard.csv"
    a = Side("a", None, None, parse_file(lm_eval / "model_a_0shot.json") + parse_file(board, "tulu-2-dpo-7b"))
    b = Side("b", None, None, parse_file(lm_eval / "model_b_0shot.json") + parse_file(board, "tulu-2-dpo-13b"))
    diff = compare_metrics(a, b)
    # alpaca_eval: win_rate, length_controlled_winrate and discrete_win_rate, already in percent
    alpaca = ((88.12189054726367 - 84.22360248447205) * 2 + (81.235850076993 - 77.85355333126851)) / 3
    creak = (0 + (0.48 - 0.52) * 100) / 2  # acc unchanged, acc_norm fell
    strategy = (0 + (0.44666666666666666 - 0.5533333333333333) * 100) / 2
    assert diff.mean_delta == pytest.approx((alpaca + creak + 0 + strategy) / 4)  # gsm8k_local: 0 on both sides
    assert diff.mean_delta < 0
    assert (diff.mean_unit, diff.tasks, diff.tasks_better, diff.tasks_worse, diff.left_out) == (POINTS, 4, 1, 2, [])
    rows = {(r.task, r.metric): r for r in diff.rows}
    assert (rows[("creak_mc", "acc_norm")].unit, rows[("alpaca_eval", "win_rate")].unit) == ("proportion", "percent")
    assert rows[("creak_mc", "acc_norm")].delta_points == pytest.approx(-4.0)

    out_a, out_b = tmp_path / "a", tmp_path / "b"
    for out, creak_norm, mt_bench in ((out_a, 0.52, 7.0), (out_b, 0.48, 7.5)):
        (out / "results").mkdir(parents=True)
        plain = {"creak_mc": {"acc_norm": creak_norm}, "mt_bench": {"score": mt_bench}}
        (out / "results" / "scores.json").write_text(json.dumps(plain))
    shown = run_mixer("diff", str(out_a), str(out_b), "--format", "markdown")
    assert shown.returncode == 0, shown.stderr
    # plain files say no scale: with no task of a known scale, the mean is in the scores' own units
    mean = "Mean Δ over 2 task(s), direction-aware, in the scores' own units: +0.23 (1 better, 1 worse)."
    assert mean in shown.stdout


def test_a_task_of_unknown_scale_is_left_out_of_a_mean_in_points():
    known = [Score("qa", "acc", 0.5, unit="proportion"), Score("board", "win_rate", 50.0, unit="percent")]
    a = Side("a", None, None, [*known, Score("mt_bench", "score", 6.0), Score("qa", "bleu", 20.0)])
    b = Side(
        "b",
        None,
        None,
        [
            Score("qa", "acc", 0.55, unit="proportion"),
            Score("board", "win_rate", 48.0, unit="percent"),
            Score("mt_bench", "score", 8.0),
            Score("qa", "bleu", 30.0),
        ],
    )
    diff = compare_metrics(a, b)
    assert diff.mean_delta == pytest.approx((5.0 - 2.0) / 2)  # qa's bleu and mt_bench's score: no known scale
    assert (diff.mean_unit, diff.tasks, diff.left_out) == (POINTS, 2, ["mt_bench"])
    from mixer.report import mean_sentence

    assert mean_sentence(diff) == (
        "mean Δ over 2 task(s), direction-aware, in percentage points: +1.5 (1 better, 1 worse); "
        "left out, their scale not known: mt_bench"
    )


def test_real_lm_eval_diff_and_comparability_warnings(shared_data, tmp_path):
    a = Side("a", None, None, parse_file(shared_data / "lm_eval" / "model_a_0shot.json"))
    b = Side("b", None, None, parse_file(shared_data / "lm_eval" / "model_b_0shot.json"))
    rows = {(r.task, r.metric): r for r in compare_metrics(a, b).rows}
    strategy = rows[("strategyqa_mc", "acc_norm")]
    assert strategy.delta == pytest.approx(0.44666666666666666 - 0.5533333333333333)
    assert strategy.se_delta == pytest.approx(math.hypot(0.028750777541066693, strategy.se_b))
    assert strategy.significant and strategy.direction == "worse"
    assert rows[("gsm8k_local", "exact_match")].se_delta is None
    assert compare_metrics(a, b).warnings == []
    three = Side("c", None, None, parse_file(shared_data / "lm_eval" / "model_a_3shot.json"))
    warnings = compare_metrics(a, three).warnings
    assert "cot_yesno: shots differs (0 vs 3); scores are not comparable" in warnings
    assert len([w for w in warnings if "shots differs" in w]) == 3


def test_judge_difference_is_flagged():
    a = Side("a", None, None, [score("alpaca_eval", "win_rate", 50.0, 1.0, judge="gpt4")])
    b = Side("b", None, None, [score("alpaca_eval", "win_rate", 55.0, 1.0, judge="gpt4_turbo")])
    (row,) = compare_metrics(a, b).rows
    assert row.incomparable == ["judge"]


# ---- composition, git refs, CLI outputs ----


def _two_builds(tmp_path, shared_data):
    samples = REPO / "sources" / "samples"
    base = f"""
        name: mix
        seed: {{seed}}
        sources:
          alpaca: {{{{path: {samples}/alpaca.json, format: alpaca, take: {{take}}}}}}
          cot: {{{{path: {samples}/cot.tsv, format: cot, take: all}}}}
          {{extra}}
        """
    a = write_recipe(tmp_path, base.format(seed=1, take=30, extra=""), "a.yaml")
    b = write_recipe(
        tmp_path,
        base.format(seed=2, take=20, extra=f"dolly: {{path: {samples}/dolly.jsonl, format: dolly, take: 10}}"),
        "b.yaml",
    )
    out_a = build(a, Options(progress=False), out=tmp_path / "out_a").out_dir
    out_b = build(b, Options(progress=False), out=tmp_path / "out_b").out_dir
    if shared_data is not None:
        add_results(out_a, [shared_data / "lm_eval" / "model_a_0shot.json"])
        add_results(out_b, [shared_data / "lm_eval" / "model_b_0shot.json"])
    return out_a, out_b


def test_a_recipe_is_diffed_with_its_build_and_results_while_its_output_holds_a_build_of_it(
    tmp_path, shared_data, monkeypatch
):
    """`mixer diff recipes/a.yaml recipes/b.yaml` showed the recipes' text alone ("—" for every count, no
    scores) with both built and scored in their output folders; a folder holding an older version's build must
    not be shown as the recipe's."""
    samples = REPO / "sources" / "samples"
    monkeypatch.chdir(tmp_path)  # output.dir is relative to the current folder, as `mixer build` writes it
    for name, take, model in (("a", 30, "model_a"), ("b", 20, "model_b")):
        recipe = write_recipe(
            tmp_path,
            f"name: {name}\nsources:\n  alpaca: {{path: {samples}/alpaca.json, format: alpaca, take: {take}}}\n"
            f"output: {{dir: built/{name}}}\nstages: [{{name: sft, kind: sft, model: m, data: mixture}}]\n",
            f"{name}.yaml",
        )
        add_results(build(recipe, Options(progress=False)).out_dir, [shared_data / "lm_eval" / f"{model}_0shot.json"])

    a, b = load_side("a.yaml"), load_side("b.yaml")
    assert (a.label, b.label, a.stages_known, a.warnings) == ("a.yaml (built/a)", "b.yaml (built/b)", True, [])
    comparison = compare(a, b)
    (alpaca,) = comparison.composition.sources
    assert (alpaca.a_rows, alpaca.b_rows, alpaca.changes) == (30, 20, ["take: 30 → 20"])
    deltas = {(r.task, r.metric): round(r.delta, 4) for r in comparison.metrics.rows}
    assert deltas[("strategyqa_mc", "acc_norm")] == -0.1067

    nameless = write_recipe(tmp_path, "sources:\n  alpaca: {source: dolly, take: 1}\n", "nameless.yaml")
    assert load_side(str(nameless)).counts is None  # a recipe without a name was a KeyError: its text is shown

    write_recipe(tmp_path, (tmp_path / "a.yaml").read_text().replace("take: 30", "take: 25"), "a.yaml")
    edited = load_side("a.yaml")
    assert (edited.label, edited.counts, edited.scores) == ("a.yaml", None, [])
    assert edited.warnings == [
        "a.yaml: built/a holds a build of another version of this recipe, so its rows and results are not "
        "shown: build the recipe again, or diff built/a itself"
    ]


def test_diff_of_mixes_without_results_says_so_instead_of_an_empty_table(tmp_path):
    out_a, out_b = _two_builds(tmp_path, None)
    terminal = run_mixer("diff", str(out_a), str(out_b))
    assert terminal.returncode == 0, terminal.stderr
    assert "metrics: neither side has benchmark results (attach them with `mixer results add DIR FILE`)" in (
        terminal.stdout
    )
    assert "metrics (Δ" not in terminal.stdout
    markdown = run_mixer("diff", str(out_a), str(out_b), "--format", "markdown").stdout
    assert "### Metrics\n\nmetrics: neither side has benchmark results" in markdown
    assert "| task | metric |" not in markdown
    page = run_mixer("diff", str(out_a), str(out_b), "--format", "html").stdout
    assert "<h3>Metrics</h3><p>metrics: neither side has benchmark results" in page and 'id="metrics-0"' not in page

    (tmp_path / "scores.json").write_text(
        json.dumps({"results": {"arc_easy": {"acc,none": 0.5, "acc_stderr,none": 0.01}}, "versions": {}})
    )
    add_results(out_b, [tmp_path / "scores.json"])
    terminal = run_mixer("diff", str(out_a), str(out_b)).stdout
    assert "only in B: arc_easy acc" in terminal
    assert "metrics (Δ" not in terminal and "neither side" not in terminal
    markdown = run_mixer("diff", str(out_a), str(out_b), "--format", "markdown").stdout
    assert "only in B: arc_easy acc" in markdown and "| task | metric |" not in markdown
    page = run_mixer("diff", str(out_a), str(out_b), "--format", "html").stdout
    assert "<li>only in B: arc_easy acc</li>" in page  # the one metric B has, and no table of none in common
    assert 'id="metrics-0"' not in page and "neither side" not in page


def test_diff_two_built_mixes(tmp_path, shared_data):
    out_a, out_b = _two_builds(tmp_path, shared_data)
    comparison = compare(load_side(str(out_a)), load_side(str(out_b)))
    rows = {r.name: r for r in comparison.composition.sources}
    assert (rows["alpaca"].status, rows["alpaca"].a_rows, rows["alpaca"].b_rows) == ("changed", 30, 20)
    assert rows["alpaca"].changes == ["take: 30 → 20"]
    assert rows["alpaca"].a_share == pytest.approx(30 / 66)
    assert (rows["dolly"].status, rows["dolly"].b_rows) == ("added", 10)
    assert rows["cot"].status == "same"
    assert "seed: 1 → 2" in comparison.composition.settings

    table = run_mixer("diff", str(out_a), str(out_b), env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "take: 30 → 20" in table.stdout and "significant ↓" in table.stdout
    md = run_mixer("diff", str(out_a), str(out_b), "--format", "markdown").stdout
    assert "| alpaca | changed | 30 | 20 | 45.5% | 30.3% | take: 30 → 20 |" in md
    assert "| strategyqa_mc | acc_norm | 0.5533 | 0.4467 | **-0.1067** | 0.08132 | significant ↓ |" in md
    payload = json.loads(run_mixer("diff", str(out_a), str(out_b), "--format", "json").stdout)
    assert payload[0]["metrics"]["rows"][0]["task"] == "cot_yesno"


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.tags, self.rows, self.external = set(), [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "tr":
            self.rows += 1
        for key in ("src", "href"):
            if attrs.get(key, "").startswith("http"):
                self.external.append(attrs[key])


def test_html_report_is_self_contained_with_chart_and_tables(tmp_path, shared_data):
    out_a, out_b = _two_builds(tmp_path, shared_data)
    report = tmp_path / "diff.html"
    result = run_mixer("diff", str(out_a), str(out_b), "--format", "html", "--output", str(report))
    assert result.returncode == 0, result.stderr
    parser = _Collector()
    parser.feed(report.read_text())
    assert {"delta-chart-0", "composition-0", "metrics-0"} <= parser.ids
    assert "svg" in parser.tags
    assert {"bar-strategyqa_mc-acc_norm", "bar-creak_mc-acc"} <= parser.ids  # one bar per task/metric
    assert parser.rows == 1 + 3 + 1 + 6  # header + sources, header + metrics
    assert parser.external == []  # nothing to fetch: opens offline


def test_diff_of_recipe_across_git_revisions(tmp_path):
    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    recipe = write_recipe(
        tmp_path,
        "name: r\nseed: 1\nsources:\n  a: {source: dolly, take: 100}\n  b: {source: cot, take: 5}\n"
        "stages:\n  - {name: sft, kind: sft, model: m, data: mixture, hyperparameters: {learning_rate: 2.0e-5}}\n",
    )
    git("add", ".")
    git("commit", "-qm", "one")
    write_recipe(
        tmp_path,
        "name: r\nseed: 1\nsources:\n  a: {source: dolly, take: 200, max_chars: 4000}\n  c: {source: lima, take: all}\n"
        "stages:\n  - {name: sft, kind: sft, model: m, data: mixture, hyperparameters: {learning_rate: 1.0e-5}}\n",
    )
    result = run_mixer("diff", f"{recipe}@HEAD", str(recipe), "--format", "json")
    assert result.returncode == 0, result.stderr
    composition = json.loads(result.stdout)[0]["composition"]
    statuses = {s["name"]: (s["status"], s["changes"]) for s in composition["sources"]}
    assert statuses == {
        "a": ("changed", ["max_chars: — → 4000", "take: 100 → 200"]),
        "b": ("removed", []),
        "c": ("added", []),
    }
    assert composition["settings"] == ["stages.sft.hyperparameters.learning_rate: 2e-05 → 1e-05"]
    bad = run_mixer("diff", f"{recipe}@nope", str(recipe))
    assert bad.returncode == 1 and "cannot read from git" in bad.stderr


def test_diff_takes_json_as_every_other_command_does_and_fails_in_json(tmp_path):
    """`mixer diff A B --json` was "No such option" while every other command takes `--json`; and with
    `--format json`, a failure printed only text, so a script parsing stdout broke on it."""
    first = write_recipe(tmp_path, "name: r\nsources:\n  a: {source: dolly, take: 100}\n", "a.yaml")
    second = write_recipe(tmp_path, "name: r\nsources:\n  a: {source: dolly, take: 200}\n", "b.yaml")
    as_json = run_mixer("diff", str(first), str(second), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert as_json.stdout == run_mixer("diff", str(first), str(second), "--format", "json").stdout
    assert json.loads(as_json.stdout)[0]["composition"]["sources"][0]["changes"] == ["take: 100 → 200"]
    for flags in (["--json"], ["--format", "json"], ["--format=json"]):
        missing = run_mixer("diff", str(first), str(tmp_path / "nothere"), *flags)
        assert missing.returncode == 1
        assert json.loads(missing.stdout)["error"].endswith("nothere: not a run directory, build output or recipe")
    both = run_mixer("diff", str(first), str(second), "--json", "--format", "html")
    assert both.returncode == 1 and "--json and --format html ask for two formats" in both.stderr


def test_a_manifest_edited_or_cut_short_is_named_never_a_traceback(tmp_path):
    """diff, stats and runs read manifest.json long after it was written; one cut short by a full disk or
    replaced by another tool's file ended each of them in a KeyError or JSONDecodeError traceback."""
    from mixer.build import Options, build

    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"instruction": f"q{i}", "output": "a"}) + "\n" for i in range(5))
    )
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    good, broken = tmp_path / "good", tmp_path / "broken"
    build(recipe, Options(progress=False), out=good)
    build(recipe, Options(progress=False), out=broken)
    for text, problem in (("{", "cannot be read as JSON"), ('{"x": 1}', "not as mixer writes it (no recipe.name")):
        (broken / "manifest.json").write_text(text)
        for command in (["diff", str(good), str(broken)], ["stats", str(broken)]):
            result = run_mixer(*command)
            assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
            assert result.stderr.startswith(f"error: {broken / 'manifest.json'}: {problem}"), result.stderr
        listed = json.loads(run_mixer("runs", str(tmp_path), "--json").stdout)
        assert {r["path"]: r["kind"] for r in listed} == {str(broken): "unreadable", str(good): "build"}
        table = run_mixer("runs", str(tmp_path), env={"COLUMNS": "400"}).stdout  # why it is unreadable, in the table
        assert f"│ unreadable │ {broken / 'manifest.json'}: {problem}" in table and "│ build      │ built" in table
        # a rebuild over it is not a no-op, and makes it whole again
        assert build(recipe, Options(progress=False), out=broken).status == "built"
        assert json.loads((broken / "manifest.json").read_text())["totals"]["rows"] == 5


def test_stats_of_a_folder_with_a_shard_missing_cut_short_or_damaged_is_refused_and_named(tmp_path):
    """`mixer stats` read every data/*.parquet: a shard deleted or cut short (an rsync stopped halfway) ended in
    a polars traceback, and a stray parquet file's rows were counted as the mixture's."""
    from mixer.build import Options, build

    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"instruction": f"q{i}", "output": "a"}) + "\n" for i in range(40))
    )
    recipe = write_recipe(
        tmp_path, "name: t\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\noutput: {shard_rows: 25}\n"
    )
    out = tmp_path / "out"
    build(recipe, Options(progress=False), out=out)
    _, second = sorted((out / "data").glob("*.parquet"))  # two shards: 25 rows and 15
    (out / "data" / "stray.parquet").write_bytes(second.read_bytes())
    assert json.loads(run_mixer("stats", str(out), "--json").stdout)["rows"] == 40
    whole = second.read_bytes()
    hint = "\n  hint: build it again with `mixer build`\n"
    for damage, problem in (
        (lambda: second.unlink(), "listed in manifest.json, and not there"),
        (lambda: second.write_bytes(whole[:100]), f"100 bytes, where the build wrote {len(whole):,}"),
        (lambda: second.write_bytes(b"x" * len(whole)), "cannot be read as parquet ("),
    ):
        damage()
        result = run_mixer("stats", str(out))
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith(f"error: {second}: {problem}") and result.stderr.endswith(hint)
        second.write_bytes(whole)
    assert run_mixer("stats", str(out)).returncode == 0


def test_runs_with_nothing_to_list_says_where_it_looked(tmp_path):
    result = run_mixer("runs", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("no run or build directories under runs or out: `mixer build` writes out/<name>")
    assert json.loads(run_mixer("runs", "--json", cwd=tmp_path).stdout) == []
    # a folder named on the command line that is not there is a mistake, not an empty listing
    result = run_mixer("runs", "ouy", cwd=tmp_path)
    assert result.returncode == 1 and "error: ouy: not a directory" in result.stderr


def test_baseline_compares_several_runs_and_runs_lists_them(tmp_path, shared_data):
    out_a, out_b = _two_builds(tmp_path, shared_data)
    result = run_mixer("diff", str(out_b), str(out_a), str(out_a), "--baseline", str(out_a), "--format", "json")
    payload = json.loads(result.stdout)
    assert [(c["a"], c["b"]) for c in payload] == [(str(out_a), str(out_b))]
    listing = json.loads(run_mixer("runs", str(tmp_path), "--json").stdout)
    assert {r["path"] for r in listing} == {str(out_a), str(out_b)}
    first = next(r for r in listing if r["path"] == str(out_a))
    assert first["kind"] == "build" and first["rows"] == 66
    assert first["headline"] == {
        "creak_mc acc": 0.52,
        "strategyqa_mc acc": 0.5533333333333333,
        "gsm8k_local exact_match": 0.0,
    }


def test_a_setting_left_out_compares_as_its_schema_default():
    """Leaving `shuffle` out and writing `shuffle: true` is the same mix; a change from the default shows
    what the default was, not a dash that reads as "unset"."""
    base = {"name": "r", "sources": {"a": {"source": "dolly", "take": 5}}}
    explicit = {
        **base,
        "seed": 42,
        "mixture": {"shuffle": True, "decontaminate": {"benchmarks": ["gsm8k"], "n": 13}},
        "evolve": {"e": {"from": "a", "teacher": {"model": "m", "api_key_env": "OPENAI_API_KEY"}}},
    }
    implicit = {
        **base,
        "mixture": {"decontaminate": {"benchmarks": ["gsm8k"]}},
        "evolve": {"e": {"from": "a", "teacher": {"model": "m"}}},
    }
    same = compare(Side("A", explicit, None), Side("B", implicit, None)).composition
    assert same.settings == []
    changed = {**implicit, "seed": 7, "mixture": {"shuffle": False, "decontaminate": {"benchmarks": ["gsm8k"], "n": 8}}}
    assert compare(Side("A", implicit, None), Side("B", changed, None)).composition.settings == [
        "seed: 42 (default) → 7",
        "mixture.decontaminate.n: 13 (default) → 8",
        "mixture.shuffle: True (default) → False",
    ]
    extra = {**base, "sources": {"a": {"source": "dolly", "take": 5, "max_chars": 100}}}
    (row,) = compare(Side("A", base, None), Side("B", extra, None)).composition.sources
    assert row.changes == ["max_chars: — → 100"]  # no default: a dash


def test_a_build_from_the_bundled_samples_is_named_in_a_diff(tmp_path):
    """A mix built with --sample (a few dozen rows per source) compared with one built from the real data read
    as a composition change, with nothing to say why."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dolly.jsonl").write_bytes((REPO / "sources" / "samples" / "dolly.jsonl").read_bytes())
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  d: {source: dolly, take: 5}\n")
    sampled, real = tmp_path / "sampled", tmp_path / "real"
    assert run_mixer("build", str(recipe), "--sample", "--out", str(sampled)).returncode == 0
    assert run_mixer("build", str(recipe), "--data-dir", str(data), "--out", str(real)).returncode == 0
    [compared] = json.loads(run_mixer("diff", str(sampled), str(real), "--json").stdout)
    assert compared["metrics"]["warnings"] == [
        f"{sampled}: built from the bundled samples (--sample), not the sources' data"
    ]
    [both] = json.loads(run_mixer("diff", str(sampled), str(sampled), "--json").stdout)
    assert both["metrics"]["warnings"] == [
        "both sides were built from the bundled samples (--sample), not the sources' data"
    ]


def test_a_run_holds_one_score_per_task_and_a_second_models_results_are_refused(shared_data, tmp_path):
    """Attaching model_b's results to the run holding model_a's (or the same model's 3-shot beside its 0-shot)
    left two scores of each task: `mixer diff` and `mixer runs` showed whichever file sorted last. `mixer
    results add` refuses it; results put in by hand are compared with a warning naming the files."""
    lm_eval = shared_data / "lm_eval"
    run = tmp_path / "run"
    run.mkdir()
    add_results(run, [lm_eval / "model_a_0shot.json"])
    for other in ("model_b_0shot.json", "model_a_3shot.json"):
        with pytest.raises(MixerError) as refused:
            add_results(run, [lm_eval / other])
        assert refused.value.message.startswith(f"{run}: {other} scores ")
        assert "which results/model_a_0shot.json of this run scores already" in refused.value.message
        assert refused.value.hint.endswith(f"delete {run / 'results' / 'model_a_0shot.json'} first")
    assert sorted(p.name for p in (run / "results").iterdir()) == ["model_a_0shot.json"]
    add_results(run, [lm_eval / "model_a_0shot.json"])  # the same file again replaces itself

    (run / "results" / "model_b_0shot.json").write_bytes((lm_eval / "model_b_0shot.json").read_bytes())
    other = tmp_path / "other"
    other.mkdir()
    add_results(other, [lm_eval / "model_a_0shot.json"])
    warnings = compare(load_side(str(run)), load_side(str(other))).metrics.warnings
    assert (
        f"{run}: results/model_a_0shot.json and results/model_b_0shot.json score the same tasks (creak_mc, "
        "strategyqa_mc, gsm8k_local, ...): only model_b_0shot.json's are compared"
    ) in warnings


def test_a_list_of_patterns_or_benchmarks_that_differs_by_items_says_which():
    """One pattern taken out of five read as both lists whole, one after the other."""
    patterns = [r"(?i)\bOpenAI\b", r"(?i)\bChatGPT\b", r"(?i)\bClaude\b"]
    base = {"name": "r", "sources": {"a": {"source": "dolly", "take": 5}}}
    a = {**base, "mixture": {"drop_patterns": patterns, "decontaminate": {"benchmarks": ["gsm8k", "humaneval"]}}}
    b = {
        **base,
        "mixture": {
            "drop_patterns": [patterns[0], patterns[1], r"(?i)\bGemini\b"],
            "decontaminate": {"benchmarks": ["gsm8k", "humaneval", {"name": "mbpp", "path": "mbpp.jsonl"}]},
        },
    }
    assert compare(Side("A", a, None), Side("B", b, None)).composition.settings == [
        "mixture.decontaminate.benchmarks: ['gsm8k', 'humaneval'] → ['gsm8k', 'humaneval', "
        "{'name': 'mbpp', 'path': 'mbpp.jsonl'}]",  # not plain values: both lists, as before
        r"mixture.drop_patterns: added '(?i)\bGemini\b'; removed '(?i)\bClaude\b'",
    ]
    reordered = {**base, "mixture": {"drop_patterns": list(reversed(patterns))}}
    assert compare(
        Side("A", {**base, "mixture": {"drop_patterns": patterns}}, None), Side("B", reordered, None)
    ).composition.settings == [
        f"mixture.drop_patterns: {patterns} → {list(reversed(patterns))}"  # the same items: order is the change
    ]


def test_sources_listed_in_another_order_say_so():
    """Dedup keeps the copy of the source listed first: GSM8K moved above FLAN CoT kept 7,468 rows it had lost,
    and the diff showed no setting that changed."""
    cot, gsm8k = {"source": "cot", "take": 5}, {"path": "g.jsonl", "format": "alpaca", "take": "all"}
    a = {"name": "r", "sources": {"cot": cot, "gsm8k": gsm8k, "dolly": {"source": "dolly", "take": 5}}}
    b = {"name": "r", "sources": {"gsm8k": gsm8k, "cot": cot, "oasst": {"source": "oasst1", "take": 5}}}
    assert compare(Side("A", a, None), Side("B", b, None)).composition.settings == [
        "source order: cot, gsm8k → gsm8k, cot"  # the sources both have; an added or removed one is its own row
    ]
    removed = {"name": "r", "sources": {"cot": cot, "gsm8k": gsm8k}}
    assert compare(Side("A", a, None), Side("B", removed, None)).composition.settings == []


def test_a_block_or_stage_only_one_side_has_is_one_line():
    """A removed evolve block was each of its settings as `value → —`, fifteen lines for one fact."""
    block = {"from": "a", "operators": "wizardcoder", "rounds": 2, "teacher": {"model": "gpt-4o-mini"}}
    stage = {"name": "sft", "kind": "sft", "model": "m", "data": "mixture"}
    base = {"name": "r", "sources": {"a": {"source": "dolly", "take": 5}}}
    a = {**base, "evolve": {"ev": block}, "stages": [stage]}
    b = {**base, "evolve": {"ev": {**block, "rounds": 3}, "more": block}, "stages": [{**stage, "name": "dpo"}]}
    assert compare(Side("A", a, None), Side("B", b, None)).composition.settings == [
        "evolve.ev.rounds: 2 → 3",
        "evolve.more: added (from: a, operators: wizardcoder, rounds: 2, teacher.model: gpt-4o-mini)",
        "stages.sft: removed",
        "stages.dpo: added (kind: sft, model: m, data: mixture)",
    ]
    assert "evolve.more: removed" in compare(Side("A", b, None), Side("B", a, None)).composition.settings


def test_what_a_build_counted_is_written_with_thousands_separators():
    """`built.available: 33333 → 25865` beside a table of `3,000`; a recipe's own values stay as written."""
    recipe = {"name": "r", "sources": {"gsm8k": {"path": "g.jsonl", "format": "alpaca", "take": "all"}}}
    before = {"read": 7473, "available": 0, "dedup_near": 7469}
    after = {"read": 7473, "available": 7468, "dedup_near": 1}
    a = Side("A", recipe, {"gsm8k": 0}, pools={"gsm8k": before}, quality={"est_tokens": 340786})
    b = Side(
        "B",
        {**recipe, "sources": {"gsm8k": {**recipe["sources"]["gsm8k"], "max_chars": 20000}}},
        {"gsm8k": 7468},
        pools={"gsm8k": after},
        quality={"est_tokens": 1274315},
    )
    composition = compare(a, b).composition
    assert composition.sources[0].changes == [
        "max_chars: — → 20000",
        "built.available: 0 → 7,468",
        "built.removed.dedup_near: 7,469 → 1",
    ]
    assert composition.settings == ["built.est_tokens: 340,786 → 1,274,315"]


def test_brackets_in_what_is_printed_are_text_not_style_tags(tmp_path):
    """A drop pattern `[/]x` made `mixer diff` fail with rich's MarkupError, and `[Aa]s an AI` lost its `[Aa]`."""
    (tmp_path / "a.yaml").write_text(
        "name: p\nsources:\n  a: {source: dolly, take: 5}\nmixture: {drop_patterns: ['[Aa]s an AI']}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "name: p\nsources:\n  a: {source: dolly, take: 5, drop_patterns: ['[/]x', '[bold]y']}\n"
        "mixture: {drop_patterns: ['[Aa]s an AI', '[Ll]anguage model']}\n"
    )
    result = run_mixer("diff", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "drop_patterns: — → ['[/]x', '[bold]y']" in result.stdout
    assert "mixture.drop_patterns: added '[Ll]anguage model'" in result.stdout


def test_a_pipe_in_a_markdown_table_cell_is_escaped(tmp_path):
    """`(chatgpt|openai)` in a changes cell ended the cell: the row had one column too many."""
    (tmp_path / "a.yaml").write_text("name: p\nsources:\n  a: {source: dolly, take: 5}\n")
    (tmp_path / "b.yaml").write_text(
        "name: p\nsources:\n  a: {source: dolly, take: 5, drop_patterns: ['(?i)(chatgpt|openai)']}\n"
    )
    result = run_mixer("diff", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), "--format", "markdown")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| a |"))
    assert row == "| a | changed | — | — | — | — | drop_patterns: — → ['(?i)(chatgpt\\|openai)'] |"
