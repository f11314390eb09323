"""Training stages: launcher (accelerate/DeepSpeed/FSDP/SLURM) apart from the trainers (sft, dpo)."""
