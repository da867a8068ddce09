"""Fixtures of the runtime tests."""

from __future__ import annotations

import os

import pytest
import torch
from runtime_toys import TinyForecaster, ValuesOnly
from torch import nn

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


@pytest.fixture
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return TinyForecaster().eval()


@pytest.fixture
def values_only() -> nn.Module:
    torch.manual_seed(1)
    return ValuesOnly().eval()
