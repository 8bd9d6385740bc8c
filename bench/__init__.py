"""Benchmarks and load generators: ``python -m bench <name> [options]`` from the repository root.

Each benchmark starts what it needs, runs a bounded load on loopback only and prints one JSON object with
its figures on its last line (docs/architecture.md §9).
"""

from __future__ import annotations

import os
import sys


def _import_installed_playtotv() -> None:
    """Import ``playtotv`` from where it is installed, not from the working directory.

    ``bench`` is not installed: it runs from the repository root, which Python puts first on ``sys.path``.
    There ``playtotv/`` is the source tree, which lacks ``roles`` and ``protocol`` (setup.cfg maps them
    into the installed package); once ``playtotv`` is imported, its subpackages come from the same place.
    A checkout that was never installed falls back to the source tree."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    saved = list(sys.path)
    sys.path[:] = [p for p in saved if os.path.abspath(p or os.curdir) != root]
    try:
        import playtotv  # noqa: F401
    except ImportError:
        pass
    finally:
        sys.path[:] = saved


_import_installed_playtotv()
