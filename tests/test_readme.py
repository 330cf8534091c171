"""The README's command line as a newcomer meets it after `make run` (issue 25): every line of its first
session runs as written (`.venv/bin/toroid ...`) against `toroid serve --demo`, every client command of the
synopsis answers `--help`, and `make run` says what it installs and where `toroid` is.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, start_serve, stop, wait_for_log

TOROID = str(Path(sys.executable).parent / "toroid")
SERVER_COMMANDS = {"serve", "worker"}  # what `make run` itself starts; the others talk to a service


def command_line_blocks() -> list[list[str]]:
    """The ```bash blocks of the README's "The command line" section, as lists of lines."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## The command line\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_says_where_toroid_is():
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## The command line\n", 1)[0]
    assert ".venv/bin/toroid" in head and "source .venv/bin/activate" in head
    synopsis, first_session = command_line_blocks()[:2]
    # (an indented line continues the command above it)
    assert all(line.startswith(("toroid ", " ")) for line in synopsis if line.strip())
    assert all(line.startswith(".venv/bin/toroid ") for line in first_session if line.strip())


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_run_says_what_it_installs_and_where_toroid_is(tmp_path):
    out = subprocess.run(["make", "-n", "run", f"VENV={tmp_path / 'fresh'}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    install = next(i for i, line in enumerate(lines) if "pip install" in line and "-e" in line)
    said = "\n".join(lines[:install])
    assert "PyTorch" in said and "minutes" in said  # before the silent install, not after it
    assert f"{tmp_path / 'fresh'}/bin/toroid" in out.stdout
    # the CPU route: torch and torchvision from the given index, before the rest
    cpu = subprocess.run(["make", "-n", "install", f"VENV={tmp_path / 'fresh'}", "TORCH_INDEX=https://example.invalid/cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60).stdout.splitlines()
    first = next(i for i, line in enumerate(cpu) if "--index-url https://example.invalid/cpu" in line)
    assert "torch torchvision" in cpu[first] and "-c requirements/constraints.txt" in cpu[first]
    assert first < next(i for i, line in enumerate(cpu) if "-e '.[test]'" in line)


@pytest.fixture(scope="module")
def demo_server():
    url, home, log, proc, env = start_serve("--demo", prefix="toroid-readme-")
    from backend.client import Client

    try:
        Client(url).wait_ready(timeout=90, alive=lambda: proc.poll() is None)
        wait_for_log(home / "worker.log", "ready.", proc)
        yield url, env
    finally:
        stop(proc)
        shutil.rmtree(home, ignore_errors=True)


def test_the_readmes_first_session_runs_as_written(demo_server, tmp_path):
    url, env = demo_server
    env = {**env, "TOROID_URL": url}  # where `make run` would listen; the test's server has its own port
    synopsis, first_session = command_line_blocks()[:2]
    outputs = {}
    for line in first_session:
        argv = shlex.split(line, comments=True)
        assert argv[0] == ".venv/bin/toroid"
        out = subprocess.run([TOROID, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and "Traceback" not in out.stderr, f"{line}\n{out.stdout}\n{out.stderr}"
        outputs[line] = out.stdout
    by_start = lambda start: next(o for line, o in outputs.items() if line.startswith(f".venv/bin/toroid {start}"))
    assert "demo-rsgd-0" in by_start("networks") and "demo-adv-2" in by_start("networks")
    assert 0 <= json.loads(by_start("path 1 4"))["barrier"] <= 1
    assert json.loads(by_start("job distance"))["geodesic"] > 0
    assert "points: int" in by_start("job path --help")
    names = [n["name"] for n in json.loads(by_start("networks --json"))]
    assert "my-first" in names  # what the first session's train made
    # every client command of the synopsis answers --help (the server ones are what `make run` starts)
    commands = {shlex.split(line)[1] for line in synopsis if line.startswith("toroid ")}
    commands |= {part.split()[1] for line in synopsis for part in line.split(" / ")[1:] if part.startswith("toroid ")}
    assert {"networks", "train", "upload", "path", "job", "jobs", "cancel"} <= commands
    for command in sorted(commands - SERVER_COMMANDS):
        out = subprocess.run([TOROID, command, "--help"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "usage" in out.stdout.lower(), (command, out.stderr)
