"""Windowed forecasting data: the types every dataset plugin produces and every step consumes.

A split is one float32 tensor of scaled values plus its calendar marks; windows are views over it, so no
per-sample copies are made until a batch is gathered. Conventions follow the long-term-forecasting literature
(Informer / Autoformer / Time-Series-Library): a window of ``seq_len`` history steps is followed by
``pred_len`` targets; the decoder sees the last ``label_len`` history steps followed by ``pred_len`` zeros.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

import torch

TimeEncoding = Literal["timeF", "calendar"]


@dataclass(frozen=True)
class Windows:
    """Window lengths of one forecasting task."""

    seq_len: int
    label_len: int
    pred_len: int

    @property
    def total(self) -> int:
        return self.seq_len + self.pred_len


@dataclass(frozen=True)
class DataShape:
    """What a model needs to know about the data to build itself."""

    enc_in: int
    dec_in: int
    c_out: int
    seq_len: int
    label_len: int
    pred_len: int
    freq: str = "h"
    n_marks_timef: int = 4
    n_marks_calendar: int = 4

    def n_marks(self, encoding: TimeEncoding) -> int:
        return self.n_marks_timef if encoding == "timeF" else self.n_marks_calendar


class Batch(NamedTuple):
    """One batch, in the argument order of every model's ``forward``; ``y`` is the target."""

    x_enc: torch.Tensor  # [B, seq_len, enc_in]
    x_mark_enc: torch.Tensor  # [B, seq_len, n_marks]
    x_dec: torch.Tensor  # [B, label_len + pred_len, dec_in]
    x_mark_dec: torch.Tensor  # [B, label_len + pred_len, n_marks]
    y: torch.Tensor  # [B, pred_len, c_out]

    @property
    def inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.x_enc, self.x_mark_enc, self.x_dec, self.x_mark_dec)


@dataclass(frozen=True)
class SeriesSplit:
    """One contiguous split: scaled values, target columns and both calendar encodings, row-aligned."""

    values: torch.Tensor  # [rows, enc_in] float32, scaled
    target_columns: tuple[int, ...]  # which columns of ``values`` are forecast (c_out of them)
    marks_timef: torch.Tensor  # [rows, n_marks_timef] float32 in [-0.5, 0.5]
    marks_calendar: torch.Tensor  # [rows, n_marks_calendar] float32 holding integer calendar fields

    def __post_init__(self) -> None:
        rows = self.values.shape[0]
        if self.marks_timef.shape[0] != rows or self.marks_calendar.shape[0] != rows:
            raise ValueError("values and marks of a split must have the same number of rows")

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])


def _window_view(table: torch.Tensor, offset: int, count: int, length: int) -> torch.Tensor:
    """``[count, length, cols]`` view whose item ``i`` is ``table[offset + i : offset + i + length]``.

    Indexing its first dimension copies whole windows as contiguous blocks, much faster than gathering an
    index tensor of every (window, step) pair.
    """
    table = table.contiguous()
    cols = table.shape[1]
    return table[offset:].as_strided((count, length, cols), (cols, cols, 1))


def _select_columns(windows: torch.Tensor, columns: tuple[int, ...]) -> torch.Tensor:
    first, count = columns[0], len(columns)
    if columns == tuple(range(first, first + count)):  # M and MS: a slice, no gather
        return windows if count == windows.shape[2] else windows[..., first : first + count].contiguous()
    return windows[..., list(columns)]


