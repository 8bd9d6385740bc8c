"""Type-check the installed layout of the package: ``python3 tests/typecheck.py [mypy args]``.

``roles/`` and ``protocol/`` live at the top of the repository but install as ``playtotv.roles`` and
``playtotv.protocol`` (setup.cfg's ``package_dir``), a mapping mypy cannot follow from the source tree. So
this builds that layout from symbolic links in a temporary directory and runs mypy on it, with the
configuration in pyproject.toml. Errors name the linked paths, which read as the installed module names.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Where each installed subpackage comes from, as setup.cfg's package_dir says.
MAPPED = {"roles": ROOT / "roles", "protocol": ROOT / "protocol"}


def main(args: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="playtotv-typecheck-") as tmp:
        package = Path(tmp) / "playtotv"
        package.mkdir()
        for entry in (ROOT / "playtotv").iterdir():
            if entry.name != "__pycache__":
                (package / entry.name).symlink_to(entry)
        for name, source in MAPPED.items():
            (package / name).symlink_to(source)
        command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                   "--cache-dir", str(ROOT / ".mypy_cache"), "-p", "playtotv", *args]
        return subprocess.run(command, cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
