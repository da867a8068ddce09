"""What every built-in model plugin shares: a plugin object wrapping a params model and a builder, and the
hyperparameters common to the encoder-decoder Transformers (names and ETTh1 defaults of the field's
long-term-forecasting scripts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from torch import nn

from tsbench_core.data import DataShape
from tsbench_core.errors import UserError
from tsbench_core.protocols import PluginParams, time_encoding_of


@dataclass(frozen=True)
class ModelPluginEntry:
    """A model plugin: ``build(params, shape)`` calls ``factory`` with validated params and the data shape."""

    name: str
    description: str
    params_model: type[BaseModel]
    factory: Callable[[BaseModel, DataShape], nn.Module]

    def build(self, params: BaseModel, shape: DataShape) -> nn.Module:
        return self.factory(params, shape)


class EncDecParams(PluginParams):
    """Hyperparameters shared by Transformer, Informer, Autoformer and FEDformer.

    Window lengths, channel counts and ``freq`` come from the data (``DataShape``), not from here.
    """

    d_model: int = Field(512, ge=1, description="width of the model")
    n_heads: int = Field(8, ge=1, description="attention heads (d_model must be divisible by it)")
    e_layers: int = Field(2, ge=1, description="encoder layers")
    d_layers: int = Field(1, ge=1, description="decoder layers")
    d_ff: int = Field(2048, ge=1, description="width of the position-wise feed-forward network")
    factor: int = Field(3, ge=1, description="sampling factor (ProbSparse, auto-correlation top-k)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout probability")
    embed: Literal["timeF", "fixed", "learned"] = Field(
        "timeF", description="time-feature encoding: normalised features (timeF) or calendar embeddings")
    activation: Literal["gelu", "relu"] = Field("gelu", description="feed-forward activation")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> EncDecParams:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        return self


def check_shape(model: str, shape: DataShape, params: BaseModel) -> None:
    """Reject data shapes the model cannot be built for, naming the field and what to change."""
    from plugins.models.layers.embedding import TIMEF_DIMS

    for field in ("enc_in", "dec_in", "c_out", "seq_len", "pred_len"):
        if getattr(shape, field) < 1:
            raise UserError(f"model {model}: data shape {field}={getattr(shape, field)} must be >= 1")
    if not 0 <= shape.label_len <= shape.seq_len:
        raise UserError(
            f"model {model}: label_len={shape.label_len} must be between 0 and seq_len={shape.seq_len}")
    if shape.freq not in TIMEF_DIMS:
        raise UserError(f"model {model}: unknown freq {shape.freq!r} (valid: {', '.join(TIMEF_DIMS)})")
    if time_encoding_of(params) == "timeF" and TIMEF_DIMS[shape.freq] != shape.n_marks_timef:
        raise UserError(
            f"model {model}: freq {shape.freq!r} needs {TIMEF_DIMS[shape.freq]} time features but the data "
            f"provides n_marks_timef={shape.n_marks_timef}; set the dataset's freq to match")
