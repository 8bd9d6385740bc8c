"""Benchmarks and load generators: ``python -m bench <name> [options]`` from the repository root.

Each benchmark starts what it needs, runs a bounded load on loopback only and prints one JSON object with
its figures on its last line (design.md §9).
"""
