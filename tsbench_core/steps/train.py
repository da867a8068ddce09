"""Training and evaluation: the literature's protocol (Adam, MSE, lr halved every epoch, early stopping)."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from tsbench_core.data import Batch, DatasetSplits, WindowedSplit
from tsbench_core.errors import CellError
from tsbench_core.progress import NullProgress, Progress
from tsbench_core.spec import TrainingConfig
from tsbench_core.steps.forecast_metrics import ForecastErrors

OptimizerHook = Callable[[nn.Module, torch.optim.Optimizer, int], torch.optim.Optimizer]
StepHook = Callable[[float], None]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels (CPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def choose_device(preference: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA where there is none is a cell error."""
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        raise CellError("training.device is 'cuda' but torch sees no CUDA device on this machine")
    return torch.device("cpu")


@dataclass
class TrainOutcome:
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def forecast(model: nn.Module, batch: Batch, c_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Model output restricted to the forecast channels, and the target, on ``device``."""
    inputs = [t.to(device, non_blocking=True) for t in batch.inputs]
    out = model(*inputs)
    return out[..., -c_out:], batch.y.to(device, non_blocking=True)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor] | None) -> None:
    """Zero the pruned weights again (after an optimizer step moved them)."""
    if not masks:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            param = params[name]
            param.mul_(mask.to(param.device, param.dtype))


def lr_at(config_lr: float, schedule: str, epoch: int, epochs: int) -> float:
    """Learning rate of the 0-based ``epoch``. ``type1`` is the reference code's ``lradj type1``: it sets
    ``lr * 0.5 ** (e - 1)`` after the 1-based epoch ``e``, so epochs 1 and 2 both run at ``lr``."""
    if schedule == "halve":
        return config_lr * 0.5**epoch
    if schedule == "type1":
        return config_lr * 0.5 ** max(epoch - 1, 0)
    if schedule == "cosine":
        return config_lr * 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs)))
    return config_lr


@torch.no_grad()
def validation_loss(model: nn.Module, split: WindowedSplit, batch_size: int, c_out: int, device: torch.device,
                    max_batches: int | None = None) -> float:
    model.eval()
    total, count = 0.0, 0
    for batch in split.iter_batches(batch_size, max_batches=max_batches):
        pred, y = forecast(model, batch, c_out, device)
        total += torch.sum((pred - y) ** 2).item()
        count += y.numel()
    return total / max(count, 1)


def train_model(
    model: nn.Module,
    splits: DatasetSplits,
    config: TrainingConfig,
    *,
    seed: int = 0,
    epochs: int | None = None,
    lr: float | None = None,
    max_train_batches: int | None = None,
    masks: dict[str, torch.Tensor] | None = None,
    on_step: StepHook | None = None,
    wrap_optimizer: OptimizerHook | None = None,
    progress: Progress | None = None,
    select_from_epoch: int = 0,
) -> TrainOutcome:
    """Train in place and leave the best (lowest validation loss) weights in ``model``.

    ``epochs``/``lr``/``max_train_batches`` override the config (fine-tuning). ``masks`` are re-applied after
    every optimizer step; ``on_step(epoch_progress)`` is called after each step; ``wrap_optimizer(model, opt,
    steps_per_epoch)`` may replace the optimizer (e.g. a SparseML manager). ``select_from_epoch``: epochs before
    it (0-based) are never restored and do not count towards early stopping (pruning during training: only
    epochs under the final mask are candidates); the last epoch is always a candidate.
    """
    progress = progress or NullProgress()
    epochs = config.epochs if epochs is None else epochs
    base_lr = config.lr if lr is None else lr
    max_batches = max_train_batches if max_train_batches is not None else config.max_train_batches
    device = choose_device(config.device)
    c_out = splits.shape.c_out
    model.to(device)
    optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=base_lr)
    steps_per_epoch = splits.train.num_batches(config.batch_size, drop_last=config.drop_last,
                                               max_batches=max_batches)
    if wrap_optimizer is not None:
        optimizer = wrap_optimizer(model, optimizer, steps_per_epoch)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    generator = torch.Generator().manual_seed(seed)
    apply_masks(model, masks)

    start = time.perf_counter()
    outcome = TrainOutcome(epochs_run=0, best_epoch=-1, best_val_loss=math.inf)
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    first_candidate = min(max(select_from_epoch, 0), max(epochs - 1, 0))
    epoch_task = progress.task("epochs", total=epochs)
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(base_lr, config.lr_schedule, epoch, epochs)
        model.train()
        batch_task = progress.task(f"epoch {epoch + 1}/{epochs}", total=steps_per_epoch)
        total, count = 0.0, 0
        for step, batch in enumerate(
            splits.train.iter_batches(config.batch_size, shuffle=True, generator=generator,
                                      drop_last=config.drop_last, max_batches=max_batches)
        ):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                pred, y = forecast(model, batch, c_out, device)
                loss = torch.mean((pred.float() - y) ** 2)
            if not torch.isfinite(loss):
                batch_task.close()
                epoch_task.close()
                raise CellError(f"training loss became {loss.item()} at epoch {epoch + 1}, batch {step + 1}")
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            apply_masks(model, masks)
            if on_step is not None:
                on_step(epoch + (step + 1) / max(steps_per_epoch, 1))
            total += loss.item() * len(y)
            count += len(y)
            batch_task.advance()
        batch_task.close()
        val = validation_loss(model, splits.val, config.batch_size, c_out, device, config.max_eval_batches)
        if not math.isfinite(val):
            epoch_task.close()
            raise CellError(f"validation loss became {val} at epoch {epoch + 1}")
        outcome.train_losses.append(total / max(count, 1))
        outcome.val_losses.append(val)
        outcome.epochs_run = epoch + 1
        epoch_task.advance()
        if epoch < first_candidate:
            continue
        if val < outcome.best_val_loss:
            outcome.best_val_loss, outcome.best_epoch, stale = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                outcome.stopped_early = True
                break
    epoch_task.close()
    model.load_state_dict(best_state)
    apply_masks(model, masks)
    outcome.seconds = time.perf_counter() - start
    model.eval()
    return outcome


@torch.no_grad()
def evaluate(model: nn.Module, splits: DatasetSplits, batch_size: int, device: torch.device | None = None,
             max_batches: int | None = None) -> dict[str, float]:
    """Test MSE and MAE over every test window (last partial batch included), on the scaled data; also on the
    original scale when the dataset asks for it (``info["original_scale_metrics"]``)."""
    device = device or next(model.parameters()).device
    model.eval()
    errors = ForecastErrors(splits)
    for batch in splits.test.iter_batches(batch_size, max_batches=max_batches):
        errors.add(*forecast(model, batch, splits.shape.c_out, device))
    return errors.metrics()
