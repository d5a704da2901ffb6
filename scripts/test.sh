#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Set the machine up (scripts/setup.sh), then run the whole test suite. Extra arguments go to pytest.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
bash scripts/setup.sh || exit $?
# the layering (pyproject.toml [tool.importlinter]) and the pure packages' types, before the tests
layering="$(.venv/bin/lint-imports --no-cache 2>&1)" || { echo "$layering"; exit 1; }
.venv/bin/mypy --no-incremental || exit 1
exec .venv/bin/pytest -q tests "$@"
