"""Trainer building blocks: label masking, packing boundaries, DPO loss by hand, launcher files, stage rules."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml

torch = pytest.importorskip("torch", reason="training tests need torch (pip install torch==2.13.0)")

from transformers import AutoTokenizer  # noqa: E402

from mixer.recipe import Launcher  # noqa: E402
from mixer.train.data import IGNORE, as_rows, collate, pack, preference_example, sft_example  # noqa: E402
from mixer.train.dpo import dpo_loss, sequence_logps  # noqa: E402
from mixer.train.init_model import train_tokenizer  # noqa: E402
from mixer.train.launch import accelerate_config, deepspeed_config, slurm_script  # noqa: E402
from mixer.validate import validate_file  # noqa: E402

from conftest import REPO, run_mixer, write_recipe  # noqa: E402

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And three plus three?"},
    {"role": "assistant", "content": "Six, as before."},
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [m["content"] for m in CONVERSATION] * 20 + ["the quick brown fox jumps over the lazy dog"] * 20
    return train_tokenizer(texts, vocab_size=300)


def test_the_random_models_tokenizer_decodes_text_as_written_in_every_transformers_release(tokenizer, tmp_path):
    text = "Sum it : 2 , 3 . Done ! Isn't it ?"
    tokenizer.save_pretrained(tmp_path)
    for loaded in (tokenizer, AutoTokenizer.from_pretrained(tmp_path)):
        assert loaded.decode(loaded(text)["input_ids"]) == text


def test_only_assistant_tokens_carry_labels_multi_turn(tokenizer):
    ids, labels = sft_example(tokenizer, CONVERSATION, max_len=512)
    assert len(ids) == len(labels)
    labelled = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(labelled) == "Four.</s>\nSix, as before.</s>\n"
    unlabelled = tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label == IGNORE])
    for text in ("Be brief.", "What is two plus two?", "And three plus three?", "<|assistant|>"):
        assert text in unlabelled
    assert all(label in (IGNORE, i) for i, label in zip(ids, labels, strict=True))


def test_a_template_that_refuses_a_system_turn_is_named_with_the_fix_not_a_jinja_traceback(tokenizer):
    """Gemma's template raises on a system turn: a recipe's `system:` then failed every worker with a jinja
    traceback, and `mixer train` said the stage resumes from its checkpoints."""
    before = tokenizer.chat_template
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ m['content'] + eos_token }}{% endfor %}"
    )
    try:
        with pytest.raises(SystemExit) as refused:
            sft_example(tokenizer, CONVERSATION, 64)
    finally:
        tokenizer.chat_template = before
    assert str(refused.value) == (
        "the chat template refused a conversation of turns system, user, assistant, user, assistant: System role not "
        "supported; this model's template takes no system turn: drop `system:` from the recipe's sources (or the "
        "rows that have one), or give the stage a chat_template that takes it"
    )


def test_mixer_train_stops_before_launching_when_the_template_refuses_a_conversation(tmp_path, monkeypatch):
    """The same refusal, found before any worker starts: one conversation of each shape of turns is rendered in
    the parent, so `mixer train` says it with a hint instead of every worker failing after loading the model."""
    import mixer.train.stages as stages
    from mixer.build import Options
    from mixer.errors import MixerError

    recipe = _one_stage_recipe(tmp_path)
    refusing = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"
    text = recipe.read_text().replace("format: alpaca, take: 10}", 'format: alpaca, take: 10, system: "Be brief."}')
    recipe.write_text(text.replace("data: mixture,", f"data: mixture, chat_template: {json.dumps(refusing)},"))
    launched = []
    monkeypatch.setattr(stages, "run_to_end", lambda command: launched.append(command) or 0)
    with pytest.raises(MixerError) as refused:
        stages.train_recipe(
            recipe, runs_dir=tmp_path / "runs", options=Options(progress=False, cache_dir=tmp_path / "c")
        )
    assert refused.value.message == (
        "stage sft: the chat template refused a conversation of turns system, user, assistant: System role not supported"
    )
    assert refused.value.hint.startswith("this model's template takes no system turn: drop `system:`")
    assert launched == [] and not (tmp_path / "runs" / "sft" / "run.json").exists()
    with pytest.raises(MixerError) as refused:  # and before an sbatch script is written for a cluster
        stages.train_recipe(
            recipe, runs_dir=tmp_path / "runs", slurm=True, options=Options(progress=False, cache_dir=tmp_path / "c")
        )
    assert refused.value.hint.startswith("this model's template takes no system turn: drop `system:`")
    assert not (tmp_path / "runs" / "train.sbatch").exists()


def test_truncation_that_drops_every_reply_skips_the_example(tokenizer):
    assert sft_example(tokenizer, CONVERSATION, max_len=8) is None


def test_preference_labels_cover_only_the_reply(tokenizer):
    pair = preference_example(
        tokenizer,
        CONVERSATION[1:2],
        [{"role": "assistant", "content": "Four."}],
        [{"role": "assistant", "content": "Five."}],
        256,
    )
    for name, reply in (("chosen", "Four."), ("rejected", "Five.")):
        ids, labels = pair[name]
        assert (
            tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != IGNORE]) == f"{reply}</s>\n"
        )


def test_pack_keeps_examples_whole_and_in_order():
    examples = [([1] * 5, [1] * 5), ([2] * 4, [2] * 4), ([3] * 3, [3] * 3), ([4] * 9, [4] * 9), ([5] * 2, [5] * 2)]
    rows = pack(examples, max_len=10)
    assert [r.input_ids for r in rows] == [[1] * 5 + [2] * 4, [3] * 3, [4] * 9, [5] * 2]
    assert rows[0].segments == [0] * 5 + [1] * 4
    assert all(len(r.input_ids) <= 10 for r in rows)


def test_packed_rows_compute_exactly_what_separate_examples_do():
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=50,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=4,
            )
        ).eval()
    a, b = ([5, 6, 7, 8], [-100, 6, 7, 8]), ([9, 10, 11], [-100, 10, 11])
    packed = collate(pack([a, b], max_len=16), pad_id=0)
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    separate = collate(as_rows([a, b]), pad_id=0)
    with torch.no_grad():
        joint = model(
            input_ids=packed["input_ids"], attention_mask=packed["attention_mask"], position_ids=packed["position_ids"]
        ).logits[0]
        alone = model(
            input_ids=separate["input_ids"],
            attention_mask=separate["attention_mask"],
            position_ids=separate["position_ids"],
        ).logits
    assert torch.allclose(joint[:4], alone[0, :4], atol=1e-5)
    assert torch.allclose(joint[4:], alone[1, :3], atol=1e-5)  # no attention across the boundary
    assert separate["labels"][1].tolist() == [-100, 10, 11, -100]  # padding carries no label


def test_dpo_loss_matches_hand_computation():
    loss, stats = dpo_loss(
        torch.tensor([-1.0, -3.0]),
        torch.tensor([-2.0, -1.0]),
        torch.tensor([-1.5, -2.0]),
        torch.tensor([-1.5, -2.0]),
        beta=0.1,
    )
    # pair 1: rewards 0.05 vs -0.05 -> -log σ(0.1); pair 2: -0.1 vs 0.1 -> -log σ(-0.2)
    expected = (math.log1p(math.exp(-0.1)) + math.log1p(math.exp(0.2))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["rewards/accuracy"] == 0.5
    assert stats["rewards/margin"] == pytest.approx((0.1 - 0.2) / 2, abs=1e-6)
    equal, _ = dpo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3), beta=0.1)
    assert equal.item() == pytest.approx(math.log(2))


def test_sequence_logps_sums_labelled_next_token_logprobs():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]]))
    labels = torch.tensor([[-100, 1, 2]])  # predict token 1 from position 0, token 2 from position 1
    assert sequence_logps(logits, labels).item() == pytest.approx(math.log(0.25) + math.log(0.1), abs=1e-6)


ZERO3_REFERENCE_PROBE = """
import json, os, sys, torch, torch.distributed as dist
from accelerate.utils import DeepSpeedPlugin
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.integrations import is_deepspeed_zero3_enabled
from mixer.recipe import Launcher
from mixer.train.dpo import loading_whole
from mixer.train.launch import deepspeed_config

