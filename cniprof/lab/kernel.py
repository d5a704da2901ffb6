# SPDX-License-Identifier: Apache-2.0
"""Does this kernel have the device types a model needs? One clear answer before anything is built.

Why: a recipe that fails halfway through with "Operation not supported" from netlink tells the user nothing.
The kernel's build configuration (/proc/config.gz, else /boot/config-<release>) names the exact option; when
neither is readable, or the option is a module that may be missing on disk, the recipe's own attempt to create
the device is the test, and it raises the same message (see `missing_error`).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable

from cniprof.errors import EnvironmentProblem
from cniprof.sysinfo import config_option


def option(name: str) -> str | None:
    """"y", "m", "n" or None (no readable configuration); see cniprof.sysinfo.config_option."""
    return config_option(name)


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
