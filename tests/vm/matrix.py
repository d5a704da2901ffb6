#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The kernel matrix: cniprof inside qemu guests of Debian's cloud kernels (5.10, 6.1, 6.12 x arm64, amd64).

Host side only (root; standard library only, so it runs before and without cniprof's venv). Each guest boots a
Debian cloud kernel under qemu TCG (no KVM) with everything in one initramfs (no disk): a Debian bookworm
userspace with Python and the tools the lab uses, cniprof's Python dependencies as wheels for the guest's
platform, the kernel's own network and netfilter modules, and this work tree's cniprof as its wheel builds it
(pip wheel: BPF objects for both machines from the wheel's build step). The guest runs tests/vm/guest.py, which
prints one result line; this tool compares it with tests/vm/expected.json and exits 1 on any difference.

    matrix.py run [--kernels 6.1-arm64,...] [--level load|full] [--jobs N]   # boot, check, compare (root)
    matrix.py table                                                          # README table from expected.json
    matrix.py fetch [--kernels ...]                                          # kernels and rootfs only

Levels: `load` = `cniprof doctor --json` and every probe trace would choose, loaded and attached in the guest
(what CI runs for all six kernels); `full` = load + the flannel lab traced with exact counts, `--cpu`, and `--nf`
on a pod-to-service flow with kube-proxy rules. Kernels, rootfs images and wheels are cached in
$CNIPROF_VM_CACHE (default /var/cache/cniprof-vm) and fetched from the Debian mirrors and PyPI when missing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXPECTED = HERE / "expected.json"
CACHE = Path(os.environ.get("CNIPROF_VM_CACHE", "/var/cache/cniprof-vm"))
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
RESULT_TAG = "CNIPROF-VM-RESULT "
BUILD_VERSION = "3"  # bump to rebuild every cached rootfs after a change of its recipe

SERIES = {  # kernel series -> (Debian suite, apt sources, package spec)
    "5.10": ("bullseye", [f"deb {MIRROR} bullseye main"], "linux-image-cloud-{arch}"),
    "6.1": ("bookworm", [f"deb {MIRROR} bookworm main", f"deb {SECURITY} bookworm-security main"],
            "linux-image-cloud-{arch}"),
    "6.12": ("bookworm", [f"deb {MIRROR} bookworm main", f"deb {MIRROR} bookworm-backports main"],
             "linux-image-cloud-{arch}/bookworm-backports"),
}
KERNEL_IDS = tuple(f"{s}-{a}" for s in SERIES for a in ("arm64", "amd64"))


@dataclass(frozen=True)
class Arch:
    name: str  # Debian's
    machine: str  # uname -m
    wheel: str  # manylinux platform suffix
    qemu: tuple[str, ...]
    console: str
    cmdline: str = ""


ARCHES = {
    # cortex-a72 rather than max: no pointer authentication, which TCG emulates slowly
    "arm64": Arch("arm64", "aarch64", "aarch64",
                  ("qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72"), "ttyAMA0"),
    # Nehalem: x86-64-v2 as numpy's wheels need. qemu 7.2's TCG cmpxchg16b corrupts 6.12's SLUB per-CPU fast
    # path (double faults at boot): slub_debug=F keeps every cache on the locked slow path.
    "amd64": Arch("amd64", "x86_64", "x86_64", ("qemu-system-x86_64", "-M", "q35", "-cpu", "Nehalem"),
                  "ttyS0", "slub_debug=F"),
}

# Userspace of every guest (bookworm): Python, and the tools the lab and the traffic generators run.
PACKAGES = ("busybox-static", "python3.11-minimal", "libpython3.11-stdlib", "libbpf1", "iproute2", "iptables",
            "nftables", "kmod", "util-linux", "procps", "iputils-ping", "ethtool", "iperf3", "libstdc++6", "libgcc-s1")
# Modules the lab needs (the cloud kernels build all of them as modules); loaded at boot, dependencies first.
MODULES = ("veth", "bridge", "br_netfilter", "vxlan", "dummy", "nf_conntrack", "nf_nat", "nf_tables", "nft_compat",
           "nft_chain_nat", "nft_ct", "nft_nat", "xt_comment", "xt_mark", "xt_conntrack",
           "xt_statistic", "xt_MASQUERADE", "xt_addrtype", "xt_nat", "xt_tcpudp", "xt_multiport", "xt_CT", "iptable_nat", "iptable_filter", "iptable_raw", "sch_ingress", "cls_bpf", "sch_tbf")
MODULE_DIRS = ("kernel/net", "kernel/lib", "kernel/crypto", "kernel/arch", "kernel/drivers/net")
# What no guest run imports: a third of the image (C++ headers, Arrow Flight, the same library under three
# names because wheels cannot hold symlinks, perl pulled in by dependencies, charset converters).
PRUNE = ("*/tests", "pyarrow/include", "pyarrow/src", "pyarrow/*flight*", "pyarrow/_pyarrow_cpp_tests*",
         "pyarrow/libarrow_python*.so", "pyarrow/libarrow_python*.so.*.*", "usr/lib/*/perl", "usr/lib/*/perl-base",
         "usr/share/perl*", "usr/lib/*/gconv")
BOOT_TIMEOUT_S = {"load": 900, "full": 2400}
MEMORY_MB = 3072


def log(msg: str) -> None:
    print(f"[vm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """A command whose failure stops the tool with its output's tail."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"matrix: {' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{tail}")
    return proc


def mmdebstrap(arch: str, suite: str, sources: list[str], include: list[str], target: Path) -> None:
    """Download and unpack packages (and their dependencies) for arch without running any of their scripts: no
    emulation needed on the host, and nothing of the host's apt configuration is touched."""
    run(["mmdebstrap", "--mode=root", "--variant=extract", f"--architectures={arch}",
         "--include=" + ",".join(include), suite, str(target), *sources])


def write_cpio(src: Path, out: Path) -> None:
    """src as a newc archive (uncompressed: the guest kernel unpacks it faster than it could inflate it)."""
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        files = subprocess.run(["find", "."], cwd=src, capture_output=True, check=True).stdout
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=src, input=files, stdout=f,
                       check=True)
    tmp.replace(out)


# ------------------------------------------------------------------------------------------------ kernels


def kernel_dir(kid: str) -> Path:
    return CACHE / "kernels" / kid


def fetch_kernel(kid: str) -> Path:
    """vmlinuz, version and modules.cpio (network/netfilter modules + config) of one kernel; cached."""
    out = kernel_dir(kid)
    if (out / "modules.cpio").is_file() and (out / "format").is_file() \
            and (out / "format").read_text() == BUILD_VERSION:
        return out
    series, arch = kid.split("-")
    suite, sources, spec = SERIES[series]
    log(f"{kid}: fetching {spec.format(arch=arch)} ({suite})")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp) / "root"
        mmdebstrap(arch, suite, sources, [spec.format(arch=arch)], root)
        (kver,) = [p.name for p in (root / "lib/modules").iterdir()]
        stage = Path(tmp) / "stage"
        mods = stage / "lib/modules" / kver
        mods.mkdir(parents=True)
        for f in (root / "lib/modules" / kver).glob("modules.*"):
            shutil.copy2(f, mods / f.name)
        for d in MODULE_DIRS:
            if (root / "lib/modules" / kver / d).is_dir():
                shutil.copytree(root / "lib/modules" / kver / d, mods / d)
        run(["depmod", "-b", str(stage), kver])  # modules.dep is the package's postinst's work
        (stage / "boot").mkdir()
        shutil.copy2(root / "boot" / f"config-{kver}", stage / "boot" / f"config-{kver}")
        work = Path(tmp) / "out"
        work.mkdir()
        shutil.copy2(root / "boot" / f"vmlinuz-{kver}", work / "vmlinuz")
        (work / "version").write_text(kver + "\n")
        (work / "format").write_text(BUILD_VERSION)
        write_cpio(stage, work / "modules.cpio")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.move(str(work), out)
    log(f"{kid}: {kver}")
    return out


# ------------------------------------------------------------------------------------------------ rootfs


def python_requirements() -> list[str]:
    """cniprof's dependencies (pyproject.toml) pinned to the versions installed beside this interpreter (the
    venv's), else as pyproject says."""
    from importlib import metadata

    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = []
    for dep in deps:
        name = re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0]
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            reqs.append(dep)
    return reqs


