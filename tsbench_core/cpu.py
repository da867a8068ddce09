"""The CPU this process runs on, measured once: instruction-set features, vendor and model, a fingerprint.

Features come from the ``CPUID`` instruction itself (and ``XGETBV`` for what the OS enabled), executed through a
few bytes of machine code mapped executable with ``ctypes`` — what the process really gets, which is what ONNX
Runtime and DeepSparse see when they pick their kernels. ``/proc/cpuinfo`` is only the fallback (non-x86-64, or a
kernel that refuses an executable mapping): under an emulator such as ``qemu-x86_64 -cpu EPYC-Milan`` it still
describes the host, while ``CPUID`` answers as the emulated CPU.

``cpu_facts()`` is cached for the process. ``fingerprint`` hashes vendor, family, model, stepping and the feature
set, for caching rules measured on one kind of CPU (``sparse_runtime/ffn_padding.py``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import mmap
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")

# x86-64 System V: cpuid(leaf=edi, subleaf=esi, out=rdx) stores eax, ebx, ecx, edx at out[0..3]
_CPUID_CODE = bytes([
    0x53,                    # push rbx
    0x89, 0xF8,              # mov eax, edi
    0x89, 0xF1,              # mov ecx, esi
    0x49, 0x89, 0xD0,        # mov r8, rdx
    0x0F, 0xA2,              # cpuid
    0x41, 0x89, 0x00,        # mov [r8], eax
    0x41, 0x89, 0x58, 0x04,  # mov [r8+4], ebx
    0x41, 0x89, 0x48, 0x08,  # mov [r8+8], ecx
    0x41, 0x89, 0x50, 0x0C,  # mov [r8+12], edx
    0x5B,                    # pop rbx
    0xC3,                    # ret
])
# xgetbv(index=edi) -> edx:eax as one 64-bit value
_XGETBV_CODE = bytes([
    0x89, 0xF9,              # mov ecx, edi
    0x0F, 0x01, 0xD0,        # xgetbv
    0x48, 0xC1, 0xE2, 0x20,  # shl rdx, 32
    0x48, 0x09, 0xD0,        # or rax, rdx
    0xC3,                    # ret
])

_XCR0_AVX = 0x6  # SSE and AVX state saved by the OS
_XCR0_AVX512 = 0xE0  # opmask, ZMM_Hi256, Hi16_ZMM
_XCR0_AMX = 0x60000  # XTILECFG, XTILEDATA


@dataclass(frozen=True)
class CpuFacts:
    """What was measured about this process's CPU."""

    vendor: str
    model_name: str
    family: int | None
    model: int | None
    stepping: int | None
    features: tuple[str, ...]  # the subset of FEATURES present (and enabled by the OS)
    source: str  # "cpuid" or "/proc/cpuinfo" or "none"
    machine: str = field(default_factory=platform.machine)

    def has(self, feature: str) -> bool:
        if feature not in FEATURES:
            raise ValueError(f"unknown CPU feature {feature!r}; known: {FEATURES}")
        return feature in self.features

    @property
    def x86_64(self) -> bool:
        return self.machine.lower() in ("x86_64", "amd64")

    @property
    def vnni(self) -> bool:
        """An 8-bit dot-product instruction (AVX-512 VNNI or AVX-VNNI) or AMX INT8 tiles."""
        return any(f in self.features for f in ("avx512_vnni", "avx_vnni", "amx_int8"))

    @property
    def fingerprint(self) -> str:
        payload = {"vendor": self.vendor, "family": self.family, "model": self.model, "stepping": self.stepping,
                   "features": sorted(self.features), "machine": self.machine}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def described(self) -> str:
        """One line for the reasons runtimes record: model, the features found, and how they were read."""
        features = ", ".join(self.features) or "no AVX2"
        return f"{self.model_name or self.vendor or 'this CPU'} ({features}; {self.source})"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features), "vnni": self.vnni, "fingerprint": self.fingerprint}


def _executable(code: bytes, restype: Any, *argtypes: Any) -> tuple[Any, mmap.mmap]:
    buffer = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buffer.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    return ctypes.CFUNCTYPE(restype, *argtypes)(address), buffer


def _bit(value: int, index: int) -> bool:
    return bool((value >> index) & 1)


