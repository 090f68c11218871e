"""Regenerate the README's gallery, ``docs/gallery/``, with convvol's own commands.

Usage, from anywhere (it runs the convvol of this checkout, ``src/``)::

    python scripts/make_gallery.py              # rewrites docs/gallery/
    python scripts/make_gallery.py --out DIR    # writes the pictures to DIR instead

The commands below are the README's Gallery commands and the Recipes page's
(``docs/recipes.md``), word for word (a test checks), run from the repository's root; the outputs they write besides the pictures (``out/...``) go
to a temporary directory. Commit the pictures after a change that alters them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GALLERY = "docs/gallery/"
COMMANDS = [
    "convvol apply sample_images/pattern.png -f edges -o out/pattern_edges.png "
    "--montage docs/gallery/pattern_edges.png --compress-level 9",
    "convvol apply sample_images/astronaut.png -f edges -o out/astronaut_edges.png "
    "--montage docs/gallery/astronaut_edges.jpg",
    "convvol show-filter edges --image docs/gallery/edges_kernels.png",
    "convvol show-filter mtcnn_pnet --image docs/gallery/mtcnn_pnet_filters.png --rgb",
    "convvol apply sample_images/astronaut.png -f mtcnn_pnet --padding valid -o out/pnet.npy "
    "--montage docs/gallery/astronaut_mtcnn_pnet.jpg --scale signed",
]
# The Recipes page's commands (docs/recipes.md), word for word (a test checks).
RECIPES = [
    "convvol apply sample_images/astronaut.png -f unsharp -o docs/gallery/recipe_unsharp.jpg",
    "convvol apply sample_images/astronaut.png -f blur --expr "
    "'sharp = input + 2 * where(abs(input - blur) > 0.05, input - blur, 0)' "
    "-o docs/gallery/recipe_unsharp_threshold.jpg",
    "convvol apply sample_images/astronaut.png -f dog --scale signed "
    "-o docs/gallery/recipe_dog.jpg",
    "convvol apply sample_images/astronaut.png -f log --scale signed "
    "-o docs/gallery/recipe_log.jpg",
    "convvol apply sample_images/astronaut.png -f gradient_magnitude "
    "-o docs/gallery/recipe_gradient_magnitude.jpg",
    "convvol apply sample_images/astronaut.png -f compass_edges "
    "-o docs/gallery/recipe_compass_edges.jpg",
]


def arguments(command: str, gallery: Path, scratch: Path) -> list[str]:
    """The command's arguments after ``convvol``, with its pictures going to ``gallery``
    and its other outputs to ``scratch``."""
    words = shlex.split(command)
    assert words[0] == "convvol", command
    moved = []
    for word in words[1:]:
        if word.startswith(GALLERY):
            word = str(gallery / word.removeprefix(GALLERY))
        elif word.startswith("out/"):
            word = str(scratch / word.removeprefix("out/"))
        moved.append(word)
    return moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=REPO / GALLERY, help="where to write the pictures"
    )
    out = parser.parse_args().out.resolve()
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / "src"), environment.get("PYTHONPATH")])
    )
    environment.pop("CONVVOL_FILTERS", None)  # the bundled banks, whatever the user has
    with tempfile.TemporaryDirectory() as scratch:
        for command in COMMANDS + RECIPES:
            print(command)
            subprocess.run(
                [sys.executable, "-m", "convvol", *arguments(command, out, Path(scratch))],
                cwd=REPO,
                env=environment,
                stdout=subprocess.DEVNULL,
                check=True,
            )


if __name__ == "__main__":
    main()
