"""``tsbench bench``: time one ad-hoc cell (weights trained a few steps) on several runtimes, beside its dense
reference, through the pipeline of ``tsbench run`` (an ad-hoc spec, rows in ``--store`` or a temporary store).

The defaults are those of ``tsbench_core.bench``, which takes them from the spec models (a spec's default timing,
INT8 gate and runtime), so a bench cell is the cell a spec with the same values would time.
"""

from __future__ import annotations

import argparse

from tsbench_core.commands.common import EXIT_FAILED_CELLS, EXIT_OK, json_arg, registry

NAME = "bench"
SUMMARY = "time one ad-hoc cell (a few training steps, synthetic data) through the pipeline, beside its dense reference"
EXAMPLES = (
    "tsbench bench --model transformer --pruner magnitude --sparsity 0.9 \\\n"
    "                --runtime torch-eager --runtime deepsparse --batch-size 32   # quick \"how fast here?\"",
    "tsbench bench --model patchtst --model-params '{\"d_model\": 64}' --runtime onnxruntime --quantize int8 --json",
)


def configure(parser: argparse.ArgumentParser) -> None:
    # imported here, not at module level: tsbench_core.bench imports torch, and `tsbench --help` should be quick
    from tsbench_core import bench as defaults

    timing = defaults.TIMING_DEFAULTS
    parser.add_argument("--model", required=True, metavar="NAME", help="model plugin (see `tsbench plugins`)")
    parser.add_argument("--pruner", default=defaults.DEFAULT_PRUNER, metavar="NAME", help="pruner plugin")
    parser.add_argument("--sparsity", type=float, default=defaults.DEFAULT_SPARSITY,
                        help="target sparsity in [0, 1); 0 times the dense model only")
    parser.add_argument("--runtime", action="append", metavar="NAME",
                        help=f"runtime plugin; repeat for several (default: {', '.join(defaults.DEFAULT_RUNTIMES)})")
    parser.add_argument("--batch-size", type=int, default=timing.batch_sizes[0], help="samples per timed call")
    parser.add_argument("--threads", type=int, default=timing.threads,
                        help="threads of every runtime (default: all cores of the machine)")
    parser.add_argument("--warmup", type=int, default=timing.warmup, help="untimed calls before timing")
    parser.add_argument("--repeats", type=int, default=timing.repeats, help="timed calls per variant and runtime")
    parser.add_argument("--model-params", metavar="JSON",
                        help="JSON object of model hyperparameters, e.g. '{\"d_model\": 64}' (the plugin's params)")
    parser.add_argument("--pruner-params", metavar="JSON",
                        help="JSON object of pruner params, e.g. '{\"scope\": \"global\"}' (the plugin's params)")
    parser.add_argument("--seq-len", type=int, default=defaults.SEQ_LEN, help="input window length")
    parser.add_argument("--label-len", type=int, default=defaults.LABEL_LEN,
                        help="decoder start-token length (at most --seq-len)")
    parser.add_argument("--pred-len", type=int, default=defaults.PRED_LEN, help="forecast horizon")
    parser.add_argument("--enc-in", type=int, default=defaults.ENC_IN, help="number of input channels (variables)")
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="also time the (pruned) model quantized to INT8 on every runtime that runs ONNX graphs "
                        "(onnxruntime, deepsparse: MatMulInteger; openvino: QDQ)")
    parser.add_argument("--int8-tolerance", type=float, default=defaults.INT8_TOLERANCE,
                        help="INT8 gate: max RMS error / std of the fp32 torch-eager output")
    parser.add_argument("--store", metavar="PATH", default=None,
                        help="results database the bench's dense and pruned rows are stored in (spec name 'bench'; "
                        "the same cells are timed again and replaced); default: a temporary one, deleted after")
    parser.add_argument("--json", action="store_true", help="print the rows (every field) as one JSON array")


def run(args: argparse.Namespace) -> int:
    from tsbench_core.bench import DEFAULT_RUNTIMES, bench, render_rows

    rows = bench(
        args.model, args.pruner, args.sparsity, args.runtime or list(DEFAULT_RUNTIMES), args.batch_size,
        threads=args.threads, warmup=args.warmup, repeats=args.repeats,
        model_params=json_arg(args.model_params, "--model-params"),
        pruner_params=json_arg(args.pruner_params, "--pruner-params"),
        seq_len=args.seq_len, label_len=args.label_len, pred_len=args.pred_len, enc_in=args.enc_in,
        registry=registry(), quantize=args.quantize, quantize_tolerance=args.int8_tolerance, store=args.store,
    )
    render_rows(rows, as_json=args.json)
    return EXIT_OK if all(r.get("status") in ("ok", "skipped") for r in rows) else EXIT_FAILED_CELLS
