#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Prepare this machine for cniprof (Debian 12, as root): system packages, .venv, editable install, BPF objects
# (compiled in place for x86_64 and aarch64 into cniprof/bpf/obj/<machine>/ by python -m cniprof.bpf.build,
# the same code the wheel build runs).
#
# Idempotent and fast when re-run: apt is skipped when every package is installed, pip when pyproject.toml
# has not changed since the last successful install. The BPF objects are always rebuilt (a few seconds).
# Tool output goes to a log; on failure its tail is shown, then one line saying what failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.cniprof-install-stamp"
# iputils-ping: cniprof.traffic.ping; setpriv (util-linux, essential) is used by cniprof.traffic.netns.
# chromium: the browser test of report.html (tests/root/test_report_browser.py, driven by playwright from .venv).
PACKAGES=(clang llvm libbpf-dev bpftool iproute2 iperf3 sockperf iptables nginx-light wrk ethtool python3-venv
          iputils-ping chromium)

LOG="$(mktemp /tmp/cniprof-setup.XXXXXX.log)"
POLICY_RC=""
cleanup() {
    [ -n "$POLICY_RC" ] && rm -f "$POLICY_RC"
    rm -f "$LOG"
}
trap cleanup EXIT

say() { echo "setup: $*" >&2; }

fail() {
    if [ -s "$LOG" ]; then
        echo "----- last lines of the setup log -----" >&2
        tail -n 40 "$LOG" >&2
        echo "---------------------------------------" >&2
    fi
    echo "setup.sh: error: $*" >&2
    exit 1
}

# Run a command with its output in the log (kept quiet unless it fails).
run() { "$@" >>"$LOG" 2>&1 </dev/null; }

missing_packages() {
    local pkg status
    for pkg in "${PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        [ "$status" = "install ok installed" ] || echo "$pkg"
    done
}

install_packages() {
    command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
        || fail "dpkg/apt-get not found: cniprof's setup supports Debian 12 (install the packages by hand elsewhere: ${PACKAGES[*]})"
    local missing
    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || fail "packages missing (${missing[*]}) and not root: run scripts/setup.sh as root"
    say "installing ${missing[*]}"
    # Keep package installs from starting daemons (nginx, iperf3) in the root namespace: cniprof runs its own
    # servers inside lab namespaces. Only when no policy is in place already.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        POLICY_RC=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC" && chmod 755 "$POLICY_RC"
    fi
    export DEBIAN_FRONTEND=noninteractive
    run apt-get update || fail "apt-get update failed"
    run apt-get install -y "${missing[@]}" || fail "apt-get install failed (packages: ${missing[*]})"
    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" -eq 0 ] || fail "packages still missing after apt-get install: ${missing[*]}"
}

IMPORTS_THIS_TREE='import os, sys, cniprof
sys.exit(os.path.dirname(os.path.abspath(cniprof.__file__)) != os.path.join(os.environ["CNIPROF_ROOT"], "cniprof"))'

setup_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        run python3 -m venv "$VENV" || fail "python3 -m venv $VENV failed"
    fi
    local want have=""
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    [ -f "$STAMP" ] && have="$(cat "$STAMP")"
    # Reinstall when pyproject.toml changed or the venv does not import this work tree's package.
    if [ "$want" = "$have" ] && [ -x "$VENV/bin/cniprof" ] && [ -x "$VENV/bin/pytest" ] \
        && (cd / && CNIPROF_ROOT="$ROOT" "$VENV/bin/python" -c "$IMPORTS_THIS_TREE") >/dev/null 2>&1; then
        return 0
    fi
    say "installing cniprof into $VENV (pip install -e '.[test]')"
    run "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e "$ROOT[test]" \
        || fail "pip install -e '.[test]' failed"
    echo "$want" >"$STAMP"
}

build_bpf() {
    (cd "$ROOT" && run "$VENV/bin/python" -m cniprof.bpf.build) \
        || fail "compiling the BPF objects failed (python -m cniprof.bpf.build)"
}

install_packages
setup_venv
build_bpf
exit 0