def rootfs_key(reqs: list[str]) -> str:
    text = json.dumps([BUILD_VERSION, PACKAGES, reqs])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def fetch_wheels(arch: Arch, reqs: list[str], dest: Path) -> list[Path]:
    """Wheels of reqs (and their dependencies) for CPython 3.11 on the guest's glibc 2.36 platform."""
    platforms = [f"manylinux_2_{minor}_{arch.wheel}" for minor in range(17, 37)] + [f"manylinux2014_{arch.wheel}"]
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--only-binary=:all:",
           "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
           "-d", str(dest), *(a for p in platforms for a in ("--platform", p)), *reqs]
    run(cmd)
    return sorted(dest.glob("*.whl"))


def build_rootfs(arch: Arch) -> Path:
    """The guest userspace of one architecture as an uncompressed cpio; cached by its recipe's hash."""
    reqs = python_requirements()
    out = CACHE / f"rootfs-{arch.name}-{rootfs_key(reqs)}.cpio"
    if out.is_file():
        return out
    log(f"rootfs {arch.name}: bookworm packages and wheels for {arch.machine}")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp) / "root"
        mmdebstrap(arch.name, "bookworm", [f"deb {MIRROR} bookworm main", f"deb {SECURITY} bookworm-security main"],
                   list(PACKAGES), root)
        for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt",
                     "usr/lib/python3.11/test", "usr/lib/python3.11/idlelib", "usr/lib/python3.11/tkinter",
                     "usr/lib/python3.11/ensurepip", "usr/lib/python3.11/lib2to3"):
            shutil.rmtree(root / junk, ignore_errors=True)
        # what the packages' maintainer scripts would have done (extract runs none)
        for tool in ("iptables", "iptables-save", "iptables-restore"):
            link = root / "usr/sbin" / tool
            link.unlink(missing_ok=True)
            link.symlink_to("xtables-nft-multi")
        (root / "usr/bin/python3").unlink(missing_ok=True)
        (root / "usr/bin/python3").symlink_to("python3.11")
        site = root / "usr/lib/python3/dist-packages"
        site.mkdir(parents=True, exist_ok=True)
        wheels = CACHE / "wheels" / arch.name / rootfs_key(reqs)
        wheels.mkdir(parents=True, exist_ok=True)
        for whl in fetch_wheels(arch, reqs, wheels):
            with zipfile.ZipFile(whl) as z:
                z.extractall(site)
        for p in site.rglob("*"):  # zipfile drops the mode bits: shared objects must stay executable
            if p.is_file() and (p.suffix == ".so" or ".so." in p.name):
                p.chmod(0o755)
        for pattern in PRUNE:
            for junk in [*root.glob(pattern), *site.glob(pattern)]:
                shutil.rmtree(junk) if junk.is_dir() and not junk.is_symlink() else junk.unlink()
        # bytecode compiled once here (same 3.11 magic), unchecked: the guest never stats sources to validate it
        run([sys.executable, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash",
             str(root / "usr/lib/python3.11"), str(site)])
        for d in ("proc", "sys", "dev", "run", "tmp", "sys/fs/bpf"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root / "var/run", ignore_errors=True)
        (root / "var/run").unlink(missing_ok=True)
        (root / "var/run").symlink_to("/run")  # base-files' postinst would make it (pyroute2 uses /var/run/netns)
        if not (root / "bin/sh").exists():
            (root / "bin/sh").symlink_to("busybox")  # dash's job
        write_cpio(root, out)
    for old in CACHE.glob(f"rootfs-{arch.name}-*.cpio"):
        if old != out:
            old.unlink()
    log(f"rootfs {arch.name}: {out.name} ({out.stat().st_size >> 20} MiB)")
    return out


