"""models.training.gan: ESRGAN's relativistic GAN losses."""

import torch

from models.training.gan import relativistic_losses


def test_relativistic_gan_losses_reward_the_right_side():
    real, fake = torch.full((4, 1), 3.0), torch.full((4, 1), -3.0)
    d_loss, g_loss = relativistic_losses(real, fake)
    assert d_loss < 0.01 < g_loss
