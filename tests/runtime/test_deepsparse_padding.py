"""FFN width padding for DeepSparse 1.8 (``sparse_runtime/ffn_padding.py``) and the runtime's subprocess
compile probe: exact padding, the static width hint, FFN pairs found in every model, a crashing child turned
into ``CellError``, the sha256 cache, width verdicts probed and cached per CPU fingerprint, and on real DeepSparse:
the runtime pads exactly the widths that abort on this CPU, and the padded or plain graph passes the gate."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparse_runtime import deepsparse_rt, ffn_padding
from sparse_runtime.common import deploy_copy
from sparse_runtime.export import export_onnx
from tsbench_core.cpu import CpuFacts
from tsbench_core.data import DataShape, example_inputs
from tsbench_core.errors import CellError
from tsbench_core.hardware_rules import HardwareRules
from tsbench_core.protocols import Availability, time_encoding_of
from tsbench_core.registry import load_plugins
from tsbench_core.steps.prune import synthetic_prune_context

REGISTRY = load_plugins()
SMALL = DataShape(3, 3, 3, 24, 12, 8)
MODELS = ("transformer", "informer", "autoformer", "fedformer", "dlinear", "crossformer", "patchtst", "itransformer")


class ToyFFN(nn.Module):
    """``Linear(d -> h) - act - Linear(h -> d)`` with a functional activation, as in ``encdec.FeedForward``."""

    def __init__(self, d_model: int, hidden: int, act=F.gelu) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, hidden)
        self.linear2 = nn.Linear(hidden, d_model)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.act(self.linear1(x)))


class ConvFFN(nn.Module):
    """The kernel-1 Conv1d form, on ``[B, L, C]`` inputs."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(d_model, hidden, kernel_size=1)
        self.conv2 = nn.Conv1d(hidden, d_model, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.gelu(self.conv1(x.transpose(1, 2)))).transpose(1, 2)


class Stack(nn.Module):
    """FFNs at widths on both sides of the aborting band, one with ReLU, one as nn.Sequential(GELU), one as
    kernel-1 Conv1d at a small in-band width (below the onset: left alone)."""

    def __init__(self, d_model: int = 8) -> None:
        super().__init__()
        self.a = ToyFFN(d_model, 1030)  # 1030 % 64 = 6: aborts
        self.b = ToyFFN(d_model, 1024)  # a multiple of 64: compiles
        self.c = ToyFFN(d_model, 1041)  # 1041 % 64 = 17: compiles
        self.d = ToyFFN(d_model, 1030, F.relu)  # ReLU compiles at every width
        self.e = nn.Sequential(nn.Linear(d_model, 1090), nn.GELU(), nn.Linear(1090, d_model))  # 1090 % 64 = 2
        self.f = ConvFFN(d_model, 75)  # 75 % 64 = 11, but compiled at one and two cores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in (self.a, self.b, self.c, self.d, self.e, self.f):
            x = x + block(x)
        return x


