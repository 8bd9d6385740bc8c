"""Tooling around the runtime, not the runtime: the local cluster (``playtotv cluster up``), local Redis,
node processes watched through their standard output, a synthetic audience and the warm-up.

Tests and benchmarks start node processes and Redis only through this package. The runtime
(``playtotv.node`` and the roles) never imports it (``tests/test_devtools.py``).
"""