torch.manual_seed(0)
config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
LlamaForCausalLM(config).save_pretrained(sys.argv[1])
saved = AutoModelForCausalLM.from_pretrained(sys.argv[1]).state_dict()
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[2], rank=0, world_size=1)
ds = deepspeed_config(Launcher(backend="deepspeed", zero_stage=3, mixed_precision="no"), 1.0)
ds.update(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1, train_batch_size=1)
ds["zero_optimization"].update(reduce_bucket_size=1000, stage3_prefetch_bucket_size=1000, stage3_param_persistence_threshold=1000)
plugin = DeepSpeedPlugin(hf_ds_config=ds, zero3_init_flag=True)
plugin.set_deepspeed_weakref()  # as Accelerator() does under a ZeRO-3 launch
plain = AutoModelForCausalLM.from_pretrained(sys.argv[1])
with loading_whole(plugin):
    whole = AutoModelForCausalLM.from_pretrained(sys.argv[1])
print(json.dumps({
    "plain_elements": sum(p.numel() for p in plain.parameters()),
    "whole_is_the_model": all(torch.equal(whole.state_dict()[k], v) for k, v in saved.items()),
    "zero3_after": is_deepspeed_zero3_enabled(),
}))
"""


@pytest.mark.skipif(find_spec("deepspeed") is None, reason="needs DeepSpeed installed (not a dependency of mixer)")
def test_the_dpo_reference_is_loaded_whole_under_deepspeed_zero3(tmp_path):
    """Under ZeRO-3 transformers shards every model it loads, and only the policy goes through
    accelerator.prepare: the DPO reference was a model of empty parameters, whose first forward failed ("'weight'
    must be 2-D"). Real DeepSpeed, accelerate and transformers code on one CPU process (gloo)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    script = tmp_path / "probe.py"
    script.write_text(ZERO3_REFERENCE_PROBE)
    env = {**os.environ, "LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1"}  # as a launcher sets them
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "model"), port],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"plain_elements": 0, "whole_is_the_model": True, "zero3_after": True}


def launched_by_accelerate(folder: Path, launcher: Launcher, *node: str) -> tuple[Any, list[str] | None, dict]:
    """What `accelerate launch --config_file accelerate.yaml [node...] -m m` makes of the files `mixer train`
    writes for `launcher`, through accelerate's own launch code: the parsed arguments, and the command and
    environment its DeepSpeed launcher gives the training processes (the fields as its launch_command sets them)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    (folder / "deepspeed.json").write_text(json.dumps(deepspeed_config(launcher, 1.0)))
    (folder / "accelerate.yaml").write_text(yaml.safe_dump(accelerate_config(launcher, str(folder / "deepspeed.json"))))
    parsed = launch_command_parser().parse_args(["--config_file", str(folder / "accelerate.yaml"), *node, "-m", "m"])
    args, defaults, precision_from_config = _validate_launch_command(parsed)
    fields = [*defaults.deepspeed_config, *(["mixed_precision"] if precision_from_config else [])]
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    command, env = prepare_deepspeed_cmd_env(args)
    return args, command, env


@pytest.mark.parametrize("precision", ["bf16", "fp16", "no"])
def test_a_deepspeed_stage_starts_under_accelerate_launch_in_its_precision(tmp_path, monkeypatch, precision):
    """accelerate.yaml carried `mixed_precision` beside its DeepSpeed config file, which accelerate refuses: every
    DeepSpeed stage stopped in `Accelerator()` with "When using `deepspeed_config_file`, the following accelerate
    config variables will be ignored". The files go through accelerate's own launch-time reading here, and the
    plugin is made from the environment it gives the training processes, as `Accelerator()` makes it."""
    from accelerate.utils import DeepSpeedPlugin

    launcher = Launcher(num_processes=8, backend="deepspeed", zero_stage=3, mixed_precision=precision)
    _, _, env = launched_by_accelerate(tmp_path, launcher)
    for name, value in env.items():
        if name.startswith("ACCELERATE_"):
            monkeypatch.setenv(name, value)
    plugin = DeepSpeedPlugin()
    assert (plugin.deepspeed_config["bf16"], plugin.deepspeed_config["fp16"]) == (
        {"enabled": precision == "bf16"},
        {"enabled": precision == "fp16"},
    )


def test_a_multi_node_deepspeed_stage_starts_one_node_per_launch_as_the_sbatch_script_runs_it(tmp_path):
    """The sbatch script runs `accelerate launch --machine_rank $SLURM_PROCID` on each node; accelerate's default
    for DeepSpeed on several machines (pdsh) instead runs `deepspeed --hostfile /job/hostfile --launcher pdsh` from
    every node, to reach all of them over ssh through a hostfile no one wrote."""
    launcher = Launcher(num_processes=8, num_machines=2, backend="deepspeed", zero_stage=3)
    node = ["--machine_rank", "1", "--main_process_ip", "10.0.0.1", "--main_process_port", "29500"]
    args, command, _ = launched_by_accelerate(tmp_path, launcher, *node)
    assert command is None  # no `deepspeed --hostfile ...`: torch's launcher starts this node's 8 processes
    where = getattr(args, "master_addr", None) or args.rdzv_endpoint.split(":")[0]
    assert (args.nnodes, args.node_rank, args.nproc_per_node, where) == ("2", 1, "8", "10.0.0.1")


def test_a_deepspeed_stage_clips_gradients_at_its_own_max_grad_norm():
    """deepspeed.json said `gradient_clipping: "auto"`, which accelerate fills with 1.0 whatever the stage's
    max_grad_norm; DeepSpeed clips inside its engine and accelerate's clip_grad_norm_ does nothing under it, so
    `max_grad_norm: 0.3` trained at 1.0. The config goes through accelerate's own filling here, as at launch."""
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(Launcher(backend="deepspeed", zero_stage=3), 0.3))
    filled_at_prepare = {  # what Accelerator._prepare_deepspeed passes (its gradient_clipping default among them)
        "gradient_clipping": 1.0,
        "train_micro_batch_size_per_gpu": 1,
        "train_batch_size": 16,
        "gradient_accumulation_steps": 16,
        "bf16.enabled": True,
        "fp16.enabled": False,
        "zero_optimization.reduce_bucket_size": 4096,
        "zero_optimization.stage3_prefetch_bucket_size": 4096,
        "zero_optimization.stage3_param_persistence_threshold": 640,
    }
    plugin.deepspeed_config_process(must_match=False, **filled_at_prepare)
    assert (plugin.deepspeed_config["gradient_clipping"], plugin.deepspeed_config["gradient_accumulation_steps"]) == (
        0.3,
        16,
    )


