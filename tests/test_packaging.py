"""`pip install .` must ship every package of the repository (setup.cfg lists them explicitly because
roles/ and protocol/ are mapped under the playtotv name)."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {"playtotv": "playtotv", "roles": "playtotv.roles", "protocol": "playtotv.protocol"}


def test_every_package_directory_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = set()
    for top, name in MAPPING.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([name, *rel.parts]))
    assert found - listed == set(), "add these to [options] packages in setup.cfg"
    assert listed - found == set(), "setup.cfg lists packages that do not exist"
