# SPDX-License-Identifier: Apache-2.0
"""`--cni NAME[:MODE]` -> a Model; the one place that lists what cniprof supports.

A family is a module with MODELS (mode -> Model) and DEFAULT_MODE (what the real CNI defaults to); adding one
is an import and a line in FAMILIES (the lab needs a recipe too, see cniprof/lab/recipes/).
"""

from __future__ import annotations

from types import ModuleType

from cniprof.cni import bridge, calico, cilium, flannel, host, macvlan
from cniprof.cni.model import Model
from cniprof.errors import UsageError

FAMILIES: dict[str, ModuleType] = {
    "flannel": flannel,
    "calico": calico,
    "cilium": cilium,
    "bridge": bridge,
    "macvlan": macvlan,
    "host": host,
}


def supported() -> list[str]:
    """Every accepted spelling: the family name (its default mode), and NAME:MODE where there is a choice."""
    out = []
    for name, mod in FAMILIES.items():
        out.append(name)
        if len(mod.MODELS) > 1:
            out.extend(f"{name}:{mode}" for mode in mod.MODELS)
    return out


def models() -> list[Model]:
    """Every model, family by family."""
    return [m for mod in FAMILIES.values() for m in mod.MODELS.values()]


def default_mode(name: str) -> str | None:
    family = FAMILIES.get(name)
    return family.DEFAULT_MODE if family is not None else None


def parse(spec: str) -> Model:
    name, _, mode = spec.strip().lower().partition(":")
    family = FAMILIES.get(name)
    if family is None:
        raise UsageError(f"unknown CNI {spec!r}; supported: {', '.join(supported())}")
    mode = mode or family.DEFAULT_MODE
    if mode not in family.MODELS:
        raise UsageError(f"unknown mode {mode!r} for {name}; supported: {', '.join(supported())}")
    return family.MODELS[mode]