def from_cpuid() -> CpuFacts:
    """The facts from ``CPUID``/``XGETBV`` (x86-64 only; raises ``OSError`` where it cannot run)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise OSError(f"CPUID needs x86-64, this is {platform.machine()}")
    cpuid_fn, cpuid_mem = _executable(_CPUID_CODE, None, ctypes.c_uint32, ctypes.c_uint32,
                                      ctypes.POINTER(ctypes.c_uint32))
    out = (ctypes.c_uint32 * 4)()

    def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        cpuid_fn(leaf, subleaf, out)
        return out[0], out[1], out[2], out[3]

    try:
        max_leaf, ebx, ecx, edx = cpuid(0)
        vendor = b"".join(v.to_bytes(4, "little") for v in (ebx, edx, ecx)).decode("ascii", "replace")
        eax1, _, ecx1, _ = cpuid(1)
        max_ext = cpuid(0x80000000)[0]
        brand = b""
        if max_ext >= 0x80000004:
            brand = b"".join(v.to_bytes(4, "little") for leaf in range(0x80000002, 0x80000005) for v in cpuid(leaf))
        leaf7 = cpuid(7, 0) if max_leaf >= 7 else (0, 0, 0, 0)
        leaf7_1 = cpuid(7, 1) if max_leaf >= 7 and leaf7[0] >= 1 else (0, 0, 0, 0)
        xcr0 = 0
        if _bit(ecx1, 27):  # OSXSAVE: XGETBV is allowed
            xgetbv_fn, xgetbv_mem = _executable(_XGETBV_CODE, ctypes.c_uint64, ctypes.c_uint32)
            try:
                xcr0 = int(xgetbv_fn(0))
            finally:
                xgetbv_mem.close()
    finally:
        cpuid_mem.close()
    avx_os = xcr0 & _XCR0_AVX == _XCR0_AVX
    avx512_os = avx_os and xcr0 & _XCR0_AVX512 == _XCR0_AVX512
    amx_os = xcr0 & _XCR0_AMX == _XCR0_AMX
    _, ebx7, ecx7, edx7 = leaf7
    present = {
        "avx2": avx_os and _bit(ecx1, 28) and _bit(ebx7, 5),
        "avx512f": avx512_os and _bit(ebx7, 16),
        "avx512bw": avx512_os and _bit(ebx7, 30),
        "avx512_vnni": avx512_os and _bit(ebx7, 16) and _bit(ecx7, 11),
        "avx_vnni": avx_os and _bit(leaf7_1[0], 4),
        "amx_tile": amx_os and _bit(edx7, 24),
        "amx_int8": amx_os and _bit(edx7, 25),
        "amx_bf16": amx_os and _bit(edx7, 22),
    }
    base_family, base_model = (eax1 >> 8) & 0xF, (eax1 >> 4) & 0xF
    family = base_family + ((eax1 >> 20) & 0xFF if base_family == 0xF else 0)
    model = base_model + (((eax1 >> 16) & 0xF) << 4 if base_family in (0x6, 0xF) else 0)
    return CpuFacts(vendor=vendor, model_name=brand.rstrip(b"\x00").decode("ascii", "replace").strip(),
                    family=family, model=model, stepping=eax1 & 0xF,
                    features=tuple(f for f in FEATURES if present[f]), source="cpuid")


_PROC_FLAGS = {"avx2": "avx2", "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512_vnni": "avx512_vnni",
               "avx_vnni": "avx_vnni", "amx_tile": "amx_tile", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16"}


def from_proc_cpuinfo(text: str | None = None) -> CpuFacts:
    """The facts from ``/proc/cpuinfo`` (or ``text`` in its format): the first processor's entry."""
    if text is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            return CpuFacts(vendor="", model_name=platform.processor() or platform.machine(), family=None,
                            model=None, stepping=None, features=(), source="none")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())

    def number(key: str) -> int | None:
        value = fields.get(key, "")
        return int(value) if value.isdigit() else None

    return CpuFacts(vendor=fields.get("vendor_id", ""), model_name=fields.get("model name", ""),
                    family=number("cpu family"), model=number("model"), stepping=number("stepping"),
                    features=tuple(f for f in FEATURES if _PROC_FLAGS[f] in flags), source="/proc/cpuinfo")


@functools.cache
def cpu_facts() -> CpuFacts:
    """This process's CPU, measured once (``CPUID``, else ``/proc/cpuinfo``)."""
    try:
        return from_cpuid()
    except Exception:  # no executable mapping, not x86-64, ...: a failed measurement must not stop a run
        return from_proc_cpuinfo()


def cpu_summary() -> dict[str, Any]:
    """The CPU in a few fields, for each result row: name, features, VNNI, fingerprint, how it was measured."""
    facts = cpu_facts()
    return {"model_name": facts.model_name, "vendor": facts.vendor, "features": list(facts.features),
            "vnni": facts.vnni, "fingerprint": facts.fingerprint, "source": facts.source}