def _max_err(a: nn.Module, b: nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
    with torch.no_grad():
        out_a, out_b = a(*inputs), b(*inputs)
    out_a = out_a[0] if isinstance(out_a, tuple) else out_a
    out_b = out_b[0] if isinstance(out_b, tuple) else out_b
    return float((out_a - out_b).abs().max())


def test_width_rule_and_safe_widths() -> None:
    assert [h for h in range(960, 1079) if ffn_padding.aborts(h, "gelu")] == [*range(961, 977), *range(1025, 1041)]
    assert not ffn_padding.aborts(1030, "relu") and not ffn_padding.aborts(1030, "gelu_tanh")
    assert ffn_padding.aborts(1552, "gelu") and ffn_padding.aborts(705, "gelu") and ffn_padding.aborts(513, "gelu")
    assert not ffn_padding.aborts(75, "gelu") and ffn_padding.aborts(262, "gelu")  # 262 aborted at 2 cores
    assert ffn_padding.safe_width(1030) == 1056 and ffn_padding.safe_width(1024) == 1024
    assert all(not ffn_padding.aborts(ffn_padding.safe_width(h), "gelu") and ffn_padding.safe_width(h) - h < 32
               for h in range(1, 4097))


def test_toy_stack_pads_only_the_aborting_widths_and_is_exact() -> None:
    torch.manual_seed(0)
    model = Stack().eval()
    x = (torch.randn(2, 5, 8),)
    padded, info = ffn_padding.pad_for_deepsparse(model, x)
    assert info["ffn_pairs"] == 6
    assert info["padded_widths"] == {"a.linear1": [1030, 1056], "e.0": [1090, 1120]}
    assert padded.a.linear1.weight.shape == (1056, 8) and padded.a.linear2.weight.shape == (8, 1056)
    assert padded.e[0].out_features == 1120 and padded.e[2].in_features == 1120 and padded.f.conv1.out_channels == 75
    assert model.a.linear1.out_features == 1030  # the caller's model is untouched
    other = (torch.randn(3, 7, 8),)  # exact on inputs other than the ones the pairs were found on
    assert _max_err(padded, model, other) <= 1e-6


def test_conv_pair_and_relu_pair_pad_exactly_when_asked() -> None:
    torch.manual_seed(1)
    model = Stack().eval()
    x = (torch.randn(2, 5, 8),)
    pairs = ffn_padding.find_feed_forward_pairs(model, x)
    acts = {p.first: p.activation for p in pairs}
    assert acts == {"a.linear1": "gelu", "b.linear1": "gelu", "c.linear1": "gelu", "d.linear1": "relu",
                    "e.0": "gelu", "f.conv1": "gelu"}
    padded = ffn_padding.pad_feed_forward(copy.deepcopy(model), pairs, {"d.linear1": 1100, "f.conv1": 128})
    assert padded.f.conv1.weight.shape == (128, 8, 1) and padded.f.conv2.in_channels == 128
    assert _max_err(padded, model, (torch.randn(2, 6, 8),)) <= 1e-6


def test_no_pair_without_an_activation_between() -> None:
    model = nn.Sequential(nn.Linear(4, 1030), nn.Linear(1030, 4)).eval()  # linear-linear: not an FFN
    assert ffn_padding.find_feed_forward_pairs(model, (torch.randn(2, 4),)) == []


def _tiny(name: str) -> nn.Module:
    plugin = REGISTRY.get("model", name)
    fields = plugin.params_model.model_fields
    wanted = {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 1, "d_layers": 1}
    params = plugin.params_model.model_validate({k: v for k, v in wanted.items() if k in fields})
    torch.manual_seed(0)
    return plugin.build(params, SMALL).eval(), time_encoding_of(params)


def _static_ffns(model: nn.Module) -> set[str]:
    """The FFN first projections as the model code writes them (test-side ground truth)."""
    names = set()
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if hasattr(module, "linear1") and hasattr(module, "linear2"):
            names.add(prefix + "linear1")
        if hasattr(module, "ff_in") and hasattr(module, "ff_out"):
            names.add(prefix + "ff_in")
        if isinstance(module, nn.Sequential) and len(module) == 3 and isinstance(module[1], nn.GELU):
            names.add(prefix + "0")
    return names


@pytest.mark.parametrize("name", MODELS)
def test_ffn_pairs_found_in_every_model(name: str) -> None:
    model, encoding = _tiny(name)
    inputs = example_inputs(SMALL, 2, encoding, seed=0)
    found = {p.first for p in ffn_padding.find_feed_forward_pairs(deploy_copy(model)[0], inputs)}
    assert found == _static_ffns(model)
    assert bool(found) == (name != "dlinear")


@pytest.mark.parametrize("name", ["transformer", "crossformer"])
def test_structured_pruned_model_pads_exactly(name: str, monkeypatch, tmp_path) -> None:
    model, encoding = _tiny(name)
    pruner = REGISTRY.get("pruner", "structured")
    pruned = pruner.prune(copy.deepcopy(model), 0.5, pruner.params_model(),
                          synthetic_prune_context(name, SMALL, encoding, tmp_path, "structured")).model.eval()
    inputs = example_inputs(SMALL, 2, encoding, seed=0)
    pairs = ffn_padding.find_feed_forward_pairs(deploy_copy(pruned)[0], inputs)
    assert pairs and any(p.width < 32 for p in pairs)  # pruned widths, not the dense 32
    monkeypatch.setattr(ffn_padding, "aborts", lambda width, act: True)  # pad every pair
    padded, info = ffn_padding.pad_for_deepsparse(pruned, inputs)
    assert set(info["padded_widths"]) == {p.first for p in pairs if p.width % 32}
    assert all(to == ffn_padding.safe_width(frm) for frm, to in info["padded_widths"].values())
    reference, _ = deploy_copy(pruned)
    assert _max_err(padded, reference, example_inputs(SMALL, 3, encoding, seed=5)) <= 1e-6


# --- the subprocess probe ---------------------------------------------------------------------------------

_FAKE_OK = """
import sys
with open(sys.argv[1] + ".calls", "a") as fh:
    fh.write("x")
print("TSBENCH_COMPILED", flush=True)
print("TSBENCH_RAN", flush=True)
"""
_FAKE_ABORT = """
import os, sys
print("Assertion at src/lib/jit/function/fused_ops.cpp:250", file=sys.stderr, flush=True)
os.abort()
"""


def _toy_export(tmp_path: Path, hidden: int = 70, name: str = "m.onnx"):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    return export_onnx(ToyFFN(8, hidden).eval(), (x,), tmp_path / name), x


def test_crashing_probe_child_becomes_cell_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(deepsparse_rt, "_PROBE", _FAKE_ABORT)
    runtime = deepsparse_rt.DeepSparseRuntime()
    export, x = _toy_export(tmp_path)
    with pytest.raises(CellError, match=r"aborted while compiling \(exit code -6\): Assertion at .*fused_ops"):
        runtime.probe(export, 2, [x.numpy()], num_cores=1, timeout=60)
    # through prepare: the crash stops it before the in-process compile (deepsparse is never imported here)
    monkeypatch.setattr(runtime, "availability", lambda: Availability.yes())
    monkeypatch.setitem(sys.modules, "deepsparse", None)  # importing it would fail the test differently
    with pytest.raises(CellError, match="fused_ops.cpp:250 on ToyFFN"):
        runtime.prepare(ToyFFN(8, 70).eval(), (x,), runtime.params_model(), threads=1, workdir=tmp_path / "w")


def test_probe_is_cached_by_the_onnx_bytes(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(deepsparse_rt, "_PROBE", _FAKE_OK)
    runtime = deepsparse_rt.DeepSparseRuntime()
    export, x = _toy_export(tmp_path)
    calls = Path(str(export.path) + ".calls")
    first = runtime.probe(export, 2, [x.numpy()], num_cores=1, timeout=60)
    second = runtime.probe(export, 2, [x.numpy()], num_cores=1, timeout=60)
    assert (first[1], second[1]) == (False, True) and calls.read_text() == "x"
    same, _ = _toy_export(tmp_path, name="copy.onnx")  # same bytes, other file: still cached
    assert runtime.probe(same, 2, [x.numpy()], num_cores=1, timeout=60)[1]
    assert not runtime.probe(export, 2, [x.numpy()], num_cores=2, timeout=60)[1]  # other core count
    other, _ = _toy_export(tmp_path, hidden=72, name="other.onnx")
    assert not runtime.probe(other, 2, [x.numpy()], num_cores=1, timeout=60)[1]
    assert calls.read_text() == "xx" and Path(str(other.path) + ".calls").read_text() == "x"


# --- real DeepSparse --------------------------------------------------------------------------------------

def test_width_verdicts_are_probed_once_per_cpu_fingerprint_and_cached(monkeypatch, tmp_path) -> None:
    """A verdict comes from the cache when this CPU has one, else from a probe (then cached, atomically); another
    CPU fingerprint probes again; no verdict from the probe falls back to the static hint, uncached."""
    calls = []

    def fake_probe(pair, num_cores, timeout):
        calls.append((pair.width, num_cores))
        if pair.width == 1090:
            return None, "timed out"
        return pair.width == 1030, "fake"

    monkeypatch.setattr(deepsparse_rt, "probe_ffn_width", fake_probe)
    torch.manual_seed(0)
    model, x = Stack().eval(), (torch.randn(2, 5, 8),)
    here = CpuFacts("V", "CPU A", 25, 1, 1, ("avx2",), "cpuid")
    rules = HardwareRules(deepsparse_rt.FFN_WIDTH_TOPIC, {"deepsparse": "1.8.0"}, facts=here, folder=tmp_path)
    _, info = ffn_padding.pad_for_deepsparse(model, x, deepsparse_rt.ffn_width_decider(1, 60, rules))
    verdicts = info["ffn_width_verdicts"]
    # judged: the widths that are not multiples of 32 (1024 is one); the ReLU pair too (no activation assumed)
    assert set(verdicts) == {"a.linear1", "c.linear1", "d.linear1", "e.0", "f.conv1"}
    assert verdicts["a.linear1"] == {"aborts": True, "source": "probe", "detail": "fake"}
    assert verdicts["d.linear1"]["aborts"] is True  # the probe's word, not the hint's (ReLU was not in the band)
    assert verdicts["e.0"] == {"aborts": True, "source": "static hint", "detail": "timed out"}  # 1090: the band
    assert verdicts["c.linear1"]["aborts"] is False and verdicts["f.conv1"]["aborts"] is False
    assert info["padded_widths"] == {"a.linear1": [1030, 1056], "d.linear1": [1030, 1056], "e.0": [1090, 1120]}
    assert sorted(calls) == [(75, 1), (1030, 1), (1030, 1), (1041, 1), (1090, 1)]
    stored = json.loads(rules.path.read_text())
    assert stored["fingerprint"] == here.fingerprint and stored["cpu"]["model_name"] == "CPU A"
    assert len(stored["verdicts"]) == 4 and not list(tmp_path.glob(".*"))  # no verdict for 1090; no temp file
    calls.clear()
    _, again = ffn_padding.pad_for_deepsparse(model, x, deepsparse_rt.ffn_width_decider(1, 60, rules))
    assert calls == [(1090, 1)] and again["ffn_width_verdicts"]["a.linear1"]["source"] == "cache"
    other = HardwareRules(deepsparse_rt.FFN_WIDTH_TOPIC, {"deepsparse": "1.8.0"}, folder=tmp_path,
                          facts=CpuFacts("V", "CPU B", 25, 17, 1, ("avx2", "avx512f"), "cpuid"))
    assert other.path != rules.path and other.get(next(iter(stored["verdicts"]))) is None
    rules.path.write_text("{not json")  # a damaged file: measured again, never an error
    assert rules.get(next(iter(stored["verdicts"]))) is None


def test_the_width_probe_compiles_the_ffn_alone_in_a_child(monkeypatch) -> None:
    seen = {}

    def fake_diagnose(path, batch_size, inputs=None, timeout=0.0, num_cores=1):
        import onnx

        proto = onnx.load(str(path))
        seen.update(batch=batch_size, cores=num_cores, shape=inputs[0].shape,
                    ops=[n.op_type for n in proto.graph.node])
        return {"crashed": True, "crash": "engine aborted while compiling (exit code 1): Assertion at fused_ops"}

    monkeypatch.setattr(deepsparse_rt, "diagnose_fallbacks", fake_diagnose)
    pair = ffn_padding.FeedForwardPair("l1", "l2", 1030, "gelu", (4, 96, 16))
    assert deepsparse_rt.probe_ffn_width(pair, 2, 60) == (True, "engine aborted while compiling (exit code 1): "
                                                                "Assertion at fused_ops")
    assert seen["batch"] == 4 and seen["cores"] == 2 and seen["shape"] == (4, 96, 16)
    assert "Erf" in seen["ops"] and seen["ops"].count("MatMul") + seen["ops"].count("Gemm") == 2
    assert deepsparse_rt.probe_ffn_width(ffn_padding.FeedForwardPair("a", "b", 70, "silu", (2, 8)), 1, 60)[0] is None


def test_the_runtime_pads_exactly_the_widths_that_abort_on_this_cpu(tmp_path) -> None:
    """Whatever this CPU does with width 1030 (it aborted on an AVX-512 VNNI Zen 4, it compiles on an AVX2 Zen 3):
    the runtime pads it exactly when an independent probe of the unpadded graph aborts, and passes the gate."""
    runtime = REGISTRY.get("runtime", "deepsparse")
    available = runtime.availability()
    if not available.available:
        pytest.skip(f"deepsparse unavailable here: {available.reason}")
    from tsbench_core.verify import verify_session

    torch.manual_seed(0)
    model = ToyFFN(256, 1030).eval()
    batches = [(np.random.default_rng(s).standard_normal((4, 96, 256)).astype(np.float32),) for s in (0, 1)]
    example = (torch.from_numpy(batches[0][0]),)
    plain = export_onnx(model, example, tmp_path / "plain.onnx")
    try:  # the unpadded graph, probed in a child (an abort must not take this process down)
        deepsparse_rt.DeepSparseRuntime().probe(plain, 4, plain.select(list(batches[0])), num_cores=1, timeout=600)
        aborted = False
    except CellError as exc:
        assert "fused_ops.cpp" in str(exc) or "aborted" in str(exc)
        aborted = True
    session = runtime.prepare(model, example, runtime.params_model(), threads=1, workdir=tmp_path / "run")
    try:
        verdict = session.info["ffn_width_verdicts"]["linear1"]
        assert verdict["aborts"] is aborted and verdict["source"] in ("probe", "cache")
        assert session.info["padded_widths"] == ({"linear1": [1030, 1056]} if aborted else {})
        assert session.info["compile_probe"] in ("passed", "cached")
        assert session.info["fraction_of_supported_ops"] == 1.0
        assert verify_session(session, model, batches, atol=1e-4, rtol=1e-4) <= 1e-4
    finally:
        session.close()
