"""The Transformer's deploy form (folded heads, fused projections) on DeepSparse, dense and 90% sparse, on real
ETTh1 windows: entirely inside the engine and within 1e-4 of torch eager's training form."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from tsbench_testing import shared_data_dir

from tsbench_core.data import DataShape, Windows
from tsbench_core.registry import load_plugins
from tsbench_core.verify import verify_session

REGISTRY = load_plugins()
ETTH1 = DataShape(enc_in=7, dec_in=7, c_out=7, seq_len=96, label_len=48, pred_len=96)


@pytest.fixture(scope="module")
def etth1_batches() -> list[tuple]:
    folder = shared_data_dir()
    if not (folder / "ETT-small" / "ETTh1.csv").is_file() and not (folder / "ETTh1.csv").is_file():
        pytest.skip(f"shared data folder {folder} has no ETTh1.csv (set TSBENCH_DATA_DIR)")
    plugin = REGISTRY.datasets["etth1"]
    splits = plugin.load(plugin.params_model(), Windows(96, 48, 96), folder)
    batches = splits.test.iter_batches(8)
    return [tuple(t.numpy() for t in next(batches).inputs) for _ in range(2)]


def _magnitude_prune(model: nn.Module, sparsity: float) -> nn.Module:
    """Zero the smallest ``sparsity`` fraction of all Linear weights, by one global magnitude threshold."""
    if sparsity <= 0:
        return model
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    threshold = magnitudes.kthvalue(int(sparsity * magnitudes.numel())).values
    with torch.no_grad():
        for w in weights:
            w.mul_(w.abs() > threshold)
    return model


@pytest.mark.parametrize("sparsity", [0.0, 0.9])
def test_transformer_deploy_form_on_deepsparse(sparsity: float, etth1_batches, tmp_path) -> None:
    plugin = REGISTRY.get("runtime", "deepsparse")
    available = plugin.availability()
    if not available.available:
        pytest.skip(f"deepsparse unavailable here: {available.reason}")
    model_plugin = REGISTRY.get("model", "transformer")
    torch.manual_seed(0)
    params = model_plugin.params_model(d_model=64, n_heads=4, d_ff=128, e_layers=2, d_layers=1)
    model = _magnitude_prune(model_plugin.build(params, ETTH1).eval(), sparsity)
    example = tuple(torch.from_numpy(a) for a in etth1_batches[0])
    session = plugin.prepare(model, example, plugin.params_model(), threads=1, workdir=tmp_path)
    try:
        info = session.info
        assert info["fraction_of_supported_ops"] == 1.0
        assert info["op_counts"]["Split"] == 4  # the deploy form's fused projections reached the engine
        assert info["exported_weight_sparsity"] >= (0.8 if sparsity else 0.0)
        # the reference is the caller's model in its training form (4-D heads, separate projections)
        assert verify_session(session, model, etth1_batches, atol=1e-4, rtol=0.0) <= 1e-4
    finally:
        session.close()


def test_itransformer_compiles_and_matches_at_batch_1_on_deepsparse(etth1_batches, tmp_path) -> None:
    """DeepSparse 1.8 aborted compiling iTransformer at batch 1 (gemm_utils.cpp:38, LayerNorm -> Slice -> MatMul
    before the projection; the study's 21 failed cells); its deploy form now selects the variate tokens by a
    constant matmul."""
    plugin = REGISTRY.get("runtime", "deepsparse")
    available = plugin.availability()
    if not available.available:
        pytest.skip(f"deepsparse unavailable here: {available.reason}")
    model_plugin = REGISTRY.get("model", "itransformer")
    torch.manual_seed(0)
    model = model_plugin.build(model_plugin.params_model(), ETTH1).eval()
    batches = [tuple(a[i : i + 1] for a in etth1_batches[0]) for i in range(3)]
    example = tuple(torch.from_numpy(a) for a in batches[0])
    session = plugin.prepare(model, example, plugin.params_model(), threads=1, workdir=tmp_path)
    try:
        assert session.info["fraction_of_supported_ops"] == 1.0
        assert verify_session(session, model, batches, atol=1e-4, rtol=1e-4) <= 1e-3
    finally:
        session.close()
