# SPDX-License-Identifier: Apache-2.0
"""scripts/setup.sh on a multiarch Debian: libbpf-dev:arm64 installed beside the native libbpf-dev (anyone
cross-building for arm64) makes `dpkg-query -W libbpf-dev` print one status per architecture.

The real script runs with fake dpkg-query, dpkg, apt-get and id first on PATH, answering from a package database
of the test's own (what a machine with the given packages would print, whatever format the script asks for),
in a copy of the tree whose .venv is a stand-in: no real package, venv or BPF object is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "setup.sh"
NATIVE = "amd64"

FAKE_DPKG_QUERY = r'''
import json, os, re, sys
db = json.load(open(os.environ["FAKE_DPKG_DB"]))
args = sys.argv[1:]
fmt, names = "${binary:Package}\t${Version}\n", []
i = 0
while i < len(args):
    a = args[i]
    if a in ("-W", "--show"):
        pass
    elif a.startswith(("-f=", "--showformat=")):
        fmt = a.split("=", 1)[1]
    elif a in ("-f", "--showformat"):
        i += 1
        fmt = args[i]
    else:
        names.append(a)
    i += 1
fmt = fmt.replace("\\n", "\n").replace("\\t", "\t")
status = 0
for name in names:
    pkg, _, want = name.partition(":")
    found = [(arch, st) for arch, st in db.get(pkg, {}).items() if not want or want == arch]
    if not found:
        print(f"dpkg-query: no packages found matching {name}", file=sys.stderr)
        status = 1
    for arch, st in found:
        abbrev = "ii " if st == "install ok installed" else "un "
        fields = {"Package": pkg, "binary:Package": pkg if arch in (os.environ["FAKE_NATIVE"], "all")
                  else f"{pkg}:{arch}", "Architecture": arch, "Status": st, "db:Status-Abbrev": abbrev,
                  "Version": "1.0"}
        sys.stdout.write(re.sub(r"\$\{([^}]+)\}", lambda m: fields.get(m.group(1), ""), fmt))
sys.exit(status)
'''
FAKE_DPKG = r'''
import os, sys
if sys.argv[1:] == ["--print-architecture"]:
    print(os.environ["FAKE_NATIVE"])
    sys.exit(0)
sys.exit("fake dpkg: only --print-architecture")
'''
FAKE_APT = r'''
import os, sys
with open(os.environ["FAKE_APT_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\n")
sys.exit(0)
'''


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path: Path):
    """A copy of the tree with a stand-in venv, fake package tools on PATH, and the database they answer from."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy2(SETUP, tree / "scripts" / "setup.sh")
    shutil.copy2(ROOT / "pyproject.toml", tree / "pyproject.toml")
    venv_bin = tree / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    for name in ("python", "cniprof", "pytest"):  # setup.sh only asks them to run: the stand-ins say yes
        _script(venv_bin / name, "import sys\nsys.exit(0)\n")
    stamp = hashlib.sha256((tree / "pyproject.toml").read_bytes()).hexdigest()
    (tree / ".venv" / ".cniprof-install-stamp").write_text(stamp + "\n")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    _script(fakes / "dpkg-query", FAKE_DPKG_QUERY)
    _script(fakes / "dpkg", FAKE_DPKG)
    _script(fakes / "apt-get", FAKE_APT)
    db_path, apt_log = tmp_path / "dpkg.json", tmp_path / "apt.log"

    def run(installed: dict[str, dict[str, str]], uid: int = 0) -> subprocess.CompletedProcess[str]:
        db_path.write_text(json.dumps(installed))
        _script(fakes / "id", f"import sys\nprint({uid} if sys.argv[1:] == ['-u'] else 'uid={uid}')\n")
        env = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", "FAKE_DPKG_DB": str(db_path),
               "FAKE_NATIVE": NATIVE, "FAKE_APT_LOG": str(apt_log)}
        return subprocess.run(["bash", str(tree / "scripts" / "setup.sh")], check=False, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)

    run.apt_calls = lambda: apt_log.read_text().splitlines() if apt_log.exists() else []  # type: ignore[attr-defined]
    return run


def _packages() -> list[str]:
    text = SETUP.read_text()
    body = text[text.index("PACKAGES=(") + len("PACKAGES=("):]
    return body[:body.index(")")].split()


def _all_installed(**extra: dict[str, str]) -> dict[str, dict[str, str]]:
    db = {pkg: {NATIVE: "install ok installed"} for pkg in _packages()}
    for pkg, arches in extra.items():
        db.setdefault(pkg.replace("_", "-"), {}).update(arches)
    return db


def test_the_fake_dpkg_query_prints_one_status_per_architecture(machine, tmp_path: Path) -> None:
    """What made the old check fail: two statuses for one name (here printed by the fake, as dpkg does)."""
    db = _all_installed(libbpf_dev={"arm64": "install ok installed"})
    (tmp_path / "dpkg.json").write_text(json.dumps(db))
    env = {**os.environ, "FAKE_DPKG_DB": str(tmp_path / "dpkg.json"), "FAKE_NATIVE": NATIVE}
    out = subprocess.run([str(tmp_path / "fakes" / "dpkg-query"), "-W", "-f=${Status}", "libbpf-dev"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out == "install ok installed" * 2


def test_setup_passes_with_libbpf_dev_arm64_beside_the_native_one(machine) -> None:
    p = machine(_all_installed(libbpf_dev={"arm64": "install ok installed"}))
    assert p.returncode == 0, p.stderr
    assert "still missing" not in p.stderr and "error" not in p.stderr
    assert machine.apt_calls() == []  # nothing was (re)installed: every package counts as there


def test_the_foreign_architecture_alone_does_not_count(machine) -> None:
    """libbpf-dev only for arm64: the native one is missing, and setup says so (here: as a non-root user)."""
    db = _all_installed()
    db["libbpf-dev"] = {"arm64": "install ok installed"}
    p = machine(db, uid=1000)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == ("setup.sh: error: packages missing (libbpf-dev) and not root: "
                                                 "run scripts/setup.sh as root")
    assert machine.apt_calls() == []


def test_architecture_independent_and_half_installed_packages(machine) -> None:
    """`all` packages count; a removed-but-configured (deinstall) native package does not."""
    db = _all_installed()
    db["python3-venv"] = {"all": "install ok installed"}
    db["ethtool"] = {NATIVE: "deinstall ok config-files"}
    p = machine(db, uid=1000)
    assert p.returncode == 1
    assert "packages missing (ethtool) and not root" in p.stderr
