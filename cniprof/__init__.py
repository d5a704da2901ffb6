# SPDX-License-Identifier: Apache-2.0
"""cniprof: per-hop latency and CPU cost of container networking datapaths, measured with eBPF."""

__version__ = "0.1.0"
