# SPDX-License-Identifier: Apache-2.0
"""Findings and tuning advice from a run directory (a `trace --export` dir or a study's run dir).

load.py reads the files into RunData; rules.py turns one run into Findings (each with evidence a reader can find in
the run's tables); advice.py holds the tunings that address each finding kind, per CNI, with their risk; engine.py
ranks them (faults before observations, then by share) and merges a study's repetitions; render.py draws and writes.
"""
