"""magnitude, random and nm on every built-in model: target reached, output shape unchanged, finite loss, zeros
kept through optimizer steps, ONNX export of the pruned model (deploy form) not blocked."""

from __future__ import annotations

import io

import pytest
import torch
from test_structured import _available, _build, _context, _deploy
from torch import nn

from plugins.pruners.magnitude import MagnitudePruner, RandomPruner
from plugins.pruners.nm import NMPruner, is_nm_sparse

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = ["transformer", "informer", "autoformer", "fedformer", "crossformer", "patchtst", "itransformer",
          "dlinear"]
CASES = [(MagnitudePruner(), 0.8), (RandomPruner(), 0.5), (NMPruner(), 0.5)]


def _masked_steps(model: nn.Module, masks: dict, inputs: tuple, steps: int = 2) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    params = dict(model.named_parameters())
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        out = model(*inputs)
        loss = nn.functional.mse_loss(out, torch.zeros_like(out))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask.to(params[name].dtype))
    model.eval()
    return float(loss)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("pruner", "target"), CASES, ids=[c[0].name for c in CASES])
def test_unstructured_on_model(name, pruner, target):
    _available(name)
    model = _build(name)
    context = _context(name)
    dense_shape = model(*context.example_inputs).shape
    result = pruner.prune(model, target, pruner.params_model(), context)
    params = dict(model.named_parameters())
    zeros = sum(int((params[n] == 0).sum()) for n in result.masks)
    total = sum(params[n].numel() for n in result.masks)
    assert zeros / total == pytest.approx(target, abs=0.01)
    assert model(*context.example_inputs).shape == dense_shape
    loss = _masked_steps(model, result.masks, context.example_inputs)
    assert torch.isfinite(torch.tensor(loss))
    for n, mask in result.masks.items():
        assert torch.all(params[n][~mask] == 0), n
        if pruner.name == "nm":
            assert is_nm_sparse(params[n])
    if pruner.name == "magnitude":
        _deploy(model)
        torch.onnx.export(model, context.example_inputs, io.BytesIO(), dynamo=False)
