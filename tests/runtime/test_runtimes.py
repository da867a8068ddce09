"""Every runtime available here runs small models and matches torch eager; unavailable ones say why."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from runtime_toys import make_inputs

from sparse_runtime import deepsparse_rt, semi_structured
from tsbench_core.errors import CellError, RuntimeUnavailable
from tsbench_core.registry import load_plugins
from tsbench_core.verify import verify_session

REGISTRY = load_plugins(builtins=("sparse_runtime.plugin",))
CPU_RUNTIMES = ["torch-eager", "onnxruntime", "deepsparse", "torch-compile", "openvino"]


def _prepare(name, model, tmp_path, threads=1, batch_seed=0):
    plugin = REGISTRY.get("runtime", name)
    available = plugin.availability()
    if not available.available:
        pytest.skip(f"{name} unavailable here: {available.reason}")
    return plugin.prepare(model, make_inputs(batch_seed), plugin.params_model(), threads=threads,
                          workdir=tmp_path)


def test_builtin_runtimes_registered() -> None:
    assert set(REGISTRY.runtimes) == {"torch-eager", "torch-compile", "onnxruntime", "deepsparse",
                                      "semi-structured", "openvino"}
    for plugin in REGISTRY.runtimes.values():
        assert plugin.device in {"cpu", "cuda"}
        assert "torch" in plugin.versions()


@pytest.mark.parametrize("name", CPU_RUNTIMES)
def test_runtime_matches_torch_eager(name, tiny, tmp_path) -> None:
    session = _prepare(name, tiny, tmp_path)
    # batches other than the export example: a runtime that baked inputs in as constants would fail here
    batches = [tuple(t.numpy() for t in make_inputs(seed)) for seed in (1, 2)]
    err = verify_session(session, tiny, batches, atol=1e-4, rtol=1e-4)
    assert err < 1e-4
    info = session.info
    assert info["runtime"] == name
    assert info["threads"] and all(v == 1 for v in info["threads"].values())
    if name == "torch-compile":  # compiled on the first attempt, or after turning the pattern matcher off
        assert info["pattern_matcher"] in (True, False)
        assert info["pattern_matcher"] or info["compile_retries"]
    if name == "deepsparse":
        assert info["fraction_of_supported_ops"] == 1.0
        assert info["graph_inputs"] == ["x_enc", "x_mark_enc", "x_dec", "x_mark_dec"]
    session.close()


@pytest.mark.parametrize("name", ["onnxruntime", "deepsparse", "openvino"])
def test_unused_inputs_are_dropped(name, values_only, tmp_path) -> None:
    session = _prepare(name, values_only, tmp_path)
    assert session.info["graph_inputs"] == ["x_enc"]
    assert session.info["used_inputs"] == [0]
    batch = tuple(t.numpy() for t in make_inputs(3))
    assert verify_session(session, values_only, [batch], atol=1e-5, rtol=1e-5) < 1e-5


def test_sparse_weights_survive_export(tiny, tmp_path) -> None:
    with torch.no_grad():
        for module in tiny.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight[torch.rand_like(module.weight) < 0.9] = 0.0
    session = _prepare("onnxruntime", tiny, tmp_path)
    linear_weights = [m.weight for m in tiny.modules() if isinstance(m, torch.nn.Linear)]
    expected = sum(int((w == 0).sum()) for w in linear_weights) / sum(w.numel() for w in linear_weights)
    assert session.info["exported_weight_sparsity"] == pytest.approx(expected, abs=1e-4)


def test_deepsparse_lists_fallback_ops(tmp_path) -> None:
    class WithTrilu(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

        def forward(self, x_enc, x_mark_enc, x_dec, x_mark_dec):
            return torch.triu(self.lin(x_enc[:, :3, :]))  # Trilu: not supported by the engine

    model = WithTrilu().eval()
    session = _prepare("deepsparse", model, tmp_path)
    info = session.info
    assert info["fraction_of_supported_ops"] < 1.0
    assert "Trilu" in info["deepsparse_risky_ops"]
    assert "Trilu" in info["fallbacks"]["fallback_ops"]
    assert "Gemm" not in info["fallbacks"]["fallback_ops"]


def test_parse_engine_diagnostics() -> None:
    log = "\n".join([
        "[nm_ort 1 >DIAGNOSE< operator() x.cc:287] == NMExecutionProvider::GetCapability ==",
        "Printing GraphViewer main_graph:",
        "Node 0: MatMul /a/MatMul",
        "Node 1: Trilu /Trilu",
        "Node 2: Add /Add",
        "Node 3: Where /w/Where",
        "[nm_ort 1 >DIAGNOSE< construct_subgraphs x.cc:727] == Constructing subgraphs",
        "[nm_ort 1 >DIAGNOSE< supported_subgraphs x.cc:826] Printing subgraph:",
        "Node 0: MatMul /a/MatMul",
        "[nm_ort 1 >DIAGNOSE< supported_subgraphs x.cc:826] Printing subgraph:",
        "Node 2: Add /Add",
        "[nm_ort 1 >DIAGNOSE< x.cc:331] == NM Execution Provider supports 50% of the network",
    ])
    parsed = deepsparse_rt.parse_engine_diagnostics(log)
    assert parsed["n_nodes"] == 4
    assert parsed["fallback_ops"] == {"Trilu": 1, "Where": 1}
    assert parsed["fallback_nodes"] == ["Trilu /Trilu", "Where /w/Where"]
    assert parsed["compile_errors"] == []


def test_parse_engine_diagnostics_failed_subgraph() -> None:
    log = "\n".join([
        "Printing GraphViewer main_graph:",
        "Node 0: MatMul /m/MatMul",
        "Node 1: Transpose /T",
        "[nm_ort 1 >DIAGNOSE< supported_subgraphs x.cc:826] Printing subgraph:",
        "Node 0: MatMul /m/MatMul",
        "Node 1: Transpose /T",
        "[nm_ort 1 >DIAGNOSE< supported_subgraphs x.cc:1028] ==== FAILED TO COMPILE ====",
        "Message: Invalid node /T_output_0: bad transpose indices",
        "[nm_ort 1 >DIAGNOSE< x.cc:322] Created 0 compiled subgraphs.",
    ])
    parsed = deepsparse_rt.parse_engine_diagnostics(log)
    assert parsed["fallback_ops"] == {"MatMul": 1, "Transpose": 1}
    assert parsed["compile_errors"] == ["Invalid node /T_output_0: bad transpose indices"]


def test_deepsparse_unavailable_reasons(monkeypatch) -> None:
    plugin = deepsparse_rt.DeepSparseRuntime()
    monkeypatch.setattr(sys, "version_info", (3, 12, 0, "final", 0))
    reason = plugin.availability()
    assert not reason.available and "3.12" in reason.reason
    monkeypatch.undo()
    monkeypatch.setattr(deepsparse_rt.importlib.util, "find_spec", lambda name: None)
    reason = plugin.availability()
    assert not reason.available and "not installed" in reason.reason
    with pytest.raises(RuntimeUnavailable, match="not installed"):
        plugin.prepare(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), plugin.params_model(), threads=1,
                       workdir=".")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_gpu_runtimes_unavailable_without_cuda(tiny, tmp_path) -> None:
    plugin = REGISTRY.get("runtime", "semi-structured")
    reason = plugin.availability()
    assert not reason.available and "CUDA" in reason.reason
    with pytest.raises(RuntimeUnavailable, match="CUDA"):
        plugin.prepare(tiny, make_inputs(), plugin.params_model(), threads=1, workdir=tmp_path)
    compiled = REGISTRY.get("runtime", "torch-compile")
    with pytest.raises(RuntimeUnavailable, match="CUDA"):
        compiled.prepare(tiny, make_inputs(), compiled.params_model(device="cuda"), threads=1, workdir=tmp_path)


def test_two_to_four_checks() -> None:
    dense = torch.ones(4, 8)
    assert not semi_structured.is_n_m_sparse(dense)
    two_four = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 4.0]]).repeat(4, 1)
    assert semi_structured.is_n_m_sparse(two_four)
    three_in_group = two_four.clone()
    three_in_group[2, 1] = 5.0  # first group of row 2 now holds 3 non-zeros
    assert not semi_structured.is_n_m_sparse(three_in_group)
    assert not semi_structured.is_n_m_sparse(torch.zeros(4, 6))  # 6 columns: not groups of 4

    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 32), torch.nn.Linear(64, 64))
    with torch.no_grad():
        for layer in (model[0], model[1]):
            mask = torch.tensor([1.0, 1.0, 0.0, 0.0]).repeat(layer.weight.shape[0], layer.weight.shape[1] // 4)
            layer.weight.mul_(mask)
    chosen, skipped = semi_structured.semi_structured_candidates(model)
    assert chosen == ["0"]
    assert "multiple of 64" in skipped["1"] and "not 2:4" in skipped["2"]


def test_export_failure_names_the_op(tmp_path) -> None:
    from sparse_runtime.export import export_onnx

    class Spectral(torch.nn.Module):
        def forward(self, x_enc):
            return torch.fft.rfft(x_enc, dim=1).abs()

    with pytest.raises(CellError, match=r"aten::fft_rfft"):
        export_onnx(Spectral(), (torch.randn(2, 8, 3),), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_export_uses_deploy_form_without_touching_the_model(tmp_path) -> None:
    from sparse_runtime.export import export_onnx

    class SwitchableDFT(torch.nn.Module):
        """Training form: rfft magnitude (not exportable); deploy form: the same as real DFT matmuls."""

        def __init__(self, n: int) -> None:
            super().__init__()
            self.deploy = False
            k = torch.arange(n // 2 + 1, dtype=torch.float64)[:, None]
            t = torch.arange(n, dtype=torch.float64)[None, :]
            self.register_buffer("cos", torch.cos(2 * torch.pi * k * t / n).float())
            self.register_buffer("sin", torch.sin(2 * torch.pi * k * t / n).float())

        def set_deploy_form(self, enabled: bool) -> None:
            self.deploy = enabled

        def forward(self, x_enc):
            if not self.deploy:
                return torch.fft.rfft(x_enc, dim=1).abs()
            re = torch.matmul(self.cos, x_enc)
            im = torch.matmul(self.sin, x_enc)
            return torch.sqrt(re * re + im * im)

    model = SwitchableDFT(8).eval()
    x = torch.randn(2, 8, 3)
    result = export_onnx(model, (x,), tmp_path / "m.onnx")
    assert result.deploy_form_modules == ("<root>",)
    assert model.deploy is False  # the caller's model keeps its training form
    import onnxruntime as ort

    out = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, {"x_enc": x.numpy()})
    np.testing.assert_allclose(out[0], model(x).numpy(), atol=1e-4)


def test_engine_abort_in_probe_is_reported(monkeypatch, tmp_path) -> None:
    import subprocess

    log = "\n".join([
        "Printing GraphViewer main_graph:", "Node 0: MatMul /m", "Node 1: And /a",
        "[nm_ort 1 >DIAGNOSE< x.cc:826] Printing subgraph:", "Node 0: MatMul /m",
        "[nm_ort 1 >DIAGNOSE< x.cc:322] Created 1 compiled subgraphs.",
        "Assertion at src/onnxruntime_neuralmagic/nm_execution_provider.cc:88",
    ])

    def fake_run(args, **kwargs):
        return subprocess.CompletedProcess(args, 1, stdout="TSBENCH_COMPILED\n", stderr=log)

    monkeypatch.setattr(deepsparse_rt.subprocess, "run", fake_run)
    parsed = deepsparse_rt.diagnose_fallbacks(tmp_path / "m.onnx", 2, [np.zeros((2, 3), np.float32)])
    assert parsed["crashed"]
    assert parsed["crash"].startswith("engine aborted while running (exit code 1)")
    assert "nm_execution_provider.cc:88" in parsed["crash"]
    assert parsed["fallback_ops"] == {"And": 1}

    def fine_run(args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout="TSBENCH_COMPILED\nTSBENCH_RAN\n", stderr=log)

    monkeypatch.setattr(deepsparse_rt.subprocess, "run", fine_run)
    assert not deepsparse_rt.diagnose_fallbacks(tmp_path / "m.onnx", 2, [np.zeros((2, 3), np.float32)])["crashed"]


def test_onnxruntime_sessions_do_not_spin_and_say_so(tiny, tmp_path) -> None:
    """A timed pair is two sessions with their own pools; spinning idle threads steal the running one's cores."""
    session = _prepare("onnxruntime", tiny, tmp_path)
    options = session._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.info["intra_op_spinning"] is False