def test_a_deepspeed_stage_without_a_gpu_says_it_trains_without_deepspeed():
    """On a CPU-only machine accelerate trains a DeepSpeed stage as plain multi-process CPU training (what
    `cpu=True` gives); it said nothing, so a smoke test on a laptop passed for a DeepSpeed run."""
    from mixer.train.common import cpu_fallback_warning

    assert cpu_fallback_warning({"ACCELERATE_USE_DEEPSPEED": "true"}, cuda=False) == (
        "warning: no GPU here: this DeepSpeed stage runs as plain multi-process training on the CPU, without "
        "DeepSpeed (its sharding and precision settings take effect on GPUs)"
    )
    assert cpu_fallback_warning({"ACCELERATE_USE_DEEPSPEED": "true"}, cuda=True) is None
    assert cpu_fallback_warning({"ACCELERATE_USE_FSDP": "true"}, cuda=False) is None  # refused before launch


def test_an_fsdp_stage_on_a_machine_without_gpus_is_refused_before_any_work(tmp_path, monkeypatch):
    """accelerate's FSDP plugin stops every process with "There are currently no available devices found", after
    the mixture was built and the stage launched."""
    import mixer.train.stages as stages
    from mixer.build import Options
    from mixer.errors import MixerError

    monkeypatch.setattr(stages, "_has_gpu", lambda: False)
    monkeypatch.setattr(stages, "build", lambda *a, **k: pytest.fail("nothing may be built"))
    (tmp_path / "sources").symlink_to(REPO / "sources")  # the recipe's ../sources/samples/... paths
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "tiny.yaml"
    recipe.write_text((REPO / "recipes" / "tiny.yaml").read_text().replace("backend: ddp", "backend: fsdp"))
    options = Options(progress=False)
    with pytest.raises(MixerError, match=r"^stages\.sft\.launcher\.backend: fsdp needs GPUs, and this machine"):
        stages.train_recipe(recipe, runs_dir=tmp_path / "runs", options=options)
    report = stages.train_recipe(recipe, dry_run=True, runs_dir=tmp_path / "runs", options=options)
    assert [p.spec.name for p in report.stages] == ["sft", "dpo"]  # prepared for a machine with GPUs


def test_launcher_configs():
    ddp = accelerate_config(Launcher(num_processes=2, mixed_precision="no"))
    assert (ddp["distributed_type"], ddp["num_processes"], ddp["num_machines"]) == ("MULTI_GPU", 2, 1)
    single = accelerate_config(Launcher())
    assert single["distributed_type"] == "NO"
    zero3 = Launcher(num_processes=8, num_machines=4, backend="deepspeed", zero_stage=3, offload=True)
    config = accelerate_config(zero3, "/runs/x/deepspeed.json")
    assert (config["distributed_type"], config["num_processes"], config["num_machines"]) == ("DEEPSPEED", 32, 4)
    assert config["deepspeed_config"] == {
        "deepspeed_config_file": "/runs/x/deepspeed.json",
        "zero3_init_flag": True,
        "deepspeed_multinode_launcher": "standard",
    }
    ds = deepspeed_config(zero3, 1.0)
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert ds["train_micro_batch_size_per_gpu"] == "auto"
    zero2 = deepspeed_config(Launcher(backend="deepspeed", zero_stage=2), 1.0)
    assert zero2["zero_optimization"]["stage"] == 2
    assert not any(k.startswith("stage3") for k in zero2["zero_optimization"])
    fsdp = accelerate_config(Launcher(num_processes=8, backend="fsdp", offload=True))
    assert fsdp["distributed_type"] == "FSDP"
    assert fsdp["fsdp_config"]["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_config"]["fsdp_offload_params"] is True


def test_generated_accelerate_configs_load_in_accelerate(tmp_path):
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    for launcher in (
        Launcher(num_processes=2),
        Launcher(num_processes=8, backend="deepspeed", zero_stage=3),
        Launcher(num_processes=8, backend="fsdp"),
    ):
        path = tmp_path / f"{launcher.backend}.yaml"
        path.write_text(yaml.safe_dump(accelerate_config(launcher, str(tmp_path / "ds.json"))))
        loaded = load_config_from_file(str(path))
        assert loaded.num_processes == launcher.world_size
        assert str(loaded.distributed_type).endswith(accelerate_config(launcher)["distributed_type"])


def test_slurm_script_is_one_launch_per_node():
    launcher = Launcher(num_processes=8, num_machines=4, backend="deepspeed", zero_stage=3)
    command = [
        "python",
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "/r/sft/accelerate.yaml",
        "-m",
        "mixer.train.sft",
        "--config",
        "/r/sft/stage.json",
    ]
    script = slurm_script("mixer-x", [("sft", launcher, command)], "/r")
    assert "#SBATCH --nodes=4" in script and "#SBATCH --gpus-per-node=8" in script
    assert "#SBATCH --ntasks-per-node=1" in script
    assert 'MAIN_PROCESS_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    assert (
        "srun --nodes=4 --ntasks-per-node=1 bash -c 'accelerate launch --config_file /r/sft/accelerate.yaml"
        " --num_machines $SLURM_NNODES --machine_rank $SLURM_PROCID --main_process_ip $MAIN_PROCESS_IP"
        " --main_process_port 29500 -m mixer.train.sft --config /r/sft/stage.json'"
    ) in script


