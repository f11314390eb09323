"""Launcher files and commands: accelerate config, DeepSpeed JSON, SLURM script. Knows nothing of training.

Launcher `num_processes` in a recipe is per machine (GPUs per node); accelerate's config counts all
processes, so the config gets num_processes × num_machines.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

from mixer.recipe import Launcher


def deepspeed_config(launcher: Launcher, max_grad_norm: float) -> dict[str, Any]:
    """ZeRO 2/3 with "auto" values that accelerate fills from the stage's batch size and accumulation. Precision
    and gradient clipping are written out. With a DeepSpeed config file accelerate refuses a `mixed_precision` in
    its own config (accelerate_config leaves it out), and would fill `bf16.enabled: "auto"` from that absent
    setting, as fp32. DeepSpeed clips inside its engine (accelerate's clip_grad_norm_ does nothing under it), and
    accelerate fills an "auto" there with 1.0 whatever the stage's max_grad_norm."""
    zero: dict[str, Any] = {
        "stage": launcher.zero_stage or 3,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if zero["stage"] == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                "stage3_max_live_parameters": 1_000_000_000,
                "stage3_max_reuse_distance": 1_000_000_000,
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
    if launcher.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if zero["stage"] == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "bf16": {"enabled": launcher.mixed_precision == "bf16"},
        "fp16": {"enabled": launcher.mixed_precision == "fp16"},
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": max_grad_norm,
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }


def accelerate_config(launcher: Launcher, deepspeed_file: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "num_processes": launcher.world_size,
        "num_machines": launcher.num_machines,
        "machine_rank": 0,
        "main_process_ip": None if launcher.num_machines == 1 else "127.0.0.1",
        "main_process_port": launcher.main_process_port,
        "mixed_precision": launcher.mixed_precision,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
        "downcast_bf16": "no",
    }
    if launcher.backend == "deepspeed":
        del config["mixed_precision"]  # deepspeed.json's bf16/fp16; accelerate refuses it beside a config file
        config["distributed_type"] = "DEEPSPEED"
        config["deepspeed_config"] = {
            "deepspeed_config_file": deepspeed_file,
            "zero3_init_flag": (launcher.zero_stage or 3) == 3,
            # one `accelerate launch` per node (the sbatch script's srun) starts that node's processes; accelerate's
            # default, pdsh, runs DeepSpeed's own launcher to reach every node from each, through a hostfile
            "deepspeed_multinode_launcher": "standard",
        }
    elif launcher.backend == "fsdp":
        config["distributed_type"] = "FSDP"
        config["fsdp_config"] = {
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_forward_prefetch": False,
            "fsdp_offload_params": launcher.offload,
            "fsdp_sharding_strategy": "FULL_SHARD",
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_sync_module_states": True,
            "fsdp_use_orig_params": True,
        }
    else:  # DDP; on CPU-only machines the trainer asks accelerate for gloo
        config["distributed_type"] = "MULTI_GPU" if launcher.world_size > 1 else "NO"
    if config["main_process_ip"] is None:
        del config["main_process_ip"]
    return config


def launch_command(config_file: str, kind: str, stage_file: str, machine_args: list[str] | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config_file,
        *(machine_args or []),
        "-m",
        f"mixer.train.{kind}",
        "--config",
        stage_file,
    ]


def display(command: list[str]) -> str:
    """The command as a user would type it (`accelerate launch ...`)."""
    shown = ["accelerate", "launch", *command[3:]] if command[1:3] == ["-m", "accelerate.commands.launch"] else command
    return shlex.join(shown)


def slurm_script(job: str, stages: list[tuple[str, Launcher, list[str]]], log_dir: str) -> str:
    """One sbatch job running the stages in order; each stage is one `accelerate launch` per node (srun),
    with the machine rank from SLURM_PROCID and the first node as the main process."""
    nodes = max(launcher.num_machines for _, launcher, _ in stages)
    gpus = max(launcher.num_processes for _, launcher, _ in stages)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus}",
        "#SBATCH --exclusive",
        f"#SBATCH --output={log_dir}/slurm-%j.out",
        "set -euo pipefail",
        'export MAIN_PROCESS_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "",
    ]
    for name, launcher, command in stages:
        args = [a for a in command if a]
        machine = (
            " --num_machines $SLURM_NNODES --machine_rank $SLURM_PROCID --main_process_ip $MAIN_PROCESS_IP"
            f" --main_process_port {launcher.main_process_port}"
        )
        accelerate = shlex.join(["accelerate", "launch", *args[3:5]]) + machine + " " + shlex.join(args[5:])
        lines += [
            f"# stage {name}: {launcher.num_machines} node(s) x {launcher.num_processes} process(es), "
            f"{launcher.backend}",
            f"srun --nodes={launcher.num_machines} --ntasks-per-node=1 bash -c '{accelerate}'",
            "",
        ]
    return "\n".join(lines)
