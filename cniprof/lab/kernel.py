# SPDX-License-Identifier: Apache-2.0
"""Does this kernel have the device types a model needs? One clear answer before anything is built.

Why: a recipe that fails halfway through with "Operation not supported" from netlink tells the user nothing.
The kernel's build configuration (/proc/config.gz, else /boot/config-<release>) names the exact option; when
neither is readable, or the option is a module that may be missing on disk, the recipe's own attempt to create
the device is the test, and it raises the same message (see `missing_error`).
"""

from __future__ import annotations

import gzip
import platform
from collections.abc import Iterable
from functools import cache

from cniprof.errors import EnvironmentProblem

CONFIG_PATHS = ("/proc/config.gz", f"/boot/config-{platform.release()}")


@cache
def _config() -> dict[str, str] | None:
    """option -> "y" | "m" | "n"; None when no configuration is readable."""
    for path in CONFIG_PATHS:
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:  # type: ignore[operator]
                text = f.read()
        except OSError:
            continue
        out: dict[str, str] = {}
        for line in text.splitlines():
            if line.startswith("# CONFIG_") and line.endswith(" is not set"):
                out[line[2:].split()[0]] = "n"
            elif line.startswith("CONFIG_") and "=" in line:
                key, _, value = line.partition("=")
                out[key] = value.strip('"')
        return out
    return None


def option(name: str) -> str | None:
    """"y", "m", "n" or None (no readable configuration). An option the configuration does not list at all had
    its dependencies unmet, so it is not built either: "n"."""
    cfg = _config()
    if cfg is None:
        return None
    return cfg.get(name, "n")


def missing_error(spec: str, kind: str, name: str) -> EnvironmentProblem:
    """The one-line error for a model that needs `kind` devices the kernel lacks."""
    return EnvironmentProblem(
        f"{spec} needs {kind}, but this kernel ({platform.release()}) was built without {name}; "
        "choose another mode or a kernel with it"
    )


def missing(requires: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (device kind, kernel option) pairs the configuration says are not built (neither y nor m)."""
    return [(kind, name) for kind, name in requires if option(name) == "n"]


def require(spec: str, requires: Iterable[tuple[str, str]]) -> None:
    """Raise EnvironmentProblem naming the first missing option; silent when all are (or may be) present."""
    gone = missing(requires)
    if gone:
        kind, name = gone[0]
        raise missing_error(spec, kind, name)