def test_tulu2_dry_run_prints_zero3_commands_and_writes_nothing(tmp_path):
    result = run_mixer("train", str(REPO / "recipes" / "tulu2.yaml"), "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = tmp_path / "runs" / "tulu2-sft-mix"
    for stage in ("sft", "dpo"):
        assert (
            f"$ accelerate launch --config_file {runs}/{stage}/accelerate.yaml -m mixer.train.{stage} "
            f"--config {runs}/{stage}/stage.json"
        ) in result.stdout
    assert result.stdout.count("distributed_type: DEEPSPEED") == 2
    assert result.stdout.count("num_processes: 8") == 2
    assert result.stdout.count('"stage": 3,') == 2
    assert f'"model": "{runs}/sft/final"' in result.stdout  # dpo starts from the sft output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_tulu2_slurm_dry_run(tmp_path):
    result = run_mixer("train", str(REPO / "recipes" / "tulu2.yaml"), "--slurm", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("srun --nodes=1 --ntasks-per-node=1 bash -c 'accelerate launch") == 2
    assert "--machine_rank $SLURM_PROCID" in result.stdout


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        (
            "  - {name: dpo, kind: dpo, model: {stage: sft}, data: {source: ultrafeedback, take: all}}\n"
            "  - {name: sft, kind: sft, model: m, data: mixture}\n",
            (5, 43, "stage 'dpo' depends on 'sft', which runs later"),
        ),
        (
            "  - {name: dpo, kind: dpo, model: {stage: sfft}, data: {source: ultrafeedback, take: all}}\n",
            (5, 43, "unknown stage 'sfft'"),
        ),
        (
            "  - {name: sft, kind: sft, model: m, data: {source: ultrafeedback, take: all}}\n",
            (5, 38, "'sft' is preference data (preference); it cannot be used for SFT"),
        ),
        (
            "  - {name: dpo, kind: dpo, model: m, data: mixture}\n",
            (5, 44, "a dpo stage needs preference data, not the SFT mixture"),
        ),
        (
            "  - {name: sft, kind: sft, model: m, data: mixture, beta: 0.1}\n",
            (5, 53, "'beta' applies to dpo stages only"),
        ),
        (
            "  - {name: sft, kind: sft, model: m, data: mixture, launcher: {zero_stage: 3}}\n",
            (5, 64, "zero_stage needs backend: deepspeed"),
        ),
        (
            "  - {name: sft, kind: sft, model: m, data: mixture, hyperparameters: {lr: 1}}\n",
            (5, 71, "unknown key 'lr'"),
        ),
        (
            "  - {name: a, kind: sft, model: m, data: mixture}\n  - {name: a, kind: sft, model: m, data: mixture}\n",
            (6, 12, "duplicate stage name 'a'"),
        ),
    ],
)
def test_stage_validation(tmp_path, stages, expected):
    recipe = write_recipe(tmp_path, "name: t\nsources:\n  d: {source: dolly, take: 1}\nstages:\n" + stages)
    found = [(d.line, d.col, d.message) for d in validate_file(recipe)]
    line, col, text = expected
    assert any(f[0] == line and f[1] == col and f[2].startswith(text) for f in found), found


def test_building_a_mixture_never_imports_torch(tmp_path):
    code = (
        "import sys; from pathlib import Path; from mixer.build import build, Options; "
        f"build(Path({str(REPO / 'recipes' / 'tulu2.yaml')!r}), Options(sample=True, progress=False), "
        f"out=Path({str(tmp_path / 'o')!r})); print('torch' in sys.modules)"
    )
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["totals"]["rows"] > 0


def test_a_failed_launch_is_recorded_and_reported_with_where_it_resumes(tmp_path, monkeypatch):
    import dataclasses

    from mixer.build import Options
    from mixer.errors import MixerError
    from mixer.train.stages import prepare_stage, run_stage, selected_stages
    from mixer.validate import load_recipe

    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(REPO / "recipes" / "tiny.yaml")
    stage = selected_stages(recipe, "sft")[0]
    prepared = prepare_stage(recipe, stage, tmp_path / "runs", Options(progress=False), dry_run=True)
    made = Path(prepared.config.model)  # a dry run writes nothing; a real one has made the starting model by now
    made.mkdir(parents=True)
    (made / "config.json").write_text("{}")
    failing = dataclasses.replace(prepared, command=[sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(MixerError) as failed:
        run_stage(failing)
    assert failed.value.message == "stage sft failed (exit code 3); see the output above"
    assert f"it resumes from {prepared.run_dir}/checkpoints" in failed.value.hint
    record = json.loads((prepared.run_dir / "run.json").read_text())
    assert (record["status"], record["metrics"]) == ("failed", None)
    with pytest.raises(MixerError, match=r"^no stage 'sfft' in .*tiny\.yaml"):
        selected_stages(recipe, "sfft")


def test_an_interrupted_stage_is_recorded_and_says_where_it_resumes(tmp_path, monkeypatch):
    """Ctrl-C in a stage printed only "interrupted: the previous output, if any, is unchanged", which says
    nothing of the checkpoints a stage leaves: the stage adds where the next `mixer train` resumes."""
    import mixer.train.stages as stages
    from mixer.build import Options
    from mixer.validate import load_recipe

    def stopped(command: list[str]) -> int:
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stages, "run_to_end", stopped)
    recipe = load_recipe(REPO / "recipes" / "tiny.yaml")
    stage = stages.selected_stages(recipe, "sft")[0]
    prepared = stages.prepare_stage(recipe, stage, tmp_path / "runs", Options(progress=False), dry_run=True)
    made = Path(prepared.config.model)  # the starting model a real prepare makes
    made.mkdir(parents=True)
    (made / "config.json").write_text("{}")
    with pytest.raises(KeyboardInterrupt) as interrupted:
        stages.run_stage(prepared)
    assert interrupted.value.__notes__ == [
        f"stage sft: run `mixer train` again to resume from its last checkpoint in {prepared.run_dir}/checkpoints,"
        " if one was saved (--restart starts over)"
    ]
    assert json.loads((prepared.run_dir / "run.json").read_text())["status"] == "interrupted"


def test_a_deepspeed_stage_where_deepspeed_is_missing_is_refused_before_any_work(tmp_path, monkeypatch):
    """accelerate fails with an ImportError, after the mixture is built; --dry-run and --slurm prepare stages
    for another machine, so they go on."""
    import mixer.train.stages as stages
    from mixer.build import Options
    from mixer.errors import MixerError

    monkeypatch.setattr(stages, "find_spec", lambda name: None if name == "deepspeed" else object())
    monkeypatch.setattr(stages, "build", lambda *a, **k: pytest.fail("nothing may be built"))
    options = Options(progress=False, sample=True)
    with pytest.raises(MixerError, match=r"^stages\.sft\.launcher\.backend: deepspeed is not installed here"):
        stages.train_recipe(REPO / "recipes" / "tulu2.yaml", runs_dir=tmp_path / "runs", options=options)
    report = stages.train_recipe(
        REPO / "recipes" / "tulu2.yaml", dry_run=True, runs_dir=tmp_path / "runs", options=options
    )
    assert [p.spec.name for p in report.stages] == ["sft", "dpo"]


def test_training_without_the_training_extras_is_refused_with_how_to_install_them(tmp_path, monkeypatch):
    """The core install has no torch: `mixer train tiny.yaml` stopped with a traceback from `import torch`, and
    `--slurm`, which makes a randomly initialised model here, did too. `--dry-run` needs none of them."""
    import mixer.train.stages as stages
    from mixer.build import Options
    from mixer.errors import MixerError

    monkeypatch.setattr(stages, "find_spec", lambda name: None if name in ("torch", "accelerate") else object())
    monkeypatch.setattr(stages, "build", lambda *a, **k: pytest.fail("nothing may be built"))
    options = Options(progress=False)
    with pytest.raises(MixerError) as refused:
        stages.train_recipe(REPO / "recipes" / "tiny.yaml", runs_dir=tmp_path / "runs", options=options)
    assert refused.value.message == "mixer train needs torch, accelerate, which are not installed"
    assert refused.value.hint.startswith("install the training extras: pip install torch==2.13.0 (the CPU build")
    with pytest.raises(MixerError, match=r"^stage sft's randomly initialised model needs torch, which is not"):
        stages.train_recipe(REPO / "recipes" / "tiny.yaml", slurm=True, runs_dir=tmp_path / "runs", options=options)
    report = stages.train_recipe(
        REPO / "recipes" / "tiny.yaml", dry_run=True, runs_dir=tmp_path / "runs", options=options
    )
    assert [p.spec.name for p in report.stages] == ["sft", "dpo"]


def test_a_stage_run_before_the_one_it_starts_from_is_refused_before_any_work(tmp_path, monkeypatch):
    """`mixer train tiny.yaml --stage dpo` with no SFT model yet launched two processes that failed on a hub-id
    error from transformers about the missing folder."""
    import mixer.train.stages as stages
    from mixer.build import Options
    from mixer.errors import MixerError

    monkeypatch.setattr(stages, "build", lambda *a, **k: pytest.fail("nothing may be built"))
    runs = tmp_path / "runs"
    with pytest.raises(MixerError) as missing:
        stages.train_recipe(REPO / "recipes" / "tiny.yaml", only="dpo", runs_dir=runs, options=Options(progress=False))
    assert (
        missing.value.message == f"stage dpo starts from stage sft's final model, which is not there: {runs}/sft/final"
    )
    assert missing.value.hint.startswith("run stage sft first (mixer train ")
    report = stages.train_recipe(
        REPO / "recipes" / "tiny.yaml", only="dpo", dry_run=True, runs_dir=runs, options=Options(progress=False)
    )
    assert report.stages[0].config.model == str(runs / "sft" / "final")  # prepared for a cluster: no check


def test_an_interrupted_launch_asks_the_launcher_to_stop_its_workers(tmp_path):
    """SIGTERM to mixer (a scheduler's cancel) must reach the launcher as SIGTERM, which accelerate and torchrun
    pass to their workers; a SIGKILL, or nothing at all, would leave workers training on without mixer."""
    ready, stopped = tmp_path / "ready", tmp_path / "stopped"
    launcher = (
        "import pathlib, signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path({str(stopped)!r}).write_text('SIGTERM'), sys.exit(0)))\n"
        f"pathlib.Path({str(ready)!r}).write_text('')\n"
        "time.sleep(60)\n"
    )
    mixer_side = (
        "import signal, sys\n"
        "from mixer import interrupts\n"
        "from mixer.train.stages import run_to_end\n"
        "signal.signal(signal.SIGTERM, interrupts.INTERRUPTS.on_signal)\n"
        "try:\n"
        f"    run_to_end([sys.executable, '-c', {launcher!r}])\n"
        "except interrupts.Terminated:\n"
        "    sys.exit(143)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", mixer_side])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), "the launcher never started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    assert stopped.read_text() == "SIGTERM"


