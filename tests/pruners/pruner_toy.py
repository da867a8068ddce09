"""A tiny forecaster with the model forward convention, for fast pruner tests."""

from __future__ import annotations

import torch
from torch import nn

from tsbench_core.protocols import PruneContext


class ToyForecaster(nn.Module):
    """Conv1d embedding -> two Linear layers -> output projection over time steps."""

    def __init__(self, c_in: int = 3, d_model: int = 16, seq_len: int = 12, pred_len: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1)
        self.body = nn.Sequential(nn.Linear(d_model, 32), nn.GELU(), nn.Linear(32, d_model))
        self.time = nn.Linear(seq_len, pred_len)
        self.projection = nn.Linear(d_model, c_in)

    def forward(self, x_enc, x_mark_enc=None, x_dec=None, x_mark_dec=None):
        h = self.embed(x_enc.transpose(1, 2)).transpose(1, 2)  # B L D
        h = h + self.body(h)
        h = self.time(h.transpose(1, 2)).transpose(1, 2)  # B P D
        return self.projection(h)


def toy_inputs(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 12, 3, generator=g), torch.zeros(batch, 12, 4),
            torch.zeros(batch, 8, 3), torch.zeros(batch, 8, 4))


def toy_context(model_name: str = "toy", seed: int = 0, example_inputs=None, train=None) -> PruneContext:
    inputs = example_inputs if example_inputs is not None else toy_inputs()

    def batches():
        g = torch.Generator().manual_seed(1)
        for _ in range(2):
            x = torch.randn(4, 12, 3, generator=g)
            y = torch.randn(4, 4, 3, generator=g)
            yield (x, torch.zeros(4, 12, 4), torch.zeros(4, 8, 3), torch.zeros(4, 8, 4), y)

    return PruneContext(model_name=model_name, example_inputs=inputs, calibration_batches=batches,
                        loss_fn=nn.functional.mse_loss, train=train, seed=seed)


def train_with_masks(model: nn.Module, masks: dict[str, torch.Tensor], steps: int = 5) -> list[float]:
    """A few Adam steps re-applying masks after each step (what the lead's loop does); returns losses."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(2)
    losses = []
    for _ in range(steps):
        x = torch.randn(4, 12, 3, generator=g)
        y = torch.randn(4, 4, 3, generator=g)
        out = model(x, torch.zeros(4, 12, 4), torch.zeros(4, 8, 3), torch.zeros(4, 8, 4))
        loss = nn.functional.mse_loss(out[:, -4:, -3:], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask.to(params[name].dtype))
        losses.append(float(loss))
    return losses


def toy_train(model: nn.Module, epochs: int = 1, lr: float = 1e-3, masks=None, on_step=None,
              wrap_optimizer=None, max_train_batches=None, steps_per_epoch: int = 6, select_from_epoch=0) -> dict:
    """A stand-in for ``context.train`` with the same keyword interface as the lead's ``train_model`` (it keeps
    the last weights, so ``select_from_epoch`` has nothing to select)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if wrap_optimizer is not None:
        opt = wrap_optimizer(model, opt, steps_per_epoch)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(3)
    losses = []
    for epoch in range(epochs):
        for step in range(steps_per_epoch):
            x, y = torch.randn(4, 12, 3, generator=g), torch.randn(4, 4, 3, generator=g)
            loss = nn.functional.mse_loss(model(x, torch.zeros(4, 12, 4), None, None), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for name, mask in masks.items():
                        params[name].mul_(mask.to(params[name].dtype))
            if on_step is not None:
                on_step(epoch + (step + 1) / steps_per_epoch)
            losses.append(float(loss))
    return {"train_losses": losses}
