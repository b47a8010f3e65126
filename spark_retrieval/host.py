"""What a number may depend on about the machine that computed it."""

from __future__ import annotations

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
