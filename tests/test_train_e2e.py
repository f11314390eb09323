"""Real `accelerate launch` runs on CPU: the tiny recipe's SFT → DPO on 2 processes, and resume after kill -9."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch", reason="training tests need torch (pip install torch==2.13.0)")

from conftest import REPO, run_mixer, write_recipe

# a randomly initialised 2-layer Llama and a tokenizer trained on the stage's data: seconds per run on CPU
TINY_LLAMA = (
    "{init: llama, config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, "
    "num_key_value_heads: 2}, tokenizer: {vocab_size: 300}}"
)


def metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def train_to_end(recipe, runs, cwd, timeout=300):
    """`mixer train RECIPE --runs-dir RUNS`, which must succeed; its output (the end of it shown if not)."""
    result = run_mixer("train", str(recipe), "--runs-dir", str(runs), cwd=cwd, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_tiny_recipe_sft_then_dpo_on_two_processes(tmp_path):
    runs = tmp_path / "runs"
    result = train_to_end(REPO / "recipes" / "tiny.yaml", runs, tmp_path, timeout=600)

    sft = json.loads((runs / "sft" / "run.json").read_text())
    assert sft["status"] == "done"
    assert sft["metrics"]["world_size"] == 2  # two processes trained together (gloo)
    assert sft["accelerate_config"]["num_processes"] == 2
    assert sft["data"]["manifest_sha256"] and sft["data"]["rows"] > 100
    assert sft["versions"]["torch"].startswith("2.")
    sft_log = metrics(runs / "sft" / "metrics.jsonl")
    assert len(sft_log) == sft["metrics"]["steps"] >= 10
    first, last = sft_log[0]["loss"], sft_log[-1]["loss"]
    assert last < first - 0.5, (first, last)  # the SFT loss goes down
    assert (runs / "sft" / "final" / "model.safetensors").is_file()

    dpo = json.loads((runs / "dpo" / "run.json").read_text())
    assert dpo["status"] == "done" and dpo["parent_stage"] == "sft"
    assert dpo["model"] == str(runs / "sft" / "final")
    assert f"loaded model from {runs / 'sft' / 'final'}" in result.stdout
    dpo_log = metrics(runs / "dpo" / "metrics.jsonl")
    # the policy starts equal to its reference (both the SFT checkpoint): loss is exactly log 2
    assert dpo_log[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert dpo_log[-1]["loss"] < dpo_log[0]["loss"]
    assert {"rewards/accuracy", "rewards/margin", "rewards/chosen", "rewards/rejected"} <= set(dpo_log[-1])


def test_dpo_with_precomputed_reference_log_probs_trains_as_with_a_frozen_copy(tmp_path):
    """`reference: precomputed` scores every pair with the starting model once, then keeps one model in memory;
    the losses must be those of the frozen copy, step by step. Two processes: each scores its share of the pairs
    and gets the other's scores."""
    samples = REPO / "sources" / "samples"
    losses, held_out = {}, {}
    for reference, port in (("model", 29533), ("precomputed", 29534)):
        recipe = write_recipe(
            tmp_path,
            f"""
            name: dpo-{reference}
            sources:
              a: {{path: {samples}/alpaca.json, format: alpaca, take: all}}
            stages:
              - name: dpo
                kind: dpo
                model: {TINY_LLAMA}
                data: {{path: {samples}/ultrafeedback.jsonl, format: preference, take: all}}
                eval: {{rows: 4}}
                reference: {reference}
                max_seq_length: 256
                hyperparameters: {{learning_rate: 1.0e-3, max_steps: 6, per_device_batch_size: 2,
                                  gradient_accumulation_steps: 1, warmup_ratio: 0.0, seed: 1}}
                launcher: {{num_processes: 2, mixed_precision: "no", main_process_port: {port}}}
            """,
            name=f"{reference}.yaml",
        )
        runs = tmp_path / f"runs-{reference}"
        train_to_end(recipe, runs, tmp_path)
        assert json.loads((runs / "dpo" / "stage.json").read_text())["reference"] == reference
        log = metrics(runs / "dpo" / "metrics.jsonl")
        losses[reference] = [step["loss"] for step in log if "loss" in step]
        held_out[reference] = [
            (step["eval_loss"], step["eval_rewards/accuracy"]) for step in log if "eval_loss" in step
        ]
    assert len(losses["model"]) == 6 and losses["model"][0] == pytest.approx(math.log(2), abs=1e-5)
    assert losses["precomputed"] == pytest.approx(losses["model"], abs=1e-5)
    # the held-out pairs are scored against the same reference, precomputed for them too
    assert len(held_out["model"]) == 2  # at the end of the first epoch (shorter with two processes) and of training
    assert [list(scores) for scores in held_out["precomputed"]] == [
        pytest.approx(list(scores), abs=1e-5) for scores in held_out["model"]
    ]
    assert losses["model"][-1] < losses["model"][0]


