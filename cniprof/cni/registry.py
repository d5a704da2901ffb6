# SPDX-License-Identifier: Apache-2.0
"""`--cni NAME[:MODE]` -> a Model; the one place that lists what cniprof supports."""

from __future__ import annotations

from cniprof.cni import flannel
from cniprof.cni.model import Model
from cniprof.errors import UsageError

FAMILIES = {"flannel": flannel}


def supported() -> list[str]:
    out = []
    for name, mod in FAMILIES.items():
        out.append(name)
        out.extend(f"{name}:{mode}" for mode in mod.MODELS)
    return out


def parse(spec: str) -> Model:
    name, _, mode = spec.strip().partition(":")
    family = FAMILIES.get(name)
    if family is None:
        raise UsageError(f"unknown CNI {spec!r}; supported: {', '.join(supported())}")
    mode = mode or family.DEFAULT_MODE
    if mode not in family.MODELS:
        raise UsageError(f"unknown mode {mode!r} for {name}; supported: {', '.join(supported())}")
    return family.MODELS[mode]
