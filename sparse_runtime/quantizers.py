"""The built-in quantizer plugins: post-training static INT8 (``static-int8``) and SparseML QAT (``sparseml-qat``).

Both export the cell's float model to fp32 ONNX (``export.py``, at the runtime's opset) and write its INT8 graph
with ``quantize_onnx`` (calibrated on the job's training windows, in the config's format, with the weight encoding
of the runtime's ``Int8Plan``). ``sparseml-qat`` first fine-tunes the model with SparseML QAT
(``FineTuningQuantizer``, ``qat.py``) and writes the learned scales; its graph approximates the fine-tuned model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, model_validator
from torch import nn

from tsbench_core.errors import CellError
from tsbench_core.hookspecs import hookimpl
from tsbench_core.protocols import QuantizedGraph, QuantizeJob, TrainFn
from tsbench_core.spec import QAT_FIELDS as FINE_TUNING_FIELDS
from tsbench_core.spec import QuantizeConfig

FP32_GRAPH = "model.fp32.onnx"
INT8_GRAPH = "model.int8.onnx"


def _write_int8(model: nn.Module, config: QuantizeConfig, job: QuantizeJob, *, qparams: Any = None,
                extra_info: dict[str, Any] | None = None) -> QuantizedGraph:
    """Export ``model`` to fp32 ONNX and write its INT8 graph (``qparams``: learned parameters, or none)."""
    from sparse_runtime import quantize
    from sparse_runtime.export import export_onnx
    from sparse_runtime.sizes import model_sizes

    workdir = Path(job.workdir)
    export = export_onnx(model, job.example_inputs, workdir / FP32_GRAPH,
                         **({"opset": job.opset} if job.opset else {}))
    reader = quantize.WindowCalibrationReader(job.calibration, export)
    result = quantize.quantize_onnx(export, workdir / INT8_GRAPH, reader, keep_float=config.keep_float,
                                    per_channel=config.per_channel,
                                    symmetric_activations=config.symmetric_activations,
                                    quant_format=config.format, qparams=qparams, weights=job.plan.weights,
                                    weights_reason=job.plan.reason)

    def sizes() -> dict[str, Any]:
        int8, fp32 = model_sizes(result.path), model_sizes(export.path)
        return {"model_bytes": int8["model_bytes"], "model_bytes_compressed": int8["model_bytes_compressed"],
                "fp32_model_bytes": fp32["model_bytes"], "fp32_model_bytes_compressed": fp32["model_bytes_compressed"]}

    return QuantizedGraph(graph=result.export, path=result.path, reference=model,
                          info=result.info() | (extra_info or {}), sizes=sizes)


class StaticInt8Config(QuantizeConfig):
    """``static-int8``'s quantize config: the fine-tuning fields are not its."""

    @model_validator(mode="after")
    def _no_fine_tuning_fields(self) -> StaticInt8Config:
        given = [name for name in FINE_TUNING_FIELDS if getattr(self, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only for method 'sparseml-qat'")
        return self


class SparsemlQatConfig(QuantizeConfig):
    """``sparseml-qat``'s quantize config: the MatMulInteger format, 2 epochs at lr 1e-5 unless given."""

    @model_validator(mode="after")
    def _qat_defaults(self) -> SparsemlQatConfig:
        if self.format != "matmulinteger":
            raise ValueError("sparseml-qat writes its learned scales in the matmulinteger format only")
        if self.epochs is None:
            self.epochs = 2
        if self.lr is None:
            self.lr = 1e-5
        return self


class StaticInt8Quantizer:
    """Post-training static INT8: min/max calibration on training windows."""

    name = "static-int8"
    description = "post-training static INT8 (MatMulInteger or QDQ), calibrated on training windows"
    params_model: type[BaseModel] = StaticInt8Config

    def quantize(self, config: BaseModel, job: QuantizeJob) -> QuantizedGraph:
        assert isinstance(config, QuantizeConfig)
        return _write_int8(job.model, config, job)


QAT_FIELDS = ("keep_float", "epochs", "lr", "max_train_batches", "symmetric_activations", "recipe")


class SparsemlQatQuantizer:
    """SparseML quantization-aware fine-tuning (pruned zeros held), then the INT8 graph with the learned scales."""

    name = "sparseml-qat"
    description = "SparseML quantization-aware fine-tuning, then the MatMulInteger INT8 graph with learned scales"
    params_model: type[BaseModel] = SparsemlQatConfig

    def fine_tune_fields(self, config: BaseModel) -> dict[str, Any]:
        assert isinstance(config, QuantizeConfig)
        fields = config.model_dump(mode="json", include=set(QAT_FIELDS))
        if config.recipe is not None:
            fields["recipe"] = Path(config.recipe).expanduser().read_text(encoding="utf-8")
        return fields

    def fine_tune(self, model: nn.Module, train: TrainFn, config: BaseModel) -> tuple[nn.Module, dict[str, Any]]:
        from sparse_runtime import qat

        assert isinstance(config, QuantizeConfig)
        result = qat.qat_finetune(model, train, keep_float=list(config.keep_float), epochs=int(config.epochs or 2),
                                  lr=float(config.lr or 1e-5), max_train_batches=config.max_train_batches,
                                  symmetric_activations=config.symmetric_activations, recipe=config.recipe)
        return result.model, {"qparams": qat.qparams_as_json(result.qparams), "info": result.info}

    def load_fine_tuned(self, model: nn.Module, meta: dict[str, Any]) -> Any:
        from sparse_runtime.qat import QatResult, qparams_from_json

        return QatResult(model=model, qparams=qparams_from_json(meta["qparams"], model), info=meta["info"])

    def quantize(self, config: BaseModel, job: QuantizeJob) -> QuantizedGraph:
        assert isinstance(config, QuantizeConfig)
        if job.fine_tuned is None:
            raise CellError("sparseml-qat needs the result of the QAT fine-tuning step")
        qat = job.fine_tuned
        info = {k: v for k, v in qat.info.items() if k != "recipe_text"}
        return _write_int8(qat.model.cpu().eval(), config, job, qparams=qat.qparams,
                           extra_info={"method": self.name, "qat": info})


PLUGINS = (StaticInt8Quantizer(), SparsemlQatQuantizer())


@hookimpl
def tsbench_register_quantizers(register: Callable[[Any], None]) -> None:
    for plugin in PLUGINS:
        register(plugin)
