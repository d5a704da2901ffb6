# SPDX-License-Identifier: Apache-2.0
"""Record a real `cniprof trace --cpu` run into one JSON file for the pure tests (needs root and the lab).

    CNIPROF_LAB_ID=c4 .venv/bin/python tests/unit/data/record_cpu.py OUT.json.gz [--rules N] [trace args...]

--rules N first loads N non-matching iptables rules into the FORWARD chain of both node namespaces (removed
afterwards), which is how recorded_cpu_tcp_rules2000.json.gz shows netfilter (nftables: Debian's iptables is
iptables-nft) growing against recorded_cpu_tcp.json.gz. The file holds {"cpu": cpu.json, "hops": snapshot.json,
"summary": summary.json} of the run, gzip-compressed when OUT ends in .gz. Both recordings were made with
`--duration 2` on a shared 2-CPU machine, so other processes (python, pytest) appear in them as "user"/"kernel".
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from cniprof.cni.topology import NETNS_PREFIX


def _rules(n: int) -> str:
    lines = ["*filter", ":FORWARD ACCEPT [0:0]"]
    lines += [f"-A FORWARD -s 10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}/32 -p tcp --dport {1000 + i % 50000} "
              "-j DROP" for i in range(n)]
    return "\n".join([*lines, "COMMIT", ""])


def _iptables(nodes: list[str], text: str | None) -> None:
    for ns in nodes:
        if text is None:
            subprocess.run(["ip", "netns", "exec", ns, "iptables", "-F", "FORWARD"], check=True)
        else:
            subprocess.run(["ip", "netns", "exec", ns, "iptables-restore"], input=text, text=True, check=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--rules", type=int, default=0)
    args, trace_args = p.parse_known_args()
    nodes = [f"{NETNS_PREFIX}node1", f"{NETNS_PREFIX}node2"]
    if args.rules:
        _iptables(nodes, _rules(args.rules))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "cniprof", "trace", "--cpu", "--no-ui", "--export", tmp, *trace_args]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            run = {name: json.loads((Path(tmp) / f"{file}.json").read_text())
                   for name, file in (("cpu", "cpu"), ("hops", "snapshot"), ("summary", "summary"))}
    finally:
        if args.rules:
            _iptables(nodes, None)
    data = (json.dumps(run, separators=(",", ":")) + "\n").encode()
    args.out.write_bytes(gzip.compress(data, 9) if args.out.suffix == ".gz" else data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
