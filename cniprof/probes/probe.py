# SPDX-License-Identifier: Apache-2.0
"""What every probe is: the Probe protocol the runs drive, and BpfProbe, the lifecycle the probes share.

A run holds its probes as `Probe`s: start() loads and attaches, snapshot() reads the in-kernel aggregates as plain
JSON-ready data (any number of times while attached), close() detaches and unloads (idempotent, safe after a
failed or interrupted start), and `attached` names the programs attached so far.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import lazy_loader

from cniprof.bpf.libbpf import Object

if TYPE_CHECKING:
    import numpy as np
else:  # imported on first use: a command that does not need it does not wait for it
    np = lazy_loader.load("numpy")


class Probe(Protocol):
    attached: list[str]

    def start(self) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class BpfProbe:
    """One BPF object per probe: its maps checked against cniprof's ABI once loaded, per-CPU values read and
    summed, closed by close() or at the end of a `with` block."""

    obj: Object | None
    ncpu: int

    def check_maps(self, map_types: Mapping[str, tuple[type, type]]) -> None:
        assert self.obj is not None
        self.obj.check_maps(map_types)

    def percpu(self, map_name: str, key: Any, ctype: type) -> np.ndarray | None:
        """A per-CPU map's value as a (possible CPUs, u64 words) array; None when the key is absent."""
        assert self.obj is not None
        return self.obj.map(map_name).lookup_percpu(key, ctype, self.ncpu)

    def percpu_sum(self, map_name: str, key: Any, ctype: type) -> np.ndarray | None:
        """The value summed over the CPUs (u64 words); None when the key is absent."""
        arr = self.percpu(map_name, key, ctype)
        return None if arr is None else arr.sum(axis=0)

    def u64_sum(self, map_name: str, index: int) -> int:
        """A u64 per-CPU counter at `index`, summed (0 when absent)."""
        v = self.percpu_sum(map_name, ctypes.c_uint32(index), ctypes.c_uint64)
        return int(v[0]) if v is not None else 0

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
