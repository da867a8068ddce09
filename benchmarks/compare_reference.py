"""Forward latency of tsbench's models against NeuralForecast's ports of the original authors' code.

Not part of the test suite and not run in the project's venv: it needs ``neuralforecast``, installed in a
separate venv (see docs/models.md, "Speed against a reference implementation")::

    python3.11 -m venv /work/nfvenv
    /work/nfvenv/bin/pip install torch==2.13.0          # first and pinned: keeps pip off the CUDA build
    /work/nfvenv/bin/pip install neuralforecast==3.3.0 "pyarrow<21"   # pyarrow 21+ needs numpy 2
    /work/nfvenv/bin/pip install -e .                   # tsbench, core dependencies
    /work/nfvenv/bin/python benchmarks/compare_reference.py --out-dir tsbench-results/reference

Both sides are built at the same architecture hyperparameters (ETTh1 defaults of the long-term-forecasting
scripts) and fed inputs of the same shapes. NeuralForecast's Transformer family, PatchTST and DLinear are
univariate (each channel a separate series), so both sides get 32 windows x 7 channels = 224 univariate
windows (ours with enc_in = dec_in = c_out = 1); iTransformer is multivariate on both sides (batch 32, 7
series). The inner ``nn.Module.forward`` is called directly (NeuralForecast: with a ``windows_batch`` dict;
ours: ``(x_enc, x_mark_enc, x_dec, x_mark_dec)``): no Lightning trainer, no scaler, no data loader.
Timings alternate the two implementations (A B B A ...) within each thread setting; median and p10 per side.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

SEQ_LEN, LABEL_LEN, PRED_LEN = 96, 48, 96
WINDOWS, CHANNELS, N_MARKS = 32, 7, 4
MARK_NAMES = [f"mark{i}" for i in range(N_MARKS)]
# NeuralForecast's decoder length is label_len + h with label_len = ceil(input_size * multiplier).
DEC_MULTIPLIER = LABEL_LEN / SEQ_LEN
# Transformer-family hyperparameters (TSL names -> NeuralForecast names).
ENC_DEC = dict(d_model=512, n_heads=8, e_layers=2, d_layers=1, d_ff=2048, dropout=0.1, activation="gelu")


@dataclass
class Pair:
    """One model on both sides: builders and the inputs each side's forward takes."""

    name: str
    ours_params: dict[str, Any]
    theirs: Callable[[], nn.Module]
    univariate: bool = True
    note: str = ""


@dataclass
class Row:
    """Measurements for one model."""

    model: str
    batch: str
    params_ours: int
    params_theirs_numel: int
    params_theirs_real: int
    trainable_ours: int
    trainable_theirs_real: int
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    note: str = ""


