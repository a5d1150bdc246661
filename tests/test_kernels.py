"""The bench's micro-kernels: which run where, that they run here, and that they only ever raise the clock."""

from __future__ import annotations

import pytest

from edgecls.bench._kernels import VectorRates, measure_vector_rates, runnable_kernels
from edgecls.bench._machine import Peak
from edgecls.runtime.backends import cpu_flags, is_x86


def test_kernels_follow_the_flags():
    assert runnable_kernels({"avx", "fma", "avx512f", "avx512_vnni", "avx_vnni"}) == [
        "fp32 FMA zmm", "int8 VNNI zmm", "fp32 FMA ymm", "int8 AVX-VNNI ymm"]
    assert runnable_kernels({"avx", "fma", "avx2"}) == ["fp32 FMA ymm"]
    assert runnable_kernels({"asimd", "asimddp"}) == []
    assert measure_vector_rates(2, set()) is None  # nothing this CPU can run: the estimates stay as they were


@pytest.mark.skipif(not is_x86() or not runnable_kernels(cpu_flags()), reason="needs an x86-64 CPU with FMA")
def test_the_widest_kernels_run_here_on_every_thread():
    rates = measure_vector_rates(2, cpu_flags(), seconds=0.02)
    assert rates is not None and rates.threads == 2
    assert rates.fp32_gflops and rates.fp32_gflops > 0
    kinds = [k.split()[0] for k in rates.kernels]
    assert len(kinds) == len(set(kinds))  # the widest of each kind only
    if {"avx512_vnni", "avx_vnni"} & cpu_flags():
        assert rates.int8_gops and rates.int8_gops > 0


def test_kernels_raise_the_clock_and_never_lower_it():
    from edgecls.bench.runner import _lifted_by_kernels

    peak = Peak(fp32_gflops=332.8, bf16_gflops=665.6, int8_gops=1331.2, cores=2, ghz=2.6, assumption="test")
    faster = VectorRates(fp32_gflops=450.0, int8_gops=1900.0, threads=2,
                         kernels={"fp32 FMA zmm": 450.0, "int8 VNNI zmm": 1900.0})
    lifted = _lifted_by_kernels(peak, faster)
    assert lifted.ghz == pytest.approx(2.6 * 1900.0 / 1331.2, rel=1e-3)  # the strongest evidence wins
    assert lifted.int8_gops == pytest.approx(1900.0, rel=1e-3) and "micro-kernel of int8 VNNI zmm" in lifted.assumption
    slower = VectorRates(fp32_gflops=100.0, int8_gops=400.0, threads=2,
                         kernels={"fp32 FMA zmm": 100.0, "int8 VNNI zmm": 400.0})
    assert _lifted_by_kernels(peak, slower) == peak  # a loaded machine's low figure never lowers the bound
    assert _lifted_by_kernels(peak, None) == peak
