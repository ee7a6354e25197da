"""Evaluations and benchmarks of the engine, as library code the tests call.

- ``evaluation.metrics``: Revisited AP and mP@k, GAP, adjusted Rand index.
- ``evaluation.roxford``: the Revisited Oxford protocol (``delf evaluate roxford``).
- ``evaluation.reject``: photos of unknown places must be rejected (``delf evaluate reject``).
- ``evaluation.collection``: batch matching scored against labels (``delf evaluate collection``).
- ``evaluation.sift``: the RootSIFT reference (``delf evaluate roxford --method sift``).
- ``evaluation.bench_*``: the benchmarks behind ``delf bench ...``.

Everything here runs on ``engine`` and the stages below it; nothing below imports it.
"""