@dataclass(frozen=True)
class WindowedSplit:
    """All sliding windows of a split, gathered lazily into batches."""

    series: SeriesSplit
    windows: Windows
    time_encoding: TimeEncoding = "timeF"

    def __len__(self) -> int:
        return max(0, self.series.rows - self.windows.total + 1)

    def with_time_encoding(self, encoding: TimeEncoding) -> WindowedSplit:
        return replace(self, time_encoding=encoding)

    def _marks(self) -> torch.Tensor:
        return self.series.marks_timef if self.time_encoding == "timeF" else self.series.marks_calendar

    def batch(self, starts: torch.Tensor) -> Batch:
        """Gather the windows starting at the given row indices (a 1-D int64 tensor) into contiguous tensors."""
        w = self.windows
        n = len(self)
        values, marks = self.series.values, self._marks()
        dec_start = w.seq_len - w.label_len
        x_enc = _window_view(values, 0, n, w.seq_len)[starts]
        x_dec = values.new_zeros(len(starts), w.label_len + w.pred_len, values.shape[1])
        x_dec[:, : w.label_len] = _window_view(values, dec_start, n, w.label_len)[starts]
        y = _select_columns(_window_view(values, w.seq_len, n, w.pred_len)[starts], self.series.target_columns)
        x_mark_enc = _window_view(marks, 0, n, w.seq_len)[starts]
        x_mark_dec = _window_view(marks, dec_start, n, w.label_len + w.pred_len)[starts]
        return Batch(x_enc, x_mark_enc, x_dec, x_mark_dec, y)

    def iter_batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        max_batches: int | None = None,
    ) -> Iterator[Batch]:
        """Yield batches in order (or shuffled with ``generator``); the last partial batch is kept unless
        ``drop_last``."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for i, begin in enumerate(range(0, stop, batch_size)):
            if max_batches is not None and i >= max_batches:
                return
            yield self.batch(order[begin : begin + batch_size])

    def num_batches(self, batch_size: int, *, drop_last: bool = False, max_batches: int | None = None) -> int:
        n = len(self) // batch_size if drop_last else -(-len(self) // batch_size)
        return n if max_batches is None else min(n, max_batches)


def seed_offset(seed: int, n: int) -> int:
    """Where a seed's calibration windows start in a split of ``n`` windows: 0 for seed 0 (the windows used
    before seeds varied them), a spread-out position for any other seed (a multiplicative hash, no RNG state)."""
    return (seed * 2654435761) % n if n > 0 else 0


@dataclass(frozen=True)
class Scaler:
    """Standard scaling fitted on the training rows; ``inverse`` maps scaled target columns back."""

    mean: torch.Tensor  # [enc_in]
    std: torch.Tensor  # [enc_in]

    def inverse(self, scaled: torch.Tensor, columns: tuple[int, ...]) -> torch.Tensor:
        idx = list(columns)
        return scaled * self.std[idx] + self.mean[idx]


@dataclass(frozen=True)
class DatasetSplits:
    """What a dataset plugin returns: three windowed splits, their shape and the fitted scaler."""

    train: WindowedSplit
    val: WindowedSplit
    test: WindowedSplit
    shape: DataShape
    scaler: Scaler
    info: dict = field(default_factory=dict)  # JSON-able facts: file, sha256, columns, borders...

    def with_time_encoding(self, encoding: TimeEncoding) -> DatasetSplits:
        return replace(
            self,
            train=self.train.with_time_encoding(encoding),
            val=self.val.with_time_encoding(encoding),
            test=self.test.with_time_encoding(encoding),
        )


def example_inputs(
    shape: DataShape, batch_size: int, encoding: TimeEncoding = "timeF", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random inputs of the right shapes for building, exporting or timing a model without data."""
    g = torch.Generator().manual_seed(seed)
    dec_len = shape.label_len + shape.pred_len
    n_marks = shape.n_marks(encoding)

    def marks(length: int) -> torch.Tensor:
        if encoding == "timeF":
            return torch.rand(batch_size, length, n_marks, generator=g) - 0.5
        return torch.randint(0, 7, (batch_size, length, n_marks), generator=g).float()

    x_enc = torch.randn(batch_size, shape.seq_len, shape.enc_in, generator=g)
    history = x_enc[:, shape.seq_len - shape.label_len :, : shape.dec_in]
    x_dec = torch.cat([history, torch.zeros(batch_size, shape.pred_len, shape.dec_in)], dim=1)
    return x_enc, marks(shape.seq_len), x_dec, marks(dec_len)