def test_a_runs_diff_shows_the_mixture_and_recipe_it_trained_on_after_the_build_folder_is_rebuilt(tmp_path):
    """Runs of two recipes that share an output folder: the second build replaced the first's mixture, and
    `mixer diff` of the two runs read both compositions (and both stages' settings) from the folder, so it showed
    the same mixture on both sides and no change. Each run now keeps a copy of its mixture's manifest and the
    recipe as it ran; a DPO stage shows the mixture its SFT model was trained on. A stage prepared for a cluster
    that runs after the folder was rebuilt would have trained on the other mixture: it now refuses."""
    import mixer.train.stages as stages
    from mixer.build import Options
    from mixer.diff import compare, load_side

    rows = [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"} for i in range(30)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    preferences = REPO / "sources" / "samples" / "ultrafeedback.jsonl"
    model = (
        "{init: llama, config: {hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2}}"
    )

    def recipe(name: str, take: int, learning_rate: str) -> Path:
        text = f"""
            name: {name}
            sources:
              a: {{path: a.jsonl, format: alpaca, take: {take}}}
            output: {{dir: {tmp_path / "out"}}}
            stages:
              - {{name: sft, kind: sft, model: {model}, data: mixture, hyperparameters: {{learning_rate: {learning_rate}}}}}
              - {{name: dpo, kind: dpo, model: {{stage: sft}}, data: {{path: {preferences}, format: preference, take: 4}}}}
            """
        return write_recipe(tmp_path, text, f"{name}.yaml")

    options = Options(progress=False, cache_dir=tmp_path / "cache")
    for name, take, rate in (("first", 10, "1.0e-3"), ("second", 20, "2.0e-3")):
        stages.train_recipe(recipe(name, take, rate), slurm=True, runs_dir=tmp_path / "runs" / name, options=options)
    for stage in ("sft", "dpo"):
        comparison = compare(
            load_side(str(tmp_path / "runs/first" / stage)), load_side(str(tmp_path / "runs/second" / stage))
        )
        [source] = comparison.composition.sources
        assert (source.status, source.a_rows, source.b_rows, source.changes) == ("changed", 10, 20, ["take: 10 → 20"])
        assert "stages.sft.hyperparameters.learning_rate: 0.001 → 0.002" in comparison.composition.settings
        assert comparison.metrics.warnings == []
    from mixer.train.common import check_mixture
    from mixer.train.config import StageConfig

    check_mixture(StageConfig.load(tmp_path / "runs/second/sft/stage.json"))
    with pytest.raises(
        SystemExit, match=r"^error: stage sft was prepared on the mixture in .*out, which another build"
    ):
        check_mixture(StageConfig.load(tmp_path / "runs/first/sft/stage.json"))  # a cluster job run late
    older = tmp_path / "runs/first/sft"  # as a run made before the copy was kept
    (older / "mixture-manifest.json").unlink()
    first = load_side(str(older))
    assert (first.counts, first.warnings) == (
        None,
        [f"{older}: the mixture it trained on ({tmp_path / 'out'}) was rebuilt since; its composition is not shown"],
    )
    assert first.recipe is not None and first.recipe["name"] == "first"
    recipe_and_run = compare(load_side(str(tmp_path / "second.yaml")), load_side(str(tmp_path / "runs/second/sft")))
    assert [s.status for s in recipe_and_run.composition.sources] == [
        "same"
    ]  # a recipe's unknown counts differ in nothing


def _one_stage_recipe(tmp_path: Path, take: int = 10, learning_rate: str = "1.0e-3", logging_steps: int = 1) -> Path:
    rows = [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"} for i in range(30)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = (
        "{init: llama, config: {hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2}}"
    )
    hyper = f"{{learning_rate: {learning_rate}, logging_steps: {logging_steps}}}"
    text = f"""
        name: one
        sources:
          a: {{path: a.jsonl, format: alpaca, take: {take}}}
        output: {{dir: {tmp_path / "out"}}}
        stages:
          - {{name: sft, kind: sft, model: {model}, data: mixture, hyperparameters: {hyper}}}
        """
    return write_recipe(tmp_path, text, "one.yaml")


def test_a_stage_folder_resumes_only_the_training_its_checkpoints_are_of(tmp_path):
    """A rerun after editing a stage's learning rate, or its mixture, resumed the old run's newest checkpoint:
    two trainings mixed without a word. It is now refused, and `restart` starts over; settings that only change
    what is logged still resume."""
    import mixer.train.stages as stages
    from mixer.build import Options
    from mixer.errors import MixerError

    options = Options(progress=False, cache_dir=tmp_path / "cache")
    runs, sft = tmp_path / "runs", tmp_path / "runs" / "sft"

    def prepare(**changes) -> None:
        restart = changes.pop("restart", False)
        recipe = _one_stage_recipe(tmp_path, **changes)
        stages.train_recipe(recipe, slurm=True, runs_dir=runs, options=options, restart=restart)

    prepare()
    (sft / "init" / "made-for-the-first-data").write_text("")
    prepare(take=12)  # nothing trained yet: the random starting model is only made again, for the new data
    assert not (sft / "init" / "made-for-the-first-data").exists() and (sft / "init" / "config.json").is_file()
    checkpoint = sft / "checkpoints" / "step-0000003"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"step": 3}')
    prepare(take=12)  # the same training: its checkpoints resume
    prepare(take=12, logging_steps=5)  # only what is logged changes: they still resume
    with pytest.raises(MixerError) as refused:
        prepare(take=12, learning_rate="2.0e-3")
    assert refused.value.message == (
        f"stage sft: {sft} holds a training from other inputs (hyperparameters.learning_rate: 0.001 → 0.002); "
        "resuming its checkpoints would mix the two"
    )
    recipe = tmp_path / "one.yaml"  # the command to run, with the recipe's path: it said `mixer train RECIPE`
    assert refused.value.hint.startswith(f"train it from the start with `mixer train {recipe} --stage sft --restart`")
    with pytest.raises(MixerError, match=r"\(data.content: .* data.rows: 12 → 20\)"):
        prepare(take=20)
    assert checkpoint.is_dir()  # a refusal deletes nothing
    prepare(take=20, restart=True)
    assert not (sft / "checkpoints").exists() and (sft / "init" / "config.json").is_file()


