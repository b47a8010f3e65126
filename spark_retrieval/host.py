"""What a number may depend on about the machine that computed it."""

from __future__ import annotations

import hashlib
import platform

CPUINFO_FIELDS = {"model name": "name", "cpu family": "family", "model": "model", "stepping": "stepping"}


def cpu_model() -> str | None:
    """The first CPU's name with its family, model and stepping, e.g. ``AMD EPYC (family 25, model 17,
    stepping 1)``: virtual machines often show one name for several CPU generations, whose kernels (and so
    float results) may differ; elsewhere than Linux, what ``platform`` says."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in CPUINFO_FIELDS and CPUINFO_FIELDS[key] not in found:
                    found[CPUINFO_FIELDS[key]] = value.strip()
                if not line.strip() and found:
                    break
    except OSError:
        pass
    if "name" not in found:
        return platform.processor() or platform.machine() or None
    detail = ", ".join(f"{field} {found[field]}" for field in ("family", "model", "stepping") if field in found)
    return f"{found['name']} ({detail})" if detail else found["name"]


def cpu_features() -> dict[str, str] | None:
    """The first CPU's instruction-set flags, as a short digest of the sorted list (two hosts with one name,
    family and model can still offer different ones), and its microcode revision; None off Linux."""
    flags = microcode = None
    try:
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "flags" and flags is None:
                    flags = sorted(value.split())
                elif key == "microcode" and microcode is None:
                    microcode = value.strip()
                if not line.strip() and flags is not None:
                    break
    except OSError:
        return None
    if flags is None:
        return None
    digest = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:12]
    return {"flags_sha256": digest, "avx512": ",".join(f for f in flags if f.startswith("avx512")), "microcode": microcode}
