"""``python -m bench <name> [options]``: run ``bench/<name>.py``'s ``main(argv)``.

A new benchmark is a module ``bench/<name>.py`` with ``main(argv: list[str]) -> int | None``; nothing
here needs to change.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys

import bench

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not _NAME.fullmatch(argv[0]) or argv[0] not in available():
        print(f"usage: python -m bench {{{','.join(available())}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{argv[0]}")
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
