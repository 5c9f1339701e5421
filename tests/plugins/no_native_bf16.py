"""Run the suite as a CPU without native bf16 would, on a machine that has it:

    ATEN_CPU_CAPABILITY=avx2 .venv/bin/python -m pytest -p tests.plugins.no_native_bf16 ...

`ATEN_CPU_CAPABILITY=avx2` makes PyTorch use its AVX2 kernels (bf16 emulated, as on an AVX2-only EPYC), and
this plugin makes `precision=auto` see a CPU without AVX512-BF16/AMX, so `auto` means fp32 as it would there.
"""
import pytest

from align.training import precision


@pytest.fixture(autouse=True)
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