def _nf_enc_dec(cls_name: str, **extra: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import neuralforecast.models as nfm

        return getattr(nfm, cls_name)(
            h=PRED_LEN, input_size=SEQ_LEN, decoder_input_size_multiplier=DEC_MULTIPLIER,
            futr_exog_list=MARK_NAMES, hidden_size=ENC_DEC["d_model"], n_head=ENC_DEC["n_heads"],
            encoder_layers=ENC_DEC["e_layers"], decoder_layers=ENC_DEC["d_layers"],
            conv_hidden_size=ENC_DEC["d_ff"], dropout=ENC_DEC["dropout"], activation=ENC_DEC["activation"],
            **extra)
    return build


def _nf_patchtst() -> nn.Module:
    from neuralforecast.models import PatchTST

    # TSL PatchTST_ETTh1 96->96: d_model 512, 2 heads, 1 layer, d_ff 2048, patch 16/8, dropout 0.1,
    # instance normalisation without affine (RevIN, mean not last value), plain (not residual) attention,
    # fixed sinusoidal positions.
    return PatchTST(h=PRED_LEN, input_size=SEQ_LEN, encoder_layers=1, n_heads=2, hidden_size=512,
                    linear_hidden_size=2048, dropout=0.1, fc_dropout=0.1, head_dropout=0.0, attn_dropout=0.0,
                    patch_len=16, stride=8, revin=True, revin_affine=False, revin_subtract_last=False,
                    activation="gelu", res_attention=False, learn_pos_embed=False)


def _nf_itransformer() -> nn.Module:
    from neuralforecast.models import iTransformer

    return iTransformer(h=PRED_LEN, input_size=SEQ_LEN, n_series=CHANNELS, hidden_size=128, n_heads=8,
                        e_layers=2, d_ff=128, dropout=0.1, use_norm=True)


def _nf_dlinear() -> nn.Module:
    from neuralforecast.models import DLinear

    return DLinear(h=PRED_LEN, input_size=SEQ_LEN, moving_avg_window=25)


PAIRS = [
    Pair("transformer", dict(ENC_DEC), _nf_enc_dec("VanillaTransformer")),
    Pair("informer", dict(ENC_DEC, factor=3, distil=True), _nf_enc_dec("Informer", factor=3, distil=True)),
    Pair("autoformer", dict(ENC_DEC, factor=3, moving_avg=25),
         _nf_enc_dec("Autoformer", factor=3, MovingAvg_window=25)),
    Pair("fedformer", dict(ENC_DEC, moving_avg=25, modes=32, mode_select="random"),
         _nf_enc_dec("FEDformer", MovingAvg_window=25, modes=32, mode_select="random")),
    Pair("patchtst", dict(d_model=512, n_heads=2, e_layers=1, d_ff=2048, patch_len=16, stride=8, dropout=0.1),
         _nf_patchtst),
    Pair("itransformer", dict(d_model=128, n_heads=8, e_layers=2, d_ff=128, dropout=0.1, use_marks=False),
         _nf_itransformer, univariate=False,
         note="ours with use_marks=false (7 variate tokens on both sides; our default adds 4 mark tokens)"),
    Pair("dlinear", dict(moving_avg=25, individual=False), _nf_dlinear),
]


def _build_ours(pair: Pair) -> nn.Module:
    from tsbench_core.data import DataShape
    from tsbench_core.registry import load_plugins

    plugin = load_plugins().models[pair.name]
    params = plugin.params_model(**pair.ours_params)
    channels = 1 if pair.univariate else CHANNELS
    shape = DataShape(enc_in=channels, dec_in=channels, c_out=channels, seq_len=SEQ_LEN, label_len=LABEL_LEN,
                      pred_len=PRED_LEN)
    return plugin.build(params, shape)


def _inputs(univariate: bool, univariate_batch: int,
            seed: int = 0) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """The same window data in both calling conventions."""
    g = torch.Generator().manual_seed(seed)
    batch, channels = (univariate_batch, 1) if univariate else (WINDOWS, CHANNELS)
    y = torch.randn(batch, SEQ_LEN, channels, generator=g)
    marks = torch.rand(batch, SEQ_LEN + PRED_LEN, N_MARKS, generator=g) - 0.5  # timeF-like, whole window
    x_dec = torch.cat([y[:, -LABEL_LEN:], torch.zeros(batch, PRED_LEN, channels)], dim=1)
    ours = (y, marks[:, :SEQ_LEN], x_dec, marks[:, SEQ_LEN - LABEL_LEN:])
    # NeuralForecast slices futr_exog itself: [:, :input_size] for the encoder, [:, -(label_len + h):] for
    # the decoder; univariate models ignore it when built without futr_exog_list.
    theirs = {"insample_y": y, "futr_exog": marks if univariate else None,
              "insample_mask": torch.ones(batch, SEQ_LEN), "hist_exog": None, "stat_exog": None}
    return ours, theirs


def _count(model: nn.Module, trainable_only: bool = False, real: bool = True) -> int:
    """Scalar parameters; a complex parameter holds two real numbers (``numel`` counts one)."""
    total = 0
    for p in model.parameters():
        if trainable_only and not p.requires_grad:
            continue
        total += p.numel() * (2 if real and p.is_complex() else 1)
    return total


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def _p10(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.1 * (len(ordered) - 1)))]


