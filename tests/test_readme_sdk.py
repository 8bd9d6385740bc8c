"""The README's Python SDK example, run as pasted against a real ``playtotv serve``: it must work and print
what the README says it prints (the user id aside)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from playtotv.devtools.nodeprocess import NodeProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## The Python SDK"
TEST_BOUND = 90.0


def code_blocks(section: str) -> list[str]:
    """The indented (4-space) code blocks of a Markdown section, dedented, in order."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in section.splitlines():
        if line.startswith("    ") or (current is not None and not line.strip()):
            if current is None:
                current = []
                blocks.append(current)
            current.append(line)
        else:
            current = None
    return [textwrap.dedent("\n".join(block).rstrip("\n")) + "\n" for block in blocks]


def readme_example() -> tuple[str, str]:
    """(the script, the output the README shows for it): the section's first two code blocks."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    script, output, *_ = code_blocks(section)
    return script, output


def without_user_ids(text: str) -> list[str]:
    return [re.sub(r"\bu_[A-Za-z0-9_-]+", "u_…", line) for line in text.strip().splitlines()]


def test_the_readme_example_is_a_complete_script() -> None:
    script, output = readme_example()
    compile(script, "play_along.py", "exec")  # no `async with` outside a function, no undefined names below
    assert "trio.run(main)" in script and "PLAYTOTV_DIRECTOR_KEY" in script
    assert output.startswith("joined as ")


async def test_the_readme_sdk_example_runs_as_pasted(nursery, tmp_path) -> None:
    script, expected = readme_example()
    (tmp_path / "play_along.py").write_text(script)
    env = {
        "PLAYTOTV_GATEKEEPER_BIND": "127.0.0.1:0", "PLAYTOTV_CORE_BIND": "127.0.0.1:0",
        "PLAYTOTV_PUSH_BIND": "127.0.0.1:0", "PLAYTOTV_PUSH_POLLING_BIND": "127.0.0.1:0",
        "PLAYTOTV_STORE_URL": f"sqlite:///{tmp_path / 'readme.db'}", "PLAYTOTV_NODE_DRAIN_SECONDS": "2",
    }
    with trio.fail_after(TEST_BOUND):
        node = await NodeProcess("all", env=env).start(nursery)
        assert node.director_key
        # As a newcomer runs it: its own directory, the printed key in the environment, nothing else.
        done = await trio.run_process(
            [sys.executable, "play_along.py", node.listening["gatekeeper"]], cwd=tmp_path, check=False,
            env={**os.environ, "PLAYTOTV_DIRECTOR_KEY": node.director_key},
            capture_stdout=True, capture_stderr=True, stdin=subprocess.DEVNULL,
        )
        await node.terminate()
    out = done.stdout.decode()
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr.decode()[-3000:]}"
    assert without_user_ids(out) == without_user_ids(expected), out
