# SPDX-License-Identifier: Apache-2.0
"""Build a CNI datapath inside network namespaces with pyroute2 (no `ip` shell-outs), returning its Topology.

Why namespaces: everything the lab creates (devices, addresses, routes, neighbours, fdb entries, sysctls)
lives in `cniprof-node*` namespaces, so deleting them undoes it all, and the root namespace's networking is
never changed.

Each (cni, mode) has a recipe in `recipes.RECIPES` (one module per CNI family in cniprof/lab/recipes/). A recipe
creates its namespaces through `Namespaces`; `rollback_on_failure` removes them if the build fails or is
interrupted halfway. Before anything is created, the kernel is checked for the device types the model needs.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import lazy_loader

from cniprof.cni import registry
from cniprof.cni.topology import Topology
from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.lab import kernel, saved
from cniprof.lab.cleanup import list_lab_namespaces, remove_namespaces

if TYPE_CHECKING:
    from cniprof.lab import nsutil, recipes
else:  # imported on first use: a trace that reuses the lab that is up builds nothing (issue 15)
    nsutil = lazy_loader.load("cniprof.lab.nsutil", suppress_warning=True)
    recipes = lazy_loader.load("cniprof.lab.recipes", suppress_warning=True)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- dispatch

# every lab that can be built: one per model of the registry, each built by its recipe in cniprof.lab.recipes
# (tests/unit/test_cni_models.py holds the two to the same models), so parsing --cni loads no recipe
_LABS = frozenset((m.cni, m.mode) for m in registry.models())
DEFAULT_MODES = {name: registry.default_mode(name) or "" for name in registry.FAMILIES}


def supported() -> list[str]:
    """Every lab that can be built, as `cni:mode`."""
    return [f"{c}:{m}" for c, m in recipes.RECIPES]


def parse_cni(cni: str, mode: str | None = None) -> tuple[str, str]:
    """`flannel`, `flannel:vxlan` or (`flannel`, mode) -> ("flannel", "vxlan"); UsageError if unsupported."""
    name, _, spec_mode = cni.strip().lower().partition(":")
    if spec_mode and mode and spec_mode != mode.lower():
        raise UsageError(f"conflicting modes {spec_mode!r} and {mode!r} for --cni {cni}")
    chosen = (spec_mode or (mode or "").lower() or DEFAULT_MODES.get(name, "")).strip()
    if (name, chosen) not in _LABS:
        asked = f"{name}:{chosen}" if chosen else name
        raise UsageError(f"unsupported CNI {asked!r}; supported: {', '.join(supported())}")
    return name, chosen


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"{what} needs network namespaces: run as root")


def check_kernel(cni: str, mode: str) -> None:
    """EnvironmentProblem naming the missing kernel option when the model needs a device type this kernel lacks."""
    model = registry.parse(f"{cni}:{mode}")
    kernel.require(model.spec, model.requires)


def realize(cni: str, mode: str) -> Topology:
    """Build the lab for (cni, mode) and return its topology; on any failure nothing is left behind.

    Refuses to start while any `cniprof-node*` namespace exists: the names are fixed, and a lab left by a
    crash must be removed (`cniprof lab down`) rather than half reused.
    """
    require_root("building the lab")
    cni, mode = parse_cni(cni, mode)
    check_kernel(cni, mode)
    leftovers = list_lab_namespaces()
    if leftovers:
        raise CniprofError(
            f"lab namespaces already exist ({', '.join(leftovers)}); run `cniprof lab down` first"
        )
    log.info("building %s/%s lab", cni, mode)
    with nsutil.rollback_on_failure() as ns:
        return recipes.RECIPES[(cni, mode)](ns)


def up(cni: str, mode: str | None = None) -> tuple[Topology, bool]:
    """Bring the lab up unless the same one is already up; returns (topology, created).

    A different lab being up, or leftovers without a state file, is an error: say what to run instead of
    silently replacing someone's lab.
    """
    require_root("building the lab")
    cni, mode = parse_cni(cni, mode)
    check_kernel(cni, mode)
    with saved.locked():
        current = saved.load()
        existing = set(list_lab_namespaces())
        if current is not None and not existing:
            # stale record (its namespaces were deleted behind our back): nothing to protect, forget it
            log.info("forgetting the stale record of a %s/%s lab", current.cni, current.mode)
            saved.clear()
            current = None
        if current is not None:
            missing = [n for n in current.namespaces() if n not in existing]
            if missing:
                raise CniprofError(
                    f"the recorded {current.cni}/{current.mode} lab is broken "
                    f"(missing {', '.join(missing)}); "
                    "run `cniprof lab down` first"
                )
            if (current.cni, current.mode) == (cni, mode):
                return current, False
            raise CniprofError(
                f"a {current.cni}/{current.mode} lab is already up; "
                f"run `cniprof lab down` before building {cni}/{mode}"
            )
        topology = realize(cni, mode)
        try:
            saved.save(topology)
        except BaseException:
            with nsutil.sigint_ignored():
                remove_namespaces(topology.namespaces())
            raise
        return topology, True
