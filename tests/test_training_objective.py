"""The trainers' regression target follows the base's scheduler: the noise, or the velocity (SD2-v)."""

import numpy as np
import torch

from fusion.gate_training import denoising_target
from training.lora_trainer import LoraTrainer, LoraTrainingConfig, TrainingData
from training.testing import random_toy_base


def _data() -> TrainingData:
    pixels = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    return TrainingData(images=pixels, captions=["a red hartok on a blue background", "a hartok on white"])


def test_target_is_noise_or_velocity_by_prediction_type():
    base = random_toy_base()
    scheduler = base.pipe.scheduler
    x0, noise = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    t = torch.tensor([10, 900])
    assert torch.equal(denoising_target(scheduler, x0, noise, t), noise)
    v_scheduler = type(scheduler).from_config({**scheduler.config, "prediction_type": "v_prediction"})
    velocity = denoising_target(v_scheduler, x0, noise, t)
    alpha = v_scheduler.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    sigma = (1 - v_scheduler.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(velocity, alpha * noise - sigma * x0)


def test_lora_trainer_loss_changes_with_the_prediction_type():
    config = LoraTrainingConfig(steps=1, batch_size=2, rank=2)
    epsilon = LoraTrainer(random_toy_base().pipe, _data(), config).loss(0).item()
    v_pipe = random_toy_base().pipe  # the same weights (seed 0)
    v_pipe.scheduler = type(v_pipe.scheduler).from_config({**v_pipe.scheduler.config,
                                                           "prediction_type": "v_prediction"})
    velocity = LoraTrainer(v_pipe, _data(), config).loss(0).item()
    assert abs(epsilon - velocity) > 1e-4  # the same batch and noise, another target and weighting
