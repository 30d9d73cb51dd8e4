"""Naming the CPU: model and vector instruction sets, for every timing."""

import pytest

from liposome_bench import machine


@pytest.mark.parametrize(
    "flags, expected, bf16",
    [
        ({"avx2", "avx512f", "avx512_bf16"}, "AVX-512 with BF16, no AMX", True),
        (
            {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"},
            "AVX-512 with BF16, AMX",
            True,
        ),
        ({"avx2", "avx512f"}, "AVX-512, no AMX", False),
        ({"avx2", "fma"}, "AVX2 only (no AVX-512, no AMX)", False),
        ({"sse4_2"}, "no AVX2", False),
        (set(), "instruction sets unknown", False),
    ],
)
def test_describe_cpu_names_the_vector_units(flags, expected, bf16):
    info = {"model": "Some CPU", "family": None, "cores": 2, "flags": frozenset(flags)}
    assert machine.describe_cpu(info) == f"Some CPU, 2 cores, {expected}"
    assert machine.native_bfloat16(info) is bf16


def test_this_machine_is_described():
    info = machine.cpu_info()
    line = machine.describe_cpu()
    assert line.startswith(info["model"]) and f"{info['cores']} cores" in line


def test_amd_family_25_is_split_by_avx512():
    # Family 25 holds Zen 3 (no AVX-512) and Zen 4 (the first AMD with it).
    assert machine.amd_generation(25, frozenset({"avx2", "avx512f", "avx512_bf16"})) == "Zen 4"
    assert machine.amd_generation(25, frozenset({"avx2", "fma"})) == "Zen 3"
    assert machine.amd_generation(25, frozenset()) == "Zen 3/Zen 4"  # flags unknown
    assert machine.amd_generation(26, frozenset({"avx512f"})) == "Zen 5"
    assert machine.amd_generation(99, frozenset({"avx2"})) is None


@pytest.mark.parametrize(
    "flags, expected",
    [
        (
            {"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"},
            "Sapphire Rapids/Emerald Rapids",
        ),
        ({"avx512f", "avx512_bf16", "amx_bf16", "amx_fp16"}, "Granite Rapids"),
        ({"avx512f", "avx512_vnni", "avx512_bf16"}, "Cooper Lake"),
        ({"avx512f", "avx512_vnni", "avx512ifma"}, "Ice Lake"),
        ({"avx512f", "avx512_vnni"}, "Cascade Lake"),
        ({"avx512f", "avx512bw"}, "Skylake-SP"),
        ({"avx2", "fma"}, None),
    ],
)
def test_an_intel_xeon_is_named_by_its_newest_instruction_set(flags, expected):
    # A VM's "Intel(R) Xeon(R) Processor" names no generation; the flags do.
    assert machine.intel_generation(frozenset(flags)) == expected


def test_usable_cores_are_the_processs_affinity(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert machine.usable_cores() == 3
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert machine.usable_cores() == 1  # unknown: one, not None
