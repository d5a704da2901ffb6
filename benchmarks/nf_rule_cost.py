#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""How the netfilter cost of a new connection grows with kube-proxy's rule count, on the flannel lab.

pod-a sends UDP to a ClusterIP in front of pod-c, every datagram from its own socket (each the first packet of
its connection, so each walks the nat table's KUBE-SERVICES chain); the netfilter probe (`trace --nf`) times
node1's PREROUTING. One run with 0 dummy services and one with --services N make a pair; the order alternates
between pairs so a drift of the machine cancels out of the median ratio instead of biasing it.

This is a measurement, not a test (tests/root/test_nfhooks.py checks the counts exactly and no timing): it prints
each pair and the median ratio (N services / 0 services) and exits 0; non-zero only when it could not measure.
Measured on the 2-vCPU reference VM: about 4 us with 0 and 65 us with 5000 services (x15).

Usage (root): .venv/bin/python benchmarks/nf_rule_cost.py [--services 5000] [--pairs 3] [--count 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from the work tree, like the tests
    sys.path.insert(0, str(ROOT))

from cniprof.bpf import features
from cniprof.cni.topology import Topology
from cniprof.errors import CniprofError
from cniprof.interrupts import exit_status, sigterm_interrupts
from cniprof.lab import cleanup, kubeproxy, realize
from cniprof.probes.nfhooks import NfHookProbe
from cniprof.traffic.udp_burst import UdpBurst

PORT = 5300


def prerouting_mean_us(topo: Topology, services: int, count: int, calibration: features.Features) -> float:
    """Mean PREROUTING time (us) at node1 per new connection with `services` dummy services installed."""
    applied = kubeproxy.apply(topo, services=services, target_pod="pod-c", port=PORT)
    src, dst = topo.pod("pod-a"), topo.pod("pod-c")
    with NfHookProbe.for_topology(topo, addresses=[src.ip], features=calibration) as probe:
        probe.start()
        with UdpBurst(src.netns, dst.netns, applied.cluster_ip, count=count, port=PORT, flows=count,
                      interval_s=0.001) as gen:
            received = gen.wait().received
        hook = next(h for h in probe.snapshot()["hooks"] if (h["node"], h["hook"]) == ("node1", "PREROUTING"))
    if received != count or hook["count"] != count:
        raise CniprofError(f"{services} services: {received}/{count} datagrams arrived, {hook['count']} timed")
    return hook["sum_ns"] / hook["count"] / 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=5000, help="dummy services of the loaded side (default 5000)")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--count", type=int, default=40, help="datagrams (= new connections) per run")
    args = p.parse_args(argv)
    try:
        with sigterm_interrupts(), ExitStack() as stack:
            topo, created = realize.up("flannel", "vxlan")
            if created:
                stack.callback(cleanup.teardown)
            stack.callback(kubeproxy.remove, topo)
            calibration = features.calibrate()
            ratios = []
            for pair in range(args.pairs):
                order = (0, args.services) if pair % 2 == 0 else (args.services, 0)
                means = {n: prerouting_mean_us(topo, n, args.count, calibration) for n in order}
                ratios.append(means[args.services] / means[0])
                print(f"pair {pair + 1}: 0 services {means[0]:.1f} us, {args.services} services "
                      f"{means[args.services]:.1f} us per new connection (x{ratios[-1]:.1f})")
            print(f"median ratio over {args.pairs} pairs: x{statistics.median(ratios):.1f}")
    except CniprofError as e:
        print(f"nf_rule_cost: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as interrupt:
        print("nf_rule_cost: interrupted", file=sys.stderr)
        return exit_status(interrupt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
