"""Benchmarks and evaluation harnesses (``costwise-bench``). Results go to docs/benchmarks.md with their command."""
