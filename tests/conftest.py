# SPDX-License-Identifier: Apache-2.0
"""Every test session owns a lab instance of its own: CNIPROF_LAB_ID is set here, before anything imports cniprof
(cniprof.cni.topology reads it once, at import), when the caller did not set one.

The id is `t<pid of pytest>`, so two sessions on one machine (other engineers, CI jobs) never see each other's
namespaces (`cniprof_t1234-node1...`), state files or host-sysctl records, and everything a test starts inherits
it through the environment. tests/root/owned.py uses the same id to recognise this session's processes and BPF
links among the machine's.
"""

from __future__ import annotations

import os
import re

if not os.environ.get("CNIPROF_LAB_ID"):
    os.environ["CNIPROF_LAB_ID"] = f"t{os.getpid()}"
if not re.fullmatch(r"[A-Za-z0-9]+", os.environ["CNIPROF_LAB_ID"]):
    raise SystemExit(f"CNIPROF_LAB_ID must be letters and digits only, not {os.environ['CNIPROF_LAB_ID']!r}")

# The kubernetes client whole, before any cniprof module makes `kubernetes` a lazy module (lazy_loader, for the
# commands' start-up time): tests import kubernetes.client themselves, and such an import while the package is
# still lazy loads it half-way (importlib's LazyLoader runs kubernetes/__init__ inside the submodule import), leaving
# kubernetes.client without its `models` attribute, which the client's deserialiser reads. cniprof itself reaches
# kubernetes only through the lazy module's attributes, which load it whole.
import kubernetes.client  # noqa: F401
