#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Set the machine up (scripts/setup.sh), then trace the flannel lab. Extra arguments go to `cniprof trace`.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
bash scripts/setup.sh || exit $?
exec .venv/bin/cniprof trace --cni flannel "$@"
