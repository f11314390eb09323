"""Ingest evaluation outputs into one table: lm-evaluation-harness v0.4, AlpacaEval leaderboards, plain files.

Every score keeps what decides whether two scores are comparable: shots, chat template, judge, harness and
task versions, sample limit. `mixer diff` warns when those differ instead of comparing silently.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixer.errors import MixerError, first_of, shown_value

RESULTS_DIR = "results"
CHOICES_FILE = "sources.json"  # which model row of a leaderboard belongs to this run


# what a training run scores on its own held-out rows (run.json metrics): (metric, higher is better)
TRAINING_METRICS = (("eval_loss", False), ("eval_rewards/accuracy", True))


def held_out_scores(metrics: dict[str, Any] | None) -> dict[str, tuple[float, bool]]:
    """The `TRAINING_METRICS` a run recorded as numbers: metric -> (value, higher is better)."""
    found = metrics or {}
    return {
        metric: (float(value), higher)
        for metric, higher in TRAINING_METRICS
        if isinstance(value := found.get(metric), int | float) and not isinstance(value, bool)
    }


@dataclass(frozen=True)
class Score:
    task: str
    metric: str
    value: float
    stderr: float | None = None
    n: int | None = None
    higher_is_better: bool = True
    group: str | None = None  # set on subtasks of an lm-eval group
    is_group: bool = False
    source: str = ""
    eval_config: dict[str, Any] = field(default_factory=dict)
    unit: str | None = None  # "proportion" (0-1) or "percent" (0-100) where the format says so; see UNITS

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# percentage points per unit: what lets `mixer diff` average an lm-eval accuracy (0.52) with an AlpacaEval win
# rate (84.2) without the win rate's scale drowning the accuracy's
UNITS = {"proportion": 100.0, "percent": 1.0}

# lm-eval metrics that are a share of items, 0-1 (IFEval's `*_acc` and `pass@k` too); bleu, chrf and the
# perplexities have other scales
LM_EVAL_PROPORTIONS = frozenset({"acc", "acc_norm", "acc_mutual_info", "exact_match", "em", "f1", "mc1", "mc2"})


# metrics where lower is better (lm-eval's own, and a loss), for files that do not say: lm-eval 0.3 wrote no
# `higher_is_better`, plain files have none, and a perplexity read as higher-is-better has its Δ called worse
LOWER_IS_BETTER = frozenset(
    {"perplexity", "ppl", "word_perplexity", "byte_perplexity", "bits_per_byte", "ter", "brier_score", "loss"}
)


def higher_is_better(metric: str) -> bool:
    """The direction of a metric whose file does not give it."""
    return not (metric in LOWER_IS_BETTER or metric.endswith(("_perplexity", "_loss")))


def _lm_eval_unit(base: str, value: float) -> str | None:
    share = base in LM_EVAL_PROPORTIONS or base.endswith("_acc") or base.startswith("pass@")
    return "proportion" if share and 0.0 <= value <= 1.0 else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None  # lm-eval writes "N/A" for a stderr it did not compute
    return number if math.isfinite(number) else None


def _note_unread(unread: list[str], where: str, value: Any) -> None:
    """A score written but not as a number (`"abc"`, NaN) is left out; `unread` collects it so `mixer results add`
    can say so. An empty cell or null is no score at all (older models' rows of a leaderboard have fewer)."""
    if value is not None and not (isinstance(value, str) and not value.strip()):
        unread.append(f"{where} is {shown_value(value, 40)}")


def _section(data: Any, key: str, names: bool = False) -> dict[str, Any]:
    """`data[key]` when it is a mapping, else empty: a results file edited by hand or written by another tool
    may hold anything there, and a missing section only means less eval-config detail, not a crash. With
    `names`, a list of names (`groups` as some versions write it) counts too."""
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, dict):
        return value
    if names and isinstance(value, list):
        return {item: None for item in value if isinstance(item, str)}
    return {}