def test_a_stage_finished_before_from_the_same_inputs_is_not_trained_again(tmp_path, monkeypatch):
    """A rerun of `mixer train` after a stage finished replayed its last epoch from the newest checkpoint (the
    end of the one before), appending the same steps to metrics.jsonl again."""
    import mixer.train.stages as stages
    from mixer.build import Options

    options = Options(progress=False, cache_dir=tmp_path / "cache")
    runs, sft = tmp_path / "runs", tmp_path / "runs" / "sft"
    recipe = _one_stage_recipe(tmp_path)
    stages.train_recipe(recipe, slurm=True, runs_dir=runs, options=options)
    record = json.loads((sft / "run.json").read_text())  # as a finished run leaves it
    (sft / "run.json").write_text(json.dumps({**record, "status": "done", "metrics": {"steps": 15}}))
    (sft / "final").mkdir()
    (sft / "final" / "config.json").write_text("{}")
    monkeypatch.setattr(stages, "run_to_end", lambda command: pytest.fail("a finished stage was launched again"))
    report = stages.train_recipe(recipe, runs_dir=runs, options=options)
    assert (report.finished, report.metrics) == (["sft"], {"sft": {"steps": 15}})
    prepared_again = stages.train_recipe(recipe, slurm=True, runs_dir=runs, options=options)
    assert prepared_again.slurm_script is None  # nothing left for a cluster job either
    # stopped after its trainer finished (final/ saved, metrics.json written last), before run.json said "done"
    (sft / "run.json").write_text(json.dumps({**record, "status": "interrupted", "metrics": None}))
    (sft / "metrics.json").write_text(json.dumps({"steps": 15, "total_steps": 15, "final_loss": 2.5}))
    report = stages.train_recipe(recipe, runs_dir=runs, options=options)
    assert report.finished == ["sft"] and report.metrics["sft"]["final_loss"] == 2.5
    assert json.loads((sft / "run.json").read_text())["status"] == "done"
    (sft / "run.json").write_text(json.dumps({**record, "status": "interrupted", "metrics": None}))
    (sft / "metrics.json").write_text(json.dumps({"steps": 9, "total_steps": 15}))  # stopped halfway: it resumes
    monkeypatch.setattr(stages, "run_to_end", lambda command: 0)
    assert stages.train_recipe(recipe, runs_dir=runs, options=options).finished == []
    assert stages.train_recipe(recipe, runs_dir=runs, options=options, restart=True).finished == []


def test_a_stage_trains_on_the_train_split_only(tmp_path):
    import mixer.train.stages as stages
    from mixer.build import Options

    recipe = _one_stage_recipe(tmp_path, take=20)
    recipe.write_text(recipe.read_text().replace("output:", "mixture: {eval: {rows: 3}}\noutput:"))
    report = stages.train_recipe(recipe, slurm=True, runs_dir=tmp_path / "runs", options=Options(progress=False))
    [prepared] = report.stages
    assert [Path(f).name for f in prepared.config.data_files] == ["train-00000-of-00001.parquet"]
    assert prepared.provenance["data"]["rows"] == 17  # the train split's
    assert (tmp_path / "out" / "data" / "test-00000-of-00001.parquet").is_file()


def test_a_stage_edited_alone_leaves_the_mixture_built(tmp_path):
    """A learning rate edited between runs rebuilt the whole mixture (the build fingerprint covered the stages),
    minutes at 10M rows with decontamination. The mixture's identity (build and plan fingerprints, the manifest's
    recipe, `mixer runs`' fingerprint) no longer covers the stages; runs record them."""
    import mixer.train.stages as stages
    from mixer.build import Options, build
    from mixer.diff import compare, load_side
    from mixer.runs import find_runs

    options = Options(progress=False, cache_dir=tmp_path / "cache")
    recipe = _one_stage_recipe(tmp_path, learning_rate="1.0e-3")
    stages.train_recipe(recipe, slurm=True, runs_dir=tmp_path / "runs" / "first", options=options)
    manifest = (tmp_path / "out" / "manifest.json").read_bytes()
    assert "stages" not in json.loads(manifest)["resolved_recipe"]
    recipe = _one_stage_recipe(tmp_path, learning_rate="2.0e-3")
    assert build(recipe, options).status == "up-to-date"
    stages.train_recipe(recipe, slurm=True, runs_dir=tmp_path / "runs" / "second", options=options)
    assert (tmp_path / "out" / "manifest.json").read_bytes() == manifest
    comparison = compare(load_side(str(tmp_path / "runs/first/sft")), load_side(str(tmp_path / "runs/second/sft")))
    assert [s.status for s in comparison.composition.sources] == ["same"]
    assert comparison.composition.settings == ["stages.sft.hyperparameters.learning_rate: 0.001 → 0.002"]
    listed = {
        Path(r["path"]).name if r["kind"] == "build" else r["path"]: r["fingerprint"] for r in find_runs([tmp_path])
    }
    assert len(set(listed.values())) == 1, listed  # both runs and the build they trained on: one mixture
    built = load_side(str(tmp_path / "out"))
    assert compare(built, load_side(str(tmp_path / "runs/second/sft"))).composition.settings == []


