# SPDX-License-Identifier: Apache-2.0
"""The project's error classes. Only cli.main turns them into a one-line message and an exit code."""


class CniprofError(Exception):
    """A failure the user can act on; str(e) is the one-line message (say what to do)."""

    exit_code = 1


class UsageError(CniprofError):
    exit_code = 2


class EnvironmentProblem(CniprofError):
    """Not root, no BTF, a missing tool or kernel feature."""

    exit_code = 3
