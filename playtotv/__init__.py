"""PlayToTV: play-along TV platform. One executable, pluggable roles (see docs/architecture.md §2)."""

__version__ = "0.1.0"
