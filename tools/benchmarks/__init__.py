"""Benchmark suites behind ``tools/benchmark.py``: one module per suite over the timing loop in ``common``."""
