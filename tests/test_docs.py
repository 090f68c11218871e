"""The README is the front door: every command and option is in it, and its examples work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from convvol.cli import cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL)


def convvol_examples() -> list[str]:
    """Every example line that runs convvol (not the install lines, not a user's own paths)."""
    examples = []
    for block in shell_blocks():
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith("pip install ") and "&&" in command:
                command = command.split("&&", 1)[1].strip()  # the job, not the install
            if command.startswith("convvol ") and "~" not in command:
                examples.append(command)
    return examples


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_is_documented(command: str) -> None:
    assert f"convvol {command}" in README


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (name, opt)
        for name, command in sorted(cli.commands.items())
        for param in command.params
        if isinstance(param, click.Option)
        for opt in [*param.opts, *param.secondary_opts]
        if opt not in ("-h", "--help")
    ],
)
def test_every_option_is_documented(command: str, option: str) -> None:
    assert f"`{option}" in README or f" {option}" in README, f"{command} {option}"


def test_the_two_quick_start_commands() -> None:
    blocks = shell_blocks()
    assert blocks[0].strip().startswith("pip install . && convvol apply sample_images/")
    assert blocks[1].strip() == "pip install '.[test]' && pytest"


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    shutil.copytree(REPO / "sample_images", tmp_path / "sample_images")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "edges.png").is_file()
    assert namespace["out"].shape == (512, 512, 2)  # type: ignore[attr-defined]


@pytest.mark.parametrize("example", convvol_examples())
def test_readme_example_runs(example: str, tmp_path: Path) -> None:
    """Run the example in a scratch directory holding the samples and the banks."""
    shutil.copytree(REPO / "sample_images", tmp_path / "sample_images")
    shutil.copytree(REPO / "filters", tmp_path / "filters")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "convvol"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m convvol "$@"\n')
    launcher.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("CONVVOL_FILTERS", None)
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", example],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{example}\n{done.stderr}"
    assert "Traceback" not in done.stderr
