# SPDX-License-Identifier: Apache-2.0
"""Read-only readers of a node: what runs on it and where (nothing here changes the node)."""