def test_runs_are_diffed_on_their_test_split_loss_too(tmp_path):
    """With `mixture.eval`, each SFT run logs its loss on the held-out rows; `mixer diff` of two runs shows it
    beside their benchmark results (lower is better), keeps it out of the mean over benchmarks, and says when
    the held-out rows differ."""
    import mixer.train.stages as stages
    from mixer.build import Options
    from mixer.diff import TRAINING_TASK, compare, load_side

    options = Options(progress=False, cache_dir=tmp_path / "cache")

    def run(name: str, take: int, learning_rate: str, loss: float) -> str:
        recipe = _one_stage_recipe(tmp_path, take=take, learning_rate=learning_rate)
        recipe.write_text(recipe.read_text().replace("output:", "mixture: {eval: {rows: 4}}\noutput:"))
        stages.train_recipe(recipe, slurm=True, runs_dir=tmp_path / "runs" / name, options=options)
        record = tmp_path / "runs" / name / "sft" / "run.json"
        finished = {"status": "done", "metrics": {"eval_loss": loss, "eval_rows": 4}}
        record.write_text(json.dumps({**json.loads(record.read_text()), **finished}))
        return str(record.parent)

    first, second = run("first", 20, "1.0e-3", 2.25), run("second", 20, "2.0e-3", 2.0)
    metrics = compare(load_side(first), load_side(second)).metrics
    [row] = metrics.rows
    assert (row.task, row.metric, row.a, row.b, row.direction) == (TRAINING_TASK, "eval_loss", 2.25, 2.0, "better")
    assert (metrics.mean_delta, metrics.warnings) == (None, [])  # no benchmark: no mean
    other = run("other", 24, "2.0e-3", 1.5)  # another mixture: other held-out rows
    [warning] = compare(load_side(first), load_side(other)).metrics.warnings
    assert warning.startswith(f"{TRAINING_TASK}: test_split differs (") and warning.endswith(
        "scores are not comparable"
    )


def test_a_recipe_is_diffed_with_its_last_stage_run_while_that_run_is_of_this_recipe(tmp_path, monkeypatch):
    """Results are attached to the trained model's run: `mixer diff recipes/a.yaml recipes/b.yaml` shows each
    recipe's last stage run made from it (an earlier stage's when a later one has not run), and its build when
    the run was made from another version of the recipe."""
    import mixer.train.stages as stages
    from mixer.build import Options
    from mixer.diff import TRAINING_TASK, compare, load_side

    monkeypatch.chdir(tmp_path)  # runs/<recipe>/<stage> and output.dir are relative to it, as mixer writes them
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    for name, learning_rate, loss in (("a", "1.0e-3", 2.25), ("b", "2.0e-3", 2.0)):
        recipe = _one_stage_recipe(tmp_path, take=20, learning_rate=learning_rate)
        text = (
            recipe.read_text().replace("name: one\n", f"name: {name}\n").replace(str(tmp_path / "out"), f"out/{name}")
        )
        (tmp_path / f"{name}.yaml").write_text(text.replace("output:", "mixture: {eval: {rows: 4}}\noutput:"))
        stages.train_recipe(tmp_path / f"{name}.yaml", slurm=True, options=options)
        record = tmp_path / "runs" / name / "sft" / "run.json"
        finished = {"status": "done", "metrics": {"eval_loss": loss, "eval_rows": 4}}
        record.write_text(json.dumps({**json.loads(record.read_text()), **finished}))

    a, b = load_side("a.yaml"), load_side("b.yaml")
    assert (a.label, b.label) == ("a.yaml (runs/a/sft)", "b.yaml (runs/b/sft)")
    [row] = compare(a, b).metrics.rows
    assert (row.task, row.a, row.b) == (TRAINING_TASK, 2.25, 2.0)

    (tmp_path / "a.yaml").write_text((tmp_path / "a.yaml").read_text().replace("1.0e-3", "3.0e-3"))
    edited = load_side("a.yaml")  # the stage changed: its run is of another version; the mixture is the same
    assert (edited.label, edited.counts) == ("a.yaml (out/a)", {"a": 20})