# ------------------------------------------------------------------------------------------------ project


def build_wheel(dest: Path) -> Path:
    """cniprof's wheel, built as for a release (pip wheel; setup.py's build step compiles bpf/ for x86_64 and
    aarch64 with cniprof.bpf.build), from the files of this work tree that git tracks or would track (so an
    uncommitted change is tested, a stray build product is not)."""
    src = dest / "src"
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file():  # tracked but deleted in the work tree: not part of the copy
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    wheels = dest / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--no-deps", "--wheel-dir",
         str(wheels), str(src)], cwd=dest)
    (wheel,) = wheels.glob("cniprof-*.whl")
    shutil.rmtree(src)
    return wheel


def build_project(arch: Arch, wheel: Path, dest: Path, debug_script: Path | None = None) -> Path:
    """The wheel's content (cniprof with its BPF objects for every machine) unpacked at /opt/cniprof, the guest
    program and /init. The guests therefore load exactly the objects a release ships."""
    stage = dest / f"project-{arch.name}"
    pkg = stage / "opt/cniprof"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(pkg)
    objects = sorted((pkg / "cniprof/bpf/obj" / arch.machine).glob("*.bpf.o"))
    if not objects:
        raise SystemExit(f"matrix: {wheel.name} has no BPF objects for {arch.machine}")
    log(f"{wheel.name}: {arch.machine} objects " + ", ".join(
        f"{o.name[:-len('.bpf.o')]} {hashlib.sha256(o.read_bytes()).hexdigest()[:12]}" for o in objects))
    (stage / "vm").mkdir()
    shutil.copy2(HERE / "guest.py", stage / "vm/guest.py")
    shutil.copy2(HERE / "init.sh", stage / "init")
    (stage / "init").chmod(0o755)
    (stage / "vm/modules").write_text("\n".join(MODULES) + "\n")
    if debug_script:
        shutil.copy2(debug_script, stage / "vm/debug.sh")
        (stage / "vm/debug.sh").chmod(0o755)
    run([sys.executable, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash",
         "-d", "/opt/cniprof", str(pkg)])
    out = dest / f"project-{arch.name}.cpio"
    write_cpio(stage, out)
    return out


