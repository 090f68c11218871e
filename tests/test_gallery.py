"""The README's gallery (and the manual's, docs/pictures.md): its pictures are committed,
shown, made by the script's commands (the README's, word for word), and still what the
script makes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
PICTURES_PAGE = (REPO / "docs" / "pictures.md").read_text(encoding="utf-8")
RECIPES_PAGE = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
SCRIPT = REPO / "scripts" / "make_gallery.py"
GALLERY = REPO / "docs" / "gallery"


def script_commands(variable: str = "COMMANDS") -> list[str]:
    """The COMMANDS (or RECIPES) list of the script, read as text (it is not a module)."""
    namespace: dict[str, object] = {}
    source = SCRIPT.read_text(encoding="utf-8")
    pattern = rf"^{variable} = \[.*?^\]"
    (listing,) = re.findall(pattern, source, flags=re.DOTALL | re.MULTILINE)
    exec(listing, namespace)
    commands = namespace[variable]
    assert isinstance(commands, list)
    return commands


def pictures_of(commands: list[str]) -> list[str]:
    """The gallery files the commands write (the arguments under docs/gallery/)."""
    return [
        word.removeprefix("docs/gallery/")
        for command in commands
        for word in shlex.split(command)
        if word.startswith("docs/gallery/")
    ]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_the_readme_runs_the_scripts_commands_and_shows_their_pictures() -> None:
    commands = script_commands()
    assert len(commands) == 5
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL)
    lines = {line.strip() for block in blocks for line in block.splitlines()}
    for command in commands:
        assert command in lines, command
    for name in pictures_of(commands):
        assert f"](docs/gallery/{name})" in README, name


def test_the_manual_shows_the_same_commands_and_pictures() -> None:
    """docs/pictures.md, inside docs/, links the pictures relative to itself."""
    blocks = re.findall(r"```sh\n(.*?)```", PICTURES_PAGE, flags=re.DOTALL)
    lines = {line.strip() for block in blocks for line in block.splitlines()}
    for command in script_commands():
        assert command in lines, command
    for name in pictures_of(script_commands()):
        assert f"](gallery/{name})" in PICTURES_PAGE, name


def test_the_recipes_page_runs_the_scripts_recipes_and_shows_their_pictures() -> None:
    recipes = script_commands("RECIPES")
    assert len(recipes) == 6
    blocks = re.findall(r"```sh\n(.*?)```", RECIPES_PAGE, flags=re.DOTALL)
    lines = {line.strip() for block in blocks for line in block.splitlines()}
    for command in recipes:
        assert command in lines, command
    for name in pictures_of(recipes):
        assert f"](gallery/{name})" in RECIPES_PAGE, name


def test_the_pictures_are_committed_and_small() -> None:
    names = pictures_of(script_commands())
    recipes = pictures_of(script_commands("RECIPES"))
    assert sorted(p.name for p in GALLERY.iterdir()) == sorted(names + recipes)
    # A trained layer's ten responses to a photo compress poorly: about 550 kB of it.
    assert sum((GALLERY / name).stat().st_size for name in names) < 1_000_000
    assert sum((GALLERY / name).stat().st_size for name in recipes) < 500_000


def test_the_script_makes_the_committed_pictures(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in pictures_of(script_commands() + script_commands("RECIPES")):
        made, committed = pixels(tmp_path / name), pixels(GALLERY / name)
        assert made.shape == committed.shape, f"{name}: rerun scripts/make_gallery.py"
        # Equal but for what another FreeType or JPEG library may render differently.
        assert np.abs(made - committed).mean() < 1.0, f"{name}: rerun scripts/make_gallery.py"
        if name.endswith(".png") and np.array_equal(made, committed):
            # Same pixels must mean the same file, or regenerating leaves git modified.
            same = (tmp_path / name).read_bytes() == (GALLERY / name).read_bytes()
            assert same, f"{name}: same pixels, other bytes: rerun scripts/make_gallery.py"
