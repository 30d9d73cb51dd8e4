"""What the machine is: the CPU's model and vector instruction sets, for the
first line of ``cnn`` and ``benchmark`` and for every timing we print.

Training speed on a CPU depends mostly on the vector units: the same
lipnet-4 run takes minutes longer on a CPU with AVX2 only than on one with
AVX-512, and bfloat16 compute is fast only where the CPU multiplies
bfloat16 natively (AVX512-BF16 or AMX). So a timing without the CPU named
says little (docs/performance.md).

Linux's ``/proc/cpuinfo`` is read; elsewhere ``platform`` gives the
processor name and the instruction sets are reported as unknown. Importing
this module is cheap (no Keras).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

# AMD's CPU families by their "cpu family" number in /proc/cpuinfo. Family
# 25 holds Zen 3 and Zen 4; only Zen 4 has AVX-512 (amd_generation).
_AMD_FAMILIES = {23: "Zen/Zen 2", 25: "Zen 3/Zen 4", 26: "Zen 5"}


def amd_generation(family: int, flags: frozenset) -> str | None:
    """An AMD CPU's Zen generation from its family number and flags, or None.

    >>> amd_generation(25, frozenset({"avx2", "avx512f"})), amd_generation(25, frozenset({"avx2"}))
    ('Zen 4', 'Zen 3')
    """
    if family == 25 and flags:
        return "Zen 4" if "avx512f" in flags else "Zen 3"
    return _AMD_FAMILIES.get(family)


# Intel server generations by the newest instruction set each added, newest
# first. Virtual machines often report a generic "Intel(R) Xeon(R)
# Processor" and a model number that is not the host's, so the flags are
# what is left to tell a Skylake-SP (no BF16, the slowest kind measured)
# from a Sapphire Rapids (AMX). A later generation has the same flags, so
# each name means "this generation or a later one without new flags".
_INTEL_GENERATIONS = (
    ("amx_fp16", "Granite Rapids"),
    ("amx_bf16", "Sapphire Rapids/Emerald Rapids"),
    ("avx512_bf16", "Cooper Lake"),
    ("avx512ifma", "Ice Lake"),
    ("avx512_vnni", "Cascade Lake"),
    ("avx512f", "Skylake-SP"),
)


def intel_generation(flags: frozenset) -> str | None:
    """An Intel Xeon's generation as told by its instruction-set flags, or
    None for a CPU without AVX-512 (client and older parts, not told apart).

    >>> intel_generation(frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    'Sapphire Rapids/Emerald Rapids'
    """
    return next((name for flag, name in _INTEL_GENERATIONS if flag in flags), None)


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """The CPU: ``model`` (str), ``family`` (str or None), ``cores`` (int),
    ``flags`` (frozenset of instruction-set flags; empty when unknown).

    Reads the first processor of ``/proc/cpuinfo`` on Linux.
    """
    info = {
        "model": platform.processor() or platform.machine() or "unknown CPU",
        "family": None,
        "cores": os.cpu_count() or 1,
        "flags": frozenset(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read().split("\n\n", 1)[0]
    except OSError:
        return info
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if fields.get("model name"):
        info["model"] = " ".join(fields["model name"].split())
    flags = frozenset(fields.get("flags", "").split())
    info["flags"] = flags
    vendor, family = fields.get("vendor_id", ""), fields.get("cpu family", "")
    if vendor == "AuthenticAMD" and family.isdigit():
        generation = amd_generation(int(family), flags)
        info["family"] = f"family {family}" + (f", {generation}" if generation else "")
    elif vendor == "GenuineIntel" and "Xeon" in info["model"]:
        generation = intel_generation(flags)
        info["family"] = f"{generation} by its instruction sets" if generation else None
    return info


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the system
    says, else every core): what the local cluster and the serial benchmark
    size themselves to."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def native_bfloat16(info: dict | None = None) -> bool:
    """Whether the CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX-BF16),
    so that mixed bfloat16 training is faster than float32 rather than slower."""
    flags = (info or cpu_info())["flags"]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def describe_cpu(info: dict | None = None) -> str:
    """One line naming the CPU and its vector instruction sets.

    >>> describe_cpu({"model": "AMD EPYC", "family": "family 26, Zen 5", "cores": 2,
    ...               "flags": frozenset({"avx2", "avx512f", "avx512_bf16"})})
    'AMD EPYC (family 26, Zen 5), 2 cores, AVX-512 with BF16, no AMX'
    """
    info = info or cpu_info()
    flags = info["flags"]
    name = info["model"] + (f" ({info['family']})" if info["family"] else "")
    if not flags:
        vector = "instruction sets unknown"
    elif "avx512f" in flags:
        vector = "AVX-512" + (" with BF16" if "avx512_bf16" in flags else "")
        vector += ", AMX" if any(f.startswith("amx") for f in flags) else ", no AMX"
    elif "avx2" in flags:
        vector = "AVX2 only (no AVX-512, no AMX)"
    else:
        vector = "no AVX2"
    return f"{name}, {info['cores']} cores, {vector}"