# ------------------------------------------------------------------------------------------------ boot


@dataclass
class Outcome:
    kid: str
    wall_s: float
    result: dict | None
    log: Path
    error: str = ""
    level: str = "load"


def boot(kid: str, level: str, rootfs: Path, project: Path, work: Path) -> Outcome:
    """One guest: concatenated initramfs (rootfs + the kernel's modules + project), console to a log."""
    arch = ARCHES[kid.split("-")[1]]
    kdir = kernel_dir(kid)
    initrd = work / f"initrd-{kid}.cpio"
    with open(initrd, "wb") as out:
        for part in (rootfs, kdir / "modules.cpio", project):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    logs = CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logf = logs / f"{kid}-{level}.log"
    cmd = [*arch.qemu, "-accel", "tcg", "-smp", "1", "-m", str(MEMORY_MB), "-nographic", "-no-reboot",
           "-kernel", str(kdir / "vmlinuz"), "-initrd", str(initrd),
           "-append", f"console={arch.console} panic=-1 loglevel=3 rdinit=/init cniprof_vm={level} {arch.cmdline}"]
    start = time.monotonic()
    error = ""
    with open(logf, "wb") as f:
        try:
            subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, check=False,
                           timeout=BOOT_TIMEOUT_S[level])
        except subprocess.TimeoutExpired:
            error = f"no result within {BOOT_TIMEOUT_S[level]} s"
    wall = time.monotonic() - start
    initrd.unlink()
    result, problem = parse_result(logf.read_text(errors="replace"))
    return Outcome(kid, wall, result, logf, error or problem, level)