def test_training_settings_take_effect(tmp_path):
    """The hyperparameters a recipe sets must change the run: the schedule's learning rates, how often it logs
    and saves, how many checkpoints it keeps, the chat template it trains and ships with; a tracker that is not
    installed is named rather than skipped in silence."""
    from importlib.util import find_spec

    from transformers import AutoTokenizer

    samples = REPO / "sources" / "samples"
    template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'assistant' %}"
        "{{ eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    recipe = write_recipe(
        tmp_path,
        f"""
        name: settings
        sources:
          a: {{path: {samples}/alpaca.json, format: alpaca, take: all}}
        output: {{dir: {tmp_path}/out}}
        stages:
          - name: sft
            kind: sft
            model: {TINY_LLAMA}
            data: mixture
            chat_template: {json.dumps(template)}
            max_seq_length: 128
            hyperparameters: {{learning_rate: 1.0e-3, max_steps: 6, per_device_batch_size: 2,
                              gradient_accumulation_steps: 1, warmup_ratio: 0.0, seed: 1, lr_scheduler: cosine,
                              save_steps: 2, save_total_limit: 2, logging_steps: 2, gradient_checkpointing: true,
                              weight_decay: 0.1, max_grad_norm: 0.5, report_to: [wandb]}}
            launcher: {{num_processes: 1, mixed_precision: "no"}}
        """,
    )
    runs = tmp_path / "runs"
    result = train_to_end(recipe, runs, tmp_path)
    log = metrics(runs / "sft" / "metrics.jsonl")
    assert [row["step"] for row in log] == [2, 4, 6]
    # cosine from 1e-3 over 6 steps: 0.5 * (1 + cos(pi * k / 6)) after k steps (linear would give 2/3, 1/3, 0)
    assert [row["lr"] for row in log] == pytest.approx([7.5e-4, 2.5e-4, 0.0])
    assert sorted(p.name for p in (runs / "sft" / "checkpoints").iterdir()) == ["step-0000004", "step-0000006"]
    # the model ships its template: transformers 4.45 writes it into tokenizer_config.json, newer releases into
    # chat_template.jinja
    assert AutoTokenizer.from_pretrained(runs / "sft" / "final").chat_template == template
    if find_spec("wandb") is None:
        assert "warning: report_to wandb: not installed, so this run does not report to it" in result.stdout
    assert "gradient_checkpointing_enable` is deprecated" not in result.stdout + result.stderr


def test_killed_training_resumes_from_last_checkpoint(tmp_path):
    samples = REPO / "sources" / "samples"
    recipe = write_recipe(
        tmp_path,
        f"""
        name: resume
        sources:
          alpaca: {{path: {samples}/alpaca.json, format: alpaca, take: all}}
        output: {{dir: {tmp_path}/out}}
        stages:
          - name: sft
            kind: sft
            model: {{init: llama, tokenizer: {{vocab_size: 400}}}}
            data: mixture
            max_seq_length: 256
            hyperparameters: {{learning_rate: 1.0e-3, max_steps: 80, save_steps: 5, per_device_batch_size: 2,
                              gradient_accumulation_steps: 1, warmup_ratio: 0.0}}
            launcher: {{num_processes: 1, mixed_precision: "no"}}
        """,
    )
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "mixer", "train", str(recipe), "--runs-dir", str(runs)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    checkpoints = runs / "sft" / "checkpoints"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and not list(checkpoints.glob("step-*/trainer_state.json")):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its trainer process, mid-run
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (runs / "sft" / "metrics.json").exists(), "training finished before the kill; make it longer"
    done = sorted(checkpoints.glob("step-*/trainer_state.json"))
    resumed_from = json.loads(done[-1].read_text())["step"]

    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"resuming from {done[-1].parent} (step {resumed_from})" in result.stdout
    steps = [r["step"] for r in metrics(runs / "sft" / "metrics.jsonl")]
    restart = len(steps) - 1 - steps[::-1].index(resumed_from + 1)  # the resumed run's lines come last
    second_run = steps[restart:]
    assert steps[:restart] == list(range(1, restart + 1))  # the killed run, which got past its checkpoint
    assert second_run == list(range(resumed_from + 1, 81))
    assert json.loads((runs / "sft" / "metrics.json").read_text())["steps"] == 80


