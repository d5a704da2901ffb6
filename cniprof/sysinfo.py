# SPDX-License-Identifier: Apache-2.0
"""What the running kernel says about itself in files: its build configuration and its CPU lists.

One reader each, for the lab (device types a model needs), feature calibration (kprobes built in?), the CPU
sampler (online CPUs) and node state (the CPUs a process may run on).
"""

from __future__ import annotations

import gzip
import os
import platform
from functools import cache
from pathlib import Path

CONFIG_PATHS = (Path("/proc/config.gz"), Path(f"/boot/config-{platform.release()}"))
ONLINE_CPUS = Path("/sys/devices/system/cpu/online")


@cache
def _config() -> dict[str, str] | None:
    """option -> "y" | "m" | "n" | value; None when no configuration is readable."""
    for path in CONFIG_PATHS:
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except OSError:
            continue
        out: dict[str, str] = {}
        for line in raw.decode(errors="replace").splitlines():
            if line.startswith("# CONFIG_") and line.endswith(" is not set"):
                out[line[2:].split()[0]] = "n"
            elif line.startswith("CONFIG_") and "=" in line:
                key, _, value = line.partition("=")
                out[key] = value.strip('"')
        return out
    return None


def config_option(name: str) -> str | None:
    """"y", "m", "n" or the option's value; None when no configuration is readable. An option the configuration
    does not list at all had its dependencies unmet, so it is not built either: "n"."""
    cfg = _config()
    return None if cfg is None else cfg.get(name, "n")


def parse_cpu_list(text: str) -> list[int]:
    """The kernel's cpulist format: "0-3,5" -> [0, 1, 2, 3, 5] (empty or malformed parts are skipped)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def online_cpus() -> list[int]:
    try:
        return parse_cpu_list(ONLINE_CPUS.read_text())
    except OSError:
        return list(range(os.cpu_count() or 1))
