# SPDX-License-Identifier: Apache-2.0
"""The console for tables printed by the report-style commands (advise, tune, report).

Why not plain Console(): without a terminal Rich assumes 80 columns, and these wide tables end up in logs and bug
reports with every cell truncated to a few characters; 160 columns keep them readable there."""

from __future__ import annotations

import sys

from rich.console import Console

PIPE_WIDTH = 160


def wide_console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)