def test_the_test_split_is_scored_at_the_end_of_every_epoch_on_two_processes(tmp_path):
    """`mixture.eval` holds out rows as the test split; an SFT stage on the mixture trains on the rest and logs
    the held-out rows' loss after each epoch (gathered from both processes)."""
    samples = REPO / "sources" / "samples"
    recipe = write_recipe(
        tmp_path,
        f"""
        name: held
        sources:
          a: {{path: {samples}/alpaca.json, format: alpaca, take: all}}
        mixture: {{eval: {{rows: 6}}}}
        output: {{dir: {tmp_path}/out}}
        stages:
          - name: sft
            kind: sft
            model: {TINY_LLAMA}
            data: mixture
            max_seq_length: 128
            hyperparameters: {{learning_rate: 3.0e-3, epochs: 3, per_device_batch_size: 4,
                              gradient_accumulation_steps: 1, warmup_ratio: 0.0, seed: 1, logging_steps: 100}}
            launcher: {{num_processes: 2, mixed_precision: "no", main_process_port: 29531}}
        """,
    )
    runs = tmp_path / "runs"
    result = train_to_end(recipe, runs, tmp_path)
    run = json.loads((runs / "sft" / "run.json").read_text())
    trained = run["data"]["rows"]
    assert f"{trained} of {trained} conversations keep assistant tokens" in result.stdout
    scored = [row for row in metrics(runs / "sft" / "metrics.jsonl") if "eval_loss" in row]
    per_epoch = math.ceil(math.ceil(trained / 2) / 4)  # two processes, four rows each per step
    assert [row["step"] for row in scored] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    assert all(0 < row["eval_loss"] < 20 for row in scored)
    assert scored[-1]["eval_loss"] < scored[0]["eval_loss"]
    assert (run["metrics"]["eval_loss"], run["metrics"]["eval_rows"]) == (scored[-1]["eval_loss"], 6)
    assert f"test split loss {scored[-1]['eval_loss']:.4g} (" in result.stdout


def test_a_dpo_stage_scores_its_own_held_out_pairs_each_epoch_on_two_processes(tmp_path):
    """A stage's `eval` holds out the last pairs of its data's selection (never trained on) and scores them at
    the end of every epoch, gathered from both processes: the DPO loss, reward accuracy and margin."""
    import polars as pl

    samples = REPO / "sources" / "samples"
    recipe = write_recipe(
        tmp_path,
        f"""
        name: dpo-held
        sources:
          a: {{path: {samples}/alpaca.json, format: alpaca, take: all}}
        stages:
          - name: dpo
            kind: dpo
            model: {TINY_LLAMA}
            data: {{path: {samples}/ultrafeedback.jsonl, format: preference, take: all}}
            eval: {{rows: 5}}
            max_seq_length: 256
            hyperparameters: {{learning_rate: 1.0e-3, epochs: 2, per_device_batch_size: 2,
                              gradient_accumulation_steps: 1, warmup_ratio: 0.0, seed: 1, logging_steps: 100}}
            launcher: {{num_processes: 2, mixed_precision: "no", main_process_port: 29533}}
        """,
    )
    runs = tmp_path / "runs"
    result = train_to_end(recipe, runs, tmp_path)
    train = pl.read_parquet(runs / "dpo" / "data" / "train.parquet")
    test = pl.read_parquet(runs / "dpo" / "data" / "test.parquet")
    assert (train.height, test.height) == (19, 5) and not set(train["id"]) & set(test["id"])
    run = json.loads((runs / "dpo" / "run.json").read_text())
    assert (run["data"]["rows"], run["data"]["eval_rows"]) == (19, 5) and len(run["data"]["test_split"]) == 12
    scored = [row for row in metrics(runs / "dpo" / "metrics.jsonl") if "eval_loss" in row]
    per_epoch = math.ceil(math.ceil(19 / 2) / 2)  # two processes, two pairs each per step
    assert [row["step"] for row in scored] == [per_epoch, 2 * per_epoch]
    for row in scored:
        assert 0 <= row["eval_rewards/accuracy"] <= 1 and row["eval_loss"] > 0
        assert {"eval_rewards/margin", "eval_rewards/chosen", "eval_rewards/rejected"} <= set(row)
    final = run["metrics"]
    assert (final["eval_loss"], final["eval_rewards/accuracy"], final["eval_rows"]) == (
        scored[-1]["eval_loss"],
        scored[-1]["eval_rewards/accuracy"],
        5,
    )
    assert f"reward accuracy {final['eval_rewards/accuracy']:.1%}" in result.stdout
