"""Benchmarks for fedprune (not packaged): ``python -m benchmarks --help``."""