def test_a_dpo_stage_holds_out_unseen_pairs_and_runs_are_diffed_on_their_reward_accuracy(tmp_path):
    """A stage's `eval` takes the last distinct pairs of its selection as its test split; every copy of them
    (an upsampled source repeats pairs) leaves the training rows. `mixer diff` of two such runs shows the held-out
    loss and reward accuracy, and warns when their held-out pairs differ."""
    import polars as pl

    import mixer.train.stages as stages
    from mixer.build import Options
    from mixer.diff import TRAINING_TASK, compare, load_side

    pairs = [{"prompt": f"q {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(12)]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp_path / "a.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    options = Options(progress=False, cache_dir=tmp_path / "cache")
    model = (
        "{init: llama, config: {hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2}}"
    )

    def run(name: str, held_out: int, accuracy: float) -> Path:
        recipe = write_recipe(
            tmp_path,
            f"""
            name: prefs
            sources:
              a: {{path: a.jsonl, format: alpaca, take: all}}
            stages:
              - {{name: dpo, kind: dpo, model: {model}, data: {{path: prefs.jsonl, format: preference, fraction: 2}},
                  eval: {{rows: {held_out}}}}}
            """,
            f"{name}.yaml",
        )
        stages.train_recipe(recipe, slurm=True, runs_dir=tmp_path / "runs" / name, options=options)
        folder = tmp_path / "runs" / name / "dpo"
        record = folder / "run.json"
        finished = {"status": "done", "metrics": {"eval_loss": 0.6, "eval_rewards/accuracy": accuracy, "eval_rows": 3}}
        record.write_text(json.dumps({**json.loads(record.read_text()), **finished}))
        return folder

    first = run("first", 3, 0.5)
    train = pl.read_parquet(first / "data" / "train.parquet")
    test = pl.read_parquet(first / "data" / "test.parquet")
    assert (train.height, test.height) == (18, 3)  # 24 selected (every pair twice), less both copies of 3
    assert not set(train["id"]) & set(test["id"]) and train["id"].n_unique() == 9
    assert json.loads((first / "stage.json").read_text())["eval_files"] == [str(first / "data" / "test.parquet")]

    second = run("second", 3, 0.75)
    metrics = compare(load_side(str(first)), load_side(str(second))).metrics
    rows = {row.metric: (row.task, row.a, row.b, row.direction) for row in metrics.rows}
    assert rows == {
        "eval_loss": (TRAINING_TASK, 0.6, 0.6, "same"),
        "eval_rewards/accuracy": (TRAINING_TASK, 0.5, 0.75, "better"),
    }
    assert metrics.warnings == []
    from mixer.runs import find_runs

    [listed] = find_runs([tmp_path / "runs" / "first"])
    assert listed["headline"] == {"test split loss": 0.6, "test split rewards/accuracy": 0.5}  # `mixer runs`
    other = run("other", 4, 0.75)  # other held-out pairs: not comparable
    assert any(
        w.startswith(f"{TRAINING_TASK}: test_split differs (")
        for w in compare(load_side(str(first)), load_side(str(other))).metrics.warnings
    )


def test_metrics_cut_short_do_not_hide_why_a_stage_stopped(tmp_path):
    """`mixer train` reads the trainer's metrics.json after the launcher returns, and while an interrupt is on its
    way up: a file cut short (the trainer killed while writing it, before it was written whole by a rename)
    raised a JSON error in place of the interrupt or the failure."""
    from types import SimpleNamespace

    from mixer.train.stages import _metrics

    prepared = SimpleNamespace(run_dir=tmp_path)
    assert _metrics(prepared) is None
    (tmp_path / "metrics.json").write_text('{"steps": 3, "final_lo')
    assert _metrics(prepared) is None
    (tmp_path / "metrics.json").write_text('{"steps": 3}')
    assert _metrics(prepared) == {"steps": 3}


def test_a_hub_model_neither_cached_nor_reachable_stops_before_any_worker(tmp_path, monkeypatch):
    """Each worker retried every file of an unreachable model for ~25 s and `mixer train` ended in a launcher
    traceback 1.5 minutes later; now it stops at once. Offline mode stands in for no network (no request is
    made); a model in the cache, a local folder, or a stage's `final/` path are not asked about."""
    import huggingface_hub.constants

    from mixer.errors import MixerError
    from mixer.train.config import StageConfig
    from mixer.train.preflight import check_models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read by resolve.why_hub_cannot_be_asked, as for hub sources
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def stage(model, tokenizer=None):
        return StageConfig("sft", "sft", model, [], str(tmp_path / "run"), tokenizer=tokenizer)

    with pytest.raises(MixerError) as stopped:
        check_models(stage("org/not-here"))
    assert stopped.value.message == (
        "stage sft: model 'org/not-here' is not in this machine's Hugging Face cache, and the Hub cannot be "
        "reached (offline mode (HF_HUB_OFFLINE=1))"
    )
    assert stopped.value.hint.startswith("download it where there is a network (hf download org/not-here)")
    final = tmp_path / "runs" / "sft" / "final"  # a stage's model, written by the stage before this one
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    with pytest.raises(MixerError, match="stage sft: tokenizer 'org/tok' is not in this machine's"):
        check_models(stage(str(final), tokenizer="org/tok"))

    snapshot = tmp_path / "hub" / "models--org--cached" / "snapshots" / "abc123"  # the cache's own layout
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--cached" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--cached" / "refs" / "main").write_text("abc123")
    check_models(stage("org/cached"))
    check_models(stage(str(final)))


def test_a_local_model_folder_that_cannot_be_loaded_stops_before_any_worker(tmp_path, monkeypatch):
    """A typo in a stage's model path (`runs/x/sft/finall`) went to every worker, which took it for a hub id:
    "Repo id must be in the form 'repo_name' or 'namespace/repo_name'" in a launcher traceback, and a hint to
    resume from checkpoints."""
    from mixer.errors import MixerError
    from mixer.train.config import StageConfig
    from mixer.train.preflight import check_models

    monkeypatch.chdir(tmp_path)
    for folder in ("runs/x/sft/final", "runs/x/sft/init"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "config.json").write_text("{}")

    def refusal(model: str, tokenizer: str | None = None) -> tuple[str, str]:
        with pytest.raises(MixerError) as stopped:
            check_models(StageConfig("dpo", "dpo", model, [], str(tmp_path / "run"), tokenizer=tokenizer))
        return stopped.value.message, stopped.value.hint

    assert refusal("runs/x/sft/finall") == (
        "stage dpo: model 'runs/x/sft/finall' is no folder here, and not a hub id (org/name)",
        "did you mean runs/x/sft/final?",
    )
    assert refusal("runs/x") == (  # `org/name`-shaped, but a folder here: read as the folder
        "stage dpo: model 'runs/x' has no config.json",
        "give the folder holding it: runs/x/sft/final, runs/x/sft/init",
    )
    (tmp_path / "model.safetensors").write_text("")
    assert refusal("model.safetensors") == (
        "stage dpo: model 'model.safetensors' is a file",
        "give the folder holding the model's config.json (a stage's own is in runs/RECIPE/STAGE/final)",
    )
    assert refusal("runs/x/sft/final", tokenizer="model.safetensors")[1] == (
        "give the folder holding the tokenizer's files (tokenizer_config.json or tokenizer.json)"
    )
    assert refusal("runs/x/sft/final", tokenizer="runs/x/sft/init")[0] == (
        "stage dpo: tokenizer 'runs/x/sft/init' has no tokenizer_config.json"
    )
    (tmp_path / "runs/x/sft/init/tokenizer.json").write_text("{}")  # a fast tokenizer's one file is enough
    check_models(StageConfig("dpo", "dpo", "runs/x/sft/final", [], str(tmp_path / "run"), tokenizer="runs/x/sft/init"))


def test_a_recipe_without_sources_prepares_its_dpo_stage(tmp_path):
    """No mixture to build: the stage reads its own preference rows (a real run trained in 6 steps)."""
    from mixer.build import Options
    from mixer.train import stages

    recipe = write_recipe(
        tmp_path,
        f"""
        name: dpo-only
        stages:
          - name: dpo
            kind: dpo
            model: org/sft-model
            data: {{path: {REPO}/sources/samples/ultrafeedback.jsonl, format: preference, take: 10}}
        """,
    )
    report = stages.train_recipe(recipe, dry_run=True, runs_dir=tmp_path / "runs", options=Options(progress=False))
    (prepared,) = report.stages
    assert prepared.config.model == "org/sft-model" and prepared.config.kind == "dpo"
    assert prepared.config.data_files == [str(tmp_path / "runs" / "dpo" / "data" / "train.parquet")]
    assert prepared.command[1:3] == ["-m", "accelerate.commands.launch"]  # `accelerate launch`, this Python's
    assert prepared.command[-4:] == ["-m", "mixer.train.dpo", "--config", str(tmp_path / "runs" / "dpo" / "stage.json")]
    assert not (tmp_path / "out").exists()  # nothing built