def _count(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number >= 1 else None


def _lm_eval_metric(key: str) -> tuple[str, str]:
    """'acc,none' → ('acc', 'acc'); 'exact_match,strict-match' → ('exact_match', 'exact_match[strict-match]');
    'acc' (lm-eval 0.3, before filters) → ('acc', 'acc')."""
    if "," not in key:
        return key, key
    name, filt = key.split(",", 1)
    return name, name if filt == "none" else f"{name}[{filt}]"


def parse_lm_eval(data: dict[str, Any], source: str, unread: list[str]) -> list[Score]:
    """lm-evaluation-harness results JSON: v0.4 (`results`, `groups`, `n-shot`, `configs`, `config`, metric keys
    `acc,none`) and v0.3 (`results`, `versions`, `config.num_fewshot`, metric keys `acc`), which older papers
    and leaderboards still publish."""
    config = _section(data, "config")
    groups = set(_section(data, "groups", names=True))
    parent = {
        sub: group
        for group, subs in _section(data, "group_subtasks").items()
        if isinstance(subs, list)
        for sub in subs
        if isinstance(sub, str)
    }
    scores = []
    for task, metrics in _section(data, "results").items():
        if not isinstance(metrics, dict):
            raise MixerError(f"{source}: results.{task} must map metric names to numbers, not {type(metrics).__name__}")
        task_config = _section(_section(data, "configs"), task)
        eval_config = {
            "harness": "lm-eval",
            "harness_version": data.get("lm_eval_version"),
            "task_version": _section(data, "versions").get(task),
            "shots": _section(data, "n-shot").get(task, task_config.get("num_fewshot", config.get("num_fewshot"))),
            "chat_template": data.get("chat_template_sha") or ("none" if data.get("chat_template") is None else "set"),
            "system_instruction": data.get("system_instruction_sha"),
            "fewshot_as_multiturn": data.get("fewshot_as_multiturn"),
            "limit": config.get("limit"),
            "judge": None,
        }
        samples = _section(_section(data, "n-samples"), task)
        n = _count(samples.get("effective")) or _count(metrics.get("sample_len"))
        better = _section(_section(data, "higher_is_better"), task)
        filtered = any("," in key for key in metrics)  # v0.4; v0.3's keys are bare metric names
        for key, value in metrics.items():
            if filtered and "," not in key:  # v0.4's alias, sample_len, sample_count
                continue
            base, metric = _lm_eval_metric(key)
            if base.endswith("_stderr"):
                continue
            number = _number(value)
            if number is None:
                _note_unread(unread, f"{task} {metric}", value)
                continue
            stderr_key = f"{base}_stderr" + key[len(base) :]
            scores.append(
                Score(
                    task=task,
                    metric=metric,
                    value=number,
                    stderr=_number(metrics.get(stderr_key)),
                    n=n,
                    higher_is_better=bool(better.get(base, higher_is_better(base))),
                    group=parent.get(task),
                    is_group=task in groups,
                    source=source,
                    eval_config=eval_config,
                    unit=_lm_eval_unit(base, number),
                )
            )
    return scores


ALPACA_METRICS = (
    ("win_rate", "standard_error"),
    ("length_controlled_winrate", "lc_standard_error"),
    ("discrete_win_rate", None),
)


def _alpaca_task(source: str) -> tuple[str, str]:
    """(task, judge) from the leaderboard file name, e.g. weighted_alpaca_eval_gpt4_turbo_leaderboard.csv."""
    judge = Path(source).name.split(".")[0].removesuffix("_leaderboard")
    return ("alpaca_eval_2" if "gpt4_turbo" in judge else "alpaca_eval"), judge


def parse_alpaca_row(row: dict[str, Any], source: str, unread: list[str]) -> list[Score]:
    task, judge = _alpaca_task(source)
    n = _number(row.get("n_total"))
    eval_config = {
        "harness": "alpaca_eval",
        "harness_version": None,
        "task_version": None,
        "shots": 0,
        "chat_template": None,
        "limit": None,
        "judge": judge,
    }
    scores = []
    for metric, stderr in ALPACA_METRICS:
        value = _number(row.get(metric))
        if value is None:
            _note_unread(unread, f"{task} {metric}", row.get(metric))
        else:
            scores.append(
                Score(
                    task=task,
                    metric=metric,
                    value=value,
                    stderr=_number(row.get(stderr)) if stderr else None,
                    n=int(n) if n else None,
                    source=source,
                    eval_config=eval_config,
                    unit="percent" if 0.0 <= value <= 100.0 else None,
                )
            )
    return scores


def _alpaca_rows(path: Path) -> list[tuple[str | None, dict[str, Any]]]:
    """(model, row) in the leaderboard's order. A CSV names each row in its first column, a JSON object by its
    keys, a JSON list by a row's `name`, `model` or `generator` (None when it has none of them)."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            key = reader.fieldnames[0] if reader.fieldnames else ""
            return [(row[key], row) for row in reader]
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        return [(_row_name(row), row) for row in data]
    return list(data.items())


def _row_name(row: dict[str, Any]) -> str | None:
    name = row.get("name") or row.get("model") or row.get("generator")
    return None if name is None else str(name)


def _leaderboard_row(path: Path, model: str | None) -> dict[str, Any]:
    """The row of `model`, or of the leaderboard's one model. A row is found by its name alone: a list's
    position is no model's name, and two rows of one name are two results, so neither is taken."""
    rows = _alpaca_rows(path)
    if model is None and len(rows) == 1:
        return rows[0][1]
    names = list(dict.fromkeys(name for name, _ in rows if name is not None))
    if not names:
        raise MixerError(
            f"{path}: a leaderboard of {len(rows)} rows, none of which names its model (name, model or generator)",
            "add each row's model name, then pick this run's with --model NAME",
        )
    if model is None:
        raise MixerError(
            f"{path}: a leaderboard with {len(rows)} models; which one is this run?", _model_hint(None, names)
        )
    found = [row for name, row in rows if name == model]
    if not found:
        raise MixerError(f"{path}: no model {model!r} in the leaderboard", _model_hint(model, names))
    if len(found) > 1:
        raise MixerError(
            f"{path}: model {model!r} has {len(found)} rows in the leaderboard; which one is this run?",
            "keep the row of this run's results and delete the others (or give each its own name)",
        )
    return found[0]


FORMATS_HINT = (
    "results are read from lm-evaluation-harness JSON ({results: {task: {'acc,none': 0.5}}}), AlpacaEval "
    "leaderboards (win_rate) and plain {task: {metric: value}} JSON/YAML"
)


def parse_plain(data: dict[str, Any], source: str, unread: list[str]) -> list[Score]:
    """{task: {metric: value, metric_stderr: value, n: N}}."""
    scores = []
    for task, metrics in data.items():
        if not isinstance(metrics, dict):
            raise MixerError(f"{source}: task {task!r} must map metric names to numbers", FORMATS_HINT)
        n = _number(metrics.get("n"))
        for key, value in metrics.items():
            if key == "n" or key.endswith("_stderr"):
                continue
            number = _number(value)
            if number is None:
                _note_unread(unread, f"{task} {key}", value)
                continue
            scores.append(
                Score(
                    task=task,
                    metric=key,
                    value=number,
                    stderr=_number(metrics.get(f"{key}_stderr")),
                    n=int(n) if n else None,
                    higher_is_better=higher_is_better(key),
                    source=source,
                    eval_config={"harness": "plain", "shots": None, "judge": None},
                )
            )
    return scores


def is_alpaca(path: Path) -> bool:
    if path.suffix.lower() == ".csv":
        return True
    if path.suffix.lower() != ".json":
        return False
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = data if isinstance(data, list) else list(data.values()) if isinstance(data, dict) else []
    return bool(rows) and all(isinstance(r, dict) and "win_rate" in r for r in rows)


def _model_hint(model: str | None, names: list[str]) -> str:
    """The leaderboard's names nearest to a mistyped `--model` (case aside), else a few of them."""
    by_folded = {name.casefold(): name for name in names}
    close = difflib.get_close_matches(model.casefold(), list(by_folded), n=3, cutoff=0.6) if model else []
    if close:
        return f"did you mean {', '.join(repr(by_folded[c]) for c in close)}? (--model NAME)"
    return f"pass --model NAME (e.g. {', '.join(names[:8])}, ...)"


def parse_file(path: Path, model: str | None = None, unread: list[str] | None = None) -> list[Score]:
    """Scores in one results file; `model` picks the row of a multi-model leaderboard. Scores written but not
    as numbers are left out, and said in `unread` when it is given."""
    found: list[str] = []
    scores = _parse_file(path, model, found)
    if not scores:
        not_numbers = f" ({first_of(found, 3)}: not numbers)" if found else ""
        raise MixerError(f"{path}: no scores in this file{not_numbers}", FORMATS_HINT)
    if unread is not None:
        unread += found
    return scores


def _parse_file(path: Path, model: str | None, unread: list[str]) -> list[Score]:
    source = path.name
    if not path.is_file():
        raise MixerError(f"{path}: results file not found")
    try:
        if is_alpaca(path):
            return parse_alpaca_row(_leaderboard_row(path, model), source, unread)
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MixerError(f"{path}: not a results file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise MixerError(f"{path}: expected a JSON/YAML object")
    if isinstance(data.get("results"), dict):
        return parse_lm_eval(data, source, unread)
    return parse_plain(data, source, unread)


def _choices(results_dir: Path) -> dict[str, dict[str, Any]]:
    path = results_dir / CHOICES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def results_in(path: Path) -> Path:
    """`path`, or the one lm-eval results file in the folder `path` (lm-eval writes `--output_path OUT` as
    OUT/<model>/results_<time>.json, and OUT is what people pass)."""
    if not path.is_dir():
        return path
    found = sorted(path.rglob("results*.json"))
    if len(found) == 1:
        return found[0]
    hint = "pass the results file of this run (lm-eval writes one per run: OUTPUT/<model>/results_<time>.json)"
    if not found and (others := sorted(path.rglob("*.json"))):  # results files renamed, or several runs' kept
        hint = f"it holds {len(others)} other JSON file(s) ({_listed(others, path)}): pass the one of this run"
    raise MixerError(
        f"{path}: a folder with {len(found)} lm-eval results files" + (f" ({_listed(found, path)})" if found else ""),
        hint,
    )


def _listed(files: list[Path], folder: Path, most: int = 5) -> str:
    return ", ".join(str(f.relative_to(folder)) for f in files[:most]) + (" ..." if len(files) > most else "")


def add_results(
    run_dir: Path, files: list[Path], model: str | None = None, unread: list[str] | None = None
) -> list[Score]:
    """Check each file parses, then copy it into RUN_DIR/results/ (remembering the leaderboard model). A folder
    stands for the one lm-eval results file inside it. Scores left out as not numbers go to `unread`, each
    after its file's name."""
    _require_dir(run_dir)
    parsed = []
    for file in map(results_in, files):
        found: list[str] = []
        parsed.append((file, parse_file(file, model, found)))
        if unread is not None:
            unread += [f"{file.name}: {entry}" for entry in found]
    _refuse_second_scores(run_dir, parsed)
    target = run_dir / RESULTS_DIR
    target.mkdir(exist_ok=True)
    choices = _choices(target)
    for file, _ in parsed:
        if (target / file.name).resolve() != file.resolve():  # already among the run's results: nothing to copy
            shutil.copyfile(file, target / file.name)
        if model is not None and is_alpaca(file):
            choices[file.name] = {"model": model}
    if choices:
        (target / CHOICES_FILE).write_text(json.dumps(choices, indent=2) + "\n", encoding="utf-8")
    return [s for _, scores in parsed for s in scores]


def _refuse_second_scores(run_dir: Path, parsed: list[tuple[Path, list[Score]]]) -> None:
    """A run holds one score per task and metric: another model's results (or the same model's with other
    shots) attached to it replaced the first file's scores in `mixer diff` and `mixer runs`, by file name order.
    A file of the same name replaces the one attached before."""
    adding = {file.name for file, _ in parsed}
    held = {(s.task, s.metric): s.source for s in run_scores(run_dir) if s.source not in adding}
    for file, scores in parsed:
        for score in scores:
            if (score.task, score.metric) in held:
                raise MixerError(
                    f"{run_dir}: {file.name} scores {score.task} {score.metric}, which "
                    f"{RESULTS_DIR}/{held[(score.task, score.metric)]} of this run scores already; a run holds one "
                    "score per task and metric",
                    "attach each model's (or each setting's: shots, harness) results to its own run folder; to "
                    f"replace the results, delete {run_dir / RESULTS_DIR / held[(score.task, score.metric)]} first",
                )
        held.update({(s.task, s.metric): file.name for s in scores})


def scored_twice(run_dir: Path, scores: list[Score]) -> list[str]:
    """Results files of one run that score the same task and metric (put in its results folder by hand; `mixer
    results add` refuses them): only one score of each is compared, which should be said."""
    files: dict[tuple[str, str], list[str]] = {}
    for score in scores:
        files.setdefault((score.task, score.metric), []).append(score.source)
    shared: dict[tuple[str, ...], list[str]] = {}  # the files scoring a task twice, and those tasks
    for (task, _), sources in files.items():
        if len(set(sources)) > 1 and task not in (tasks := shared.setdefault(tuple(sources), [])):
            tasks.append(task)
    return [
        f"{run_dir}: {' and '.join(f'{RESULTS_DIR}/{name}' for name in sources)} score the same tasks "
        f"({', '.join(tasks[:3])}{', ...' if len(tasks) > 3 else ''}): only {sources[-1]}'s are compared"
        for sources, tasks in shared.items()
    ]


def _require_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        from mixer.runs import instead_of  # runs reads scores through this module

        hint = instead_of(run_dir) or "give a run directory (runs/<recipe>/<stage>) or a build output"
        raise MixerError(f"{run_dir}: not a directory", hint)


def run_scores(run_dir: Path, *, must_exist: bool = False) -> list[Score]:
    """Every score in RUN_DIR/results/ (added with `mixer results add` or dropped there by hand). With
    `must_exist`, a RUN_DIR that is not there is an error (`mixer results show` of a mistyped path showed an
    empty table); `mixer runs` and `mixer diff` list directories that simply have no results yet."""
    if must_exist:
        _require_dir(run_dir)
    folder = run_dir / RESULTS_DIR
    if not folder.is_dir():
        return []
    choices = _choices(folder)
    scores = []
    for path in sorted(folder.iterdir()):
        if path.name == CHOICES_FILE or path.suffix.lower() not in (".json", ".yaml", ".yml", ".csv"):
            continue
        scores += parse_file(path, (choices.get(path.name) or {}).get("model"))
    return scores
