"""Training: DreamBooth-LoRA and the scripts that reproduce every shipped asset."""
