# SPDX-License-Identifier: Apache-2.0
"""One module per CNI family; each exports RECIPES: (cni, mode) -> build(ns: Namespaces) -> Topology.

A recipe creates its namespaces through the Namespaces it is given (so a failed build is rolled back) and
returns the Topology read back from the kernel. Its (cni, mode) must match a model in cniprof.cni.registry.
"""

from __future__ import annotations

from collections.abc import Callable

from cniprof.cni.topology import Topology
from cniprof.lab.nsutil import Namespaces
from cniprof.lab.recipes import bridge, calico, cilium, flannel, host, macvlan

Recipe = Callable[[Namespaces], Topology]

RECIPES: dict[tuple[str, str], Recipe] = {
    **flannel.RECIPES,
    **calico.RECIPES,
    **cilium.RECIPES,
    **bridge.RECIPES,
    **macvlan.RECIPES,
    **host.RECIPES,
}
