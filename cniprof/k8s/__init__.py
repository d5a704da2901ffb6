# SPDX-License-Identifier: Apache-2.0
"""cniprof on a Kubernetes cluster: the agent DaemonSet and its RBAC, pods by name, exec sessions to the node
agents, generators in ephemeral containers or scheduled pods. Uses the official `kubernetes` client."""
