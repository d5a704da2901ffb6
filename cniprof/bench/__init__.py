# SPDX-License-Identifier: Apache-2.0
"""Benchmark studies: a scenario's runs (cniprof.bench.runner), their statistics and the run directory."""