def compare(pair: Pair, threads: list[int], rounds: int, min_seconds: float = 2.0,
            univariate_batch: int = WINDOWS * CHANNELS) -> Row:
    torch.manual_seed(0)
    ours = _build_ours(pair).eval()
    torch.manual_seed(0)
    theirs = pair.theirs().eval()
    ours_in, theirs_in = _inputs(pair.univariate, univariate_batch)
    row = Row(model=pair.name,
              batch=f"{univariate_batch} x 1 channel" if pair.univariate else f"{WINDOWS} x {CHANNELS} channels",
              params_ours=_count(ours), params_theirs_numel=_count(theirs, real=False),
              params_theirs_real=_count(theirs), trainable_ours=_count(ours, trainable_only=True),
              trainable_theirs_real=_count(theirs, trainable_only=True), note=pair.note)
    calls = {"ours": lambda: ours(*ours_in), "theirs": lambda: theirs(theirs_in)}
    before = torch.get_num_threads()
    row.load.append(round(os.getloadavg()[0], 2))
    try:
        with torch.no_grad():
            a, b = calls["ours"](), calls["theirs"]()
            if a.shape != b.shape:
                raise RuntimeError(f"{pair.name}: output shapes differ: ours {tuple(a.shape)}, theirs {tuple(b.shape)}")
            for n in threads:
                torch.set_num_threads(n)
                samples: dict[str, list[float]] = {"ours": [], "theirs": []}
                # warm-up at this thread count; fast models get more rounds (about min_seconds per side)
                slowest = max(_time(calls[side]) for side in ("ours", "theirs"))
                n_rounds = max(rounds, min(200, int(min_seconds * 1000.0 / max(slowest, 1e-3))))
                for r in range(n_rounds):
                    order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")  # A B, B A, ...
                    for side in order:
                        samples[side].append(_time(calls[side]))
                stats: dict[str, float] = {"rounds": n_rounds}
                for side, values in samples.items():
                    stats[f"{side}_median"] = round(statistics.median(values), 3)
                    stats[f"{side}_p10"] = round(_p10(values), 3)
                stats["ratio_median"] = round(stats["ours_median"] / stats["theirs_median"], 3)
                row.latency_ms[str(n)] = stats
                row.load.append(round(os.getloadavg()[0], 2))
    finally:
        torch.set_num_threads(before)
    return row


def markdown(rows: list[Row], threads: list[int]) -> str:
    head = ["model", "batch", "params ours", "params NF (real)", "trainable NF"]
    for n in threads:
        head += [f"{n}T ours median (p10) ms", f"{n}T NF median (p10) ms", f"{n}T ours/NF"]
    head.append("load avg (1 min)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.model, r.batch, f"{r.params_ours:,}", f"{r.params_theirs_real:,}", f"{r.trainable_theirs_real:,}"]
        for n in threads:
            s = r.latency_ms.get(str(n))
            if s is None:
                cells += ["—", "—", "—"]
                continue
            cells += [f"{s['ours_median']:.2f} ({s['ours_p10']:.2f})",
                      f"{s['theirs_median']:.2f} ({s['theirs_p10']:.2f})", f"{s['ratio_median']:.2f}"]
        cells.append(" → ".join(f"{x:.1f}" for x in r.load))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(p.name for p in PAIRS))
    parser.add_argument("--threads", default="2,1", help="comma-separated intra-op thread counts")
    parser.add_argument("--rounds", type=int, default=6, help="timed calls per side and thread count")
    parser.add_argument("--univariate-batch", type=int, default=WINDOWS * CHANNELS,
                        help="windows per call for the univariate models (default 32 windows x 7 channels)")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="fast models: raise the rounds until each side runs about this long")
    parser.add_argument("--out-dir", type=Path, default=Path("tsbench-results/reference"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    import neuralforecast

    threads = [int(t) for t in args.threads.split(",") if t]
    wanted = [m for m in args.models.split(",") if m]
    rows: list[Row] = []
    for pair in PAIRS:
        if pair.name not in wanted:
            continue
        row = compare(pair, threads, args.rounds, args.min_seconds, args.univariate_batch)
        rows.append(row)
        print(json.dumps(asdict(row)), flush=True)
        meta = {"neuralforecast": neuralforecast.__version__, "torch": torch.__version__,
                "python": platform.python_version(), "cpus": os.cpu_count(), "threads": threads,
                "rounds": args.rounds, "univariate_batch": args.univariate_batch, "min_seconds": args.min_seconds,
                "mode": "eval, torch.no_grad", "ours_form": "training form (no deploy)"}
        _write(args.out_dir / "compare_reference.json", json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]},
                                                                    indent=2))
        _write(args.out_dir / "compare_reference.md", markdown(rows, threads))
    print(markdown(rows, threads))


if __name__ == "__main__":
    main()