def parse_result(console: str) -> tuple[dict | None, str]:
    """The guest's result line from its console output, or None and why (a console message printed in the middle
    of the line, e.g. by the kernel, breaks it)."""
    result, problem = None, "the guest printed no result"
    for line in console.splitlines():
        line = line.strip("\r")
        if line.startswith(RESULT_TAG):
            try:
                result, problem = json.loads(line[len(RESULT_TAG):]), ""
            except json.JSONDecodeError as e:
                result, problem = None, f"the guest's result line is not JSON ({e})"
    return result, problem


# ------------------------------------------------------------------------------------------------ compare


def load_expected() -> dict:
    return json.loads(EXPECTED.read_text())


def differences(expected: object, got: object, path: str = "") -> list[str]:
    """Every leaf where got differs from expected, as 'path: expected X, got Y'."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(expected) | set(got)):
            sub = f"{path}.{key}" if path else key
            if key not in got:
                out.append(f"{sub}: expected {json.dumps(expected[key])}, missing")
            elif key not in expected:
                out.append(f"{sub}: not expected, got {json.dumps(got[key])}")
            else:
                out += differences(expected[key], got[key], sub)
        return out
    return [] if expected == got else [f"{path}: expected {json.dumps(expected)}, got {json.dumps(got)}"]


def compare(outcome: Outcome, level: str, expected: dict) -> list[str]:
    if outcome.result is None:
        return [outcome.error]
    want = expected["kernels"][outcome.kid]
    got = outcome.result
    keys = ["choices", "load"] + (["trace"] if level == "full" else [])
    diffs = differences({k: want.get(k) for k in keys}, {k: got.get(k) for k in keys})
    if got.get("errors"):
        diffs += [f"guest error: {e}" for e in got["errors"]]
    return diffs


# ------------------------------------------------------------------------------------------------ table

FEATURE_ROWS = (  # (label, path in the expected entry)
    ("per-hop latency", "hops"),
    ("drops", "drops"),
    ("CPU sampling", "cpu"),
    ("netfilter cost per hook", "netfilter"),
)
PROBE_NAMES = {"tp_btf": "tp_btf", "tp_btf_noreason": "tp_btf (no reason)", "perf_event": "perf_event",
               "netfilter_link": "netfilter link", "fentry": "fentry", "kprobe": "kprobe", None: "—"}


def table(expected: dict) -> str:
    """Markdown: one row per feature, one column per kernel and arch, each cell the probe type trace uses."""
    kids = list(expected["kernels"])
    head = "| feature | " + " | ".join(f"{k.split('-')[0]} {k.split('-')[1]}" for k in kids) + " |"
    lines = [head, "|---" * (len(kids) + 1) + "|"]
    for label, key in FEATURE_ROWS:
        cells = [PROBE_NAMES.get(expected["kernels"][k]["choices"].get(key), "?") for k in kids]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ main


def parse_kernels(text: str | None) -> list[str]:
    kids = text.split(",") if text else list(KERNEL_IDS)
    bad = [k for k in kids if k not in KERNEL_IDS]
    if bad:
        raise SystemExit(f"matrix: unknown kernel {', '.join(bad)}; known: {', '.join(KERNEL_IDS)}")
    return kids


HOST_PACKAGES = {"mmdebstrap": "mmdebstrap", "cpio": "cpio", "depmod": "kmod", "qemu-system-aarch64": "qemu-system-arm",
                 "qemu-system-x86_64": "qemu-system-x86"}


def need_tools() -> None:
    """Root, and the host's tools (installed from Debian's archive when missing: a fresh machine works)."""
    if os.geteuid() != 0:
        raise SystemExit("matrix: run as root (mmdebstrap --mode=root, apt-get, cpio owners)")
    for d in ("/usr/sbin", "/sbin"):
        if d not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] += os.pathsep + d
    missing = sorted({pkg for tool, pkg in HOST_PACKAGES.items() if not shutil.which(tool)})
    if missing:
        log(f"installing {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], env=env)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600",
             *missing], env=env)


def cmd_run(args: argparse.Namespace) -> int:
    return run_matrix([(k, args.level) for k in parse_kernels(args.kernels)], args.jobs, args.debug_script)


CI_FULL = "6.1-arm64"  # the seed talk's platform and today's most common arm64 node kernel


def cmd_ci(args: argparse.Namespace) -> int:
    """CI: the full level on 6.1 arm64 (started first: the longest) beside the load level on the five others
    (the load level there too while expected.json has no full-level results for it)."""
    full = "full" if "trace" in load_expected()["kernels"][CI_FULL] else "load"
    return run_matrix([(CI_FULL, full)] + [(k, "load") for k in KERNEL_IDS if k != CI_FULL], args.jobs, None)


def run_matrix(plan: list[tuple[str, str]], jobs: int, debug_script: Path | None) -> int:
    """Boot every (kernel, level) of plan, jobs at a time; compare each with expected.json; print the table."""
    need_tools()
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    kids = [k for k, _ in plan]
    for kid in kids:
        fetch_kernel(kid)
    arches = sorted({k.split("-")[1] for k in kids})
    rootfs = {a: build_rootfs(ARCHES[a]) for a in arches}
    expected = load_expected()
    failed = 0
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        wheel = build_wheel(Path(tmp))
        project = {a: build_project(ARCHES[a], wheel, Path(tmp), debug_script) for a in arches}
        log(f"prepared in {time.monotonic() - t0:.0f} s; booting {len(plan)} guests ({jobs} at a time)")
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(boot, k, level, rootfs[k.split("-")[1]], project[k.split("-")[1]], Path(tmp))
                       for k, level in plan]
            for fut in concurrent.futures.as_completed(futures):
                o = fut.result()
                diffs = compare(o, o.level, expected)
                log(f"{o.kid} ({o.level}): {'ok' if not diffs else 'DIFFERS'} in {o.wall_s:.0f} s (log {o.log})")
                for d in diffs:
                    print(f"{o.kid} ({o.level}): {d}", flush=True)
                if o.result is not None:
                    (CACHE / "logs" / f"{o.kid}-{o.level}.json").write_text(json.dumps(o.result, indent=1))
                failed += bool(diffs)
    print(table({"kernels": {k: expected["kernels"][k] for k in sorted(set(kids), key=KERNEL_IDS.index)}}))
    log(f"kernel matrix: {time.monotonic() - t0:.0f} s")
    print(f"vm-matrix: {len(plan) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    need_tools()
    kids = parse_kernels(args.kernels)
    CACHE.mkdir(parents=True, exist_ok=True)
    for kid in kids:
        fetch_kernel(kid)
    for a in sorted({k.split("-")[1] for k in kids}):
        build_rootfs(ARCHES[a])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="boot the guests and compare with expected.json")
    p.add_argument("--kernels", help=f"comma-separated subset of {','.join(KERNEL_IDS)}")
    p.add_argument("--level", choices=("load", "full"), default="full")
    p.add_argument("--jobs", type=int, default=2, help="guests at a time (default 2)")
    p.add_argument("--debug-script", type=Path, help="a shell script the guest runs before its checks")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("ci", help=f"what CI runs: full on {CI_FULL}, load on the others")
    p.add_argument("--jobs", type=int, default=2)
    p.set_defaults(func=cmd_ci)
    p = sub.add_parser("fetch", help="fetch kernels and build the rootfs images (cached)")
    p.add_argument("--kernels")
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("table", help="print the README's kernel table from expected.json")
    p.set_defaults(func=lambda a: print(table(load_expected()), end="") or 0)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
