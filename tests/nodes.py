"""``run_cli``: a short ``playtotv`` command run to completion. Tests start nodes with
``playtotv.devtools.nodeprocess.NodeProcess``, the class the cluster and the benchmarks use.
"""

from __future__ import annotations

import os
import subprocess
from typing import Mapping

from playtotv.devtools.nodeprocess import playtotv_command

__all__ = ["run_cli"]


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """A short CLI invocation (``--version``, a refused configuration) run to completion."""
    return subprocess.run(
        playtotv_command(*args), capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
