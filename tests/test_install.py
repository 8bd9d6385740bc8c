"""After a plain (not editable) ``pip install .``, commands run from the repository root use the installed
package: there the source tree's ``playtotv/`` lacks ``roles`` and ``protocol`` (setup.cfg maps them in at
install), so a child process that let the working directory shadow the installed package could not start.

The package is built into a wheel and installed into a fresh virtualenv; its dependencies come from the
test's own environment through a ``.pth`` line (plain directory lines in a ``.pth`` file do not run the
editable install's import hook, so nothing here can find the source tree except through the working
directory).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from playtotv.cli import parse_listening_line
from tests.nodes import read_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: What a wheel is built from (setup.cfg's package_dir), copied so the build leaves nothing in the tree.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "playtotv", "roles", "protocol")
BUILD_TIMEOUT = 180.0
TEST_BOUND = 90.0


def run(command: list[str], **options: object) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, **options)
    assert result.returncode == 0, f"{command}: {result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a virtualenv holding a wheel-installed playtotv."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(path, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work / "dist"), str(source)])
    wheel = next((work / "dist").glob("playtotv-*.whl"))
    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)])
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # Every site directory of the test's interpreter: a virtualenv made with --system-site-packages has
    # its dependencies in the system's.
    Path(purelib, "_playtotv_test_dependencies.pth").write_text("".join(f"{d}\n" for d in site.getsitepackages()))
    return venv / "bin"


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PYTHONUNBUFFERED": "1"}


async def test_cluster_up_from_the_repository_root_runs_the_installed_package(installed: Path) -> None:
    command = [str(installed / "playtotv"), "cluster", "up", "--gatekeepers", "1", "--cores", "1",
               "--pushes", "1", "--workers", "0", "--schedulers", "0", "--no-sentinel", "--no-restart"]
    with trio.fail_after(TEST_BOUND):
        proc = await trio.lowlevel.open_process(command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
        try:
            lines = await read_until(proc, "cluster ready")
            assert sum(parse_listening_line(line) is not None for line in lines) >= 3, lines
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                with trio.CancelScope(shield=True), trio.move_on_after(20):
                    await proc.wait()


def test_bench_from_the_repository_root_imports_the_installed_package(installed: Path) -> None:
    """``python -m bench ...`` must run from the root (``bench`` is not installed) and still import the
    installed playtotv, roles and protocol included."""
    probe = ("import bench, playtotv.protocol, playtotv.roles, playtotv.devtools.cluster; "
             "print(playtotv.__file__)")
    out = run([str(installed / "python"), "-c", probe], cwd=ROOT, env=child_env())
    assert Path(out.stdout.strip()).is_relative_to(installed.parent), out.stdout


def test_the_installed_package_ships_every_lua_script(installed: Path) -> None:
    """The Redis scripts are package data (setup.cfg): each one the source has is installed and loads."""
    probe = ("import pathlib, playtotv\n"
             "from playtotv.broker._redis_script_loader import lua_source\n"
             "root = pathlib.Path(playtotv.__file__).parent\n"
             "for path in sorted(root.rglob('*.lua')):\n"
             "    if path.parent.name == 'lua':\n"
             "        lua_source(f'playtotv.{path.parent.parent.name}', path.name)\n"
             "    print(path.relative_to(root).as_posix())\n")
    out = run([str(installed / "python"), "-c", probe], cwd=installed.parent, env=child_env())
    source = sorted(path.relative_to(ROOT / "playtotv").as_posix() for path in (ROOT / "playtotv").rglob("*.lua"))
    assert len(source) > 10 and out.stdout.split() == source


def test_the_installed_plan_finds_its_shipped_calibration(installed: Path) -> None:
    """``playtotv plan`` without ``--calibration`` reads the calibration shipped as package data."""
    out = run([str(installed / "playtotv"), "plan", "--viewers", "1000000", "--json"], cwd=installed.parent,
              env=child_env())
    assert json.loads(out.stdout)["cores"] > 0
