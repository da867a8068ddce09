"""``WindowedSplit.batch`` against a plain per-window reference written with Python slicing."""

from __future__ import annotations

import pytest
import torch

from tsbench_core.data import SeriesSplit, WindowedSplit, Windows


def series(rows: int, cols: int, targets: tuple[int, ...]) -> SeriesSplit:
    g = torch.Generator().manual_seed(rows * 31 + cols)
    return SeriesSplit(torch.randn(rows, cols, generator=g), targets, torch.rand(rows, 4, generator=g) - 0.5,
                       torch.randint(0, 7, (rows, 5), generator=g).float())


def reference(s: SeriesSplit, w: Windows, start: int, marks: torch.Tensor):
    enc_end = start + w.seq_len
    dec = s.values[enc_end - w.label_len : enc_end]
    x_dec = torch.cat([dec, torch.zeros(w.pred_len, s.values.shape[1])])
    y = s.values[enc_end : enc_end + w.pred_len][:, list(s.target_columns)]
    return (s.values[start:enc_end], marks[start:enc_end], x_dec,
            marks[enc_end - w.label_len : enc_end + w.pred_len], y)


@pytest.mark.parametrize("windows,targets", [
    (Windows(12, 6, 4), (0, 1, 2)),  # M
    (Windows(12, 6, 4), (2,)),  # MS
    (Windows(10, 0, 5), (0, 2)),  # no decoder history, non-contiguous targets
    (Windows(7, 7, 3), (1,)),  # label_len == seq_len
])
@pytest.mark.parametrize("encoding", ["timeF", "calendar"])
def test_batch_matches_reference(windows: Windows, targets: tuple[int, ...], encoding: str) -> None:
    s = series(50, 3, targets)
    split = WindowedSplit(s, windows).with_time_encoding(encoding)
    assert len(split) == 50 - windows.seq_len - windows.pred_len + 1
    marks = s.marks_timef if encoding == "timeF" else s.marks_calendar
    starts = torch.tensor([len(split) - 1, 0, 5, 5, 17])
    batch = split.batch(starts)
    for i, start in enumerate(starts.tolist()):
        for got, want in zip(batch, reference(s, windows, start, marks), strict=True):
            assert torch.equal(got[i], want)
    assert all(t.is_contiguous() for t in batch)


def test_window_past_the_end_is_an_error() -> None:
    split = WindowedSplit(series(30, 2, (0, 1)), Windows(8, 4, 4))
    with pytest.raises(IndexError):
        split.batch(torch.tensor([len(split)]))


def test_batch_does_not_alias_the_split() -> None:
    s = series(40, 2, (0, 1))
    split = WindowedSplit(s, Windows(8, 4, 4))
    before = s.values.clone()
    batch = split.batch(torch.tensor([0, 1]))
    for tensor in batch:
        tensor.add_(1.0)  # a model or a loss modifying its inputs in place must not corrupt the data
    assert torch.equal(s.values, before)
