# SPDX-License-Identifier: Apache-2.0
"""`cniprof tune`: measure whether a tuning helps on the lab, with paired before/after runs."""
