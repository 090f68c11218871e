"""The manual in docs/ names every command, option, bank key, exit code and error class; its
examples and the README's work; the site builds strictly; the README stays a front door."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import unicodedata
from pathlib import Path

import click
import pytest

import convvol
from convvol.bank import BANK_KEYS, CHANNEL_KEYS, DEFAULT_KEYS, FILTER_KEYS
from convvol.cli import BROKEN_PIPE_EXIT, cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
PAGES = {path.name: path.read_text(encoding="utf-8") for path in sorted(REPO.glob("docs/*.md"))}
DOCS = "\n".join(PAGES.values())
# The part of docs/cli.md that scripts/make_cli_docs.py writes from the commands' --help.
GENERATED = re.compile(r"<!-- BEGIN GENERATED.*?<!-- END GENERATED[^>]*-->", flags=re.DOTALL)
# What people wrote: an option counts as documented only here, not in the generated --help.
PROSE = GENERATED.sub("", DOCS)
README_MAX_LINES = 250
# A checkout has them; the sdist (pyproject.toml's include list) does not.
IN_A_CHECKOUT = pytest.mark.skipif(
    not (REPO / "mkdocs.yml").is_file() or not (REPO / ".ci" / "run").is_file(),
    reason="mkdocs.yml and .ci/run are only in a checkout, not in the sdist",
)


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def convvol_examples(text: str) -> list[str]:
    """Every line of a ```sh block that runs convvol: a line whose program, after any
    VAR=value settings, is convvol, or a `cat FILE | convvol ...` pipeline; for an install
    line (`pip install ... && convvol ...`) the job after the install."""
    examples = []
    for block in shell_blocks(text):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith("pip install ") and "&&" in command:
                command = command.split("&&", 1)[1].strip()  # the job, not the install
            program = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*", "", command)
            if program.startswith("convvol ") or (
                program.startswith("cat ") and "| convvol " in program
            ):
                examples.append(command)
    return examples


def example_scripts() -> list[tuple[str, list[str]]]:
    """(where, commands) for each ```sh block of the README and of every page that runs
    convvol: the block's examples run in order, as a reader would, each block once."""
    scripts: dict[tuple[str, ...], str] = {}
    for where, text in [("README.md", README), *((f"docs/{n}", t) for n, t in PAGES.items())]:
        for number, block in enumerate(shell_blocks(text), 1):
            commands = tuple(convvol_examples(f"```sh\n{block}```"))
            if commands:
                scripts.setdefault(commands, f"{where}, sh block {number}")
    return [(where, list(commands)) for commands, where in scripts.items()]


def scratch_directory(tmp_path: Path) -> dict[str, str]:
    """A directory like the repository's root for the examples (the samples and the banks),
    and an environment whose `convvol` and `python` are this interpreter's."""
    shutil.copytree(REPO / "sample_images", tmp_path / "sample_images")
    shutil.copytree(REPO / "filters", tmp_path / "filters")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "convvol"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m convvol "$@"\n')
    launcher.chmod(0o755)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("CONVVOL_FILTERS", None)
    if env.get("PYTHONPATH"):  # PYTHONPATH=src runs: the examples run elsewhere
        paths = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(str(Path(path).resolve()) for path in paths if path)
    return env


# Every command, option, bank key, exit code and error class is in docs/.


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_is_documented(command: str) -> None:
    assert f"\n## convvol {command}\n" in PAGES["cli.md"], f"no section for {command} in cli.md"


def command_options() -> list[tuple[str, str]]:
    options = [
        (name, opt)
        for name, command in [("", cli), *sorted(cli.commands.items())]
        for param in command.params
        if isinstance(param, click.Option)
        for opt in [*param.opts, *param.secondary_opts]
        if opt not in ("-h", "--help")
    ]
    assert ("apply", "--filters") in options
    assert ("", "--version") in options
    return options


@pytest.mark.parametrize(("command", "option"), command_options())
def test_every_option_is_documented(command: str, option: str) -> None:
    """In the hand-written pages, not only in the generated --help."""
    assert f"`{option}" in PROSE or f" {option}" in PROSE, f"convvol {command} {option}"


@pytest.mark.parametrize("key", sorted({*BANK_KEYS, *FILTER_KEYS, *DEFAULT_KEYS, *CHANNEL_KEYS}))
def test_every_bank_key_is_documented(key: str) -> None:
    assert f"`{key}`" in PAGES["banks.md"] or f"`{key}:`" in PAGES["banks.md"], key


@pytest.mark.parametrize("bank", sorted(path.stem for path in (REPO / "filters").iterdir()))
def test_every_bundled_bank_is_documented(bank: str) -> None:
    assert f"| `{bank}` |" in PAGES["banks.md"], bank


ERROR_CLASSES = sorted(
    name
    for name in convvol.__all__
    if isinstance(getattr(convvol, name), type)
    and issubclass(getattr(convvol, name), convvol.ConvvolError)
)


def test_the_error_classes_are_all_exported() -> None:
    """Every ConvvolError subclass the library defines is public (so the test below sees it)."""

    def subclasses(cls: type) -> set[type]:
        return {cls}.union(*(subclasses(sub) for sub in cls.__subclasses__()))

    defined = {cls.__name__ for cls in subclasses(convvol.ConvvolError)}
    assert defined <= set(ERROR_CLASSES)
    assert {"ConvvolError", "BankError", "OutputError"} <= set(ERROR_CLASSES)


@pytest.mark.parametrize("name", ERROR_CLASSES)
def test_every_error_class_is_documented(name: str) -> None:
    """In the table of errors.md, with the exit code the command line gives it."""
    code = getattr(convvol, name).exit_code
    assert f"| `{name}` | {code} |" in PAGES["errors.md"], name
    assert f"`convvol.{name}`" in PAGES["python-api.md"], name


def documented_exit_codes() -> set[int]:
    """The codes in the first column of the table under errors.md's "## Exit codes"."""
    section = PAGES["errors.md"].split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d", line)]
    return {int(code) for row in rows for code in row.split("|")[1].split(",")}


def test_every_exit_code_is_documented() -> None:
    used = {
        0,  # success
        2,  # Click's usage errors
        *(getattr(convvol, name).exit_code for name in ERROR_CLASSES),
        128 + signal.SIGINT,  # Ctrl-C
        128 + signal.SIGTERM,  # and the signals handled as it is
        128 + signal.SIGHUP,
        BROKEN_PIPE_EXIT,  # the reader went away
    }
    assert used == {0, 1, 2, 129, 130, 141, 143}
    assert documented_exit_codes() == used


# The examples work.


def test_the_two_quick_start_commands() -> None:
    blocks = shell_blocks(README)
    assert blocks[0].strip().startswith("pip install . && convvol apply sample_images/")
    assert blocks[1].strip() == "pip install '.[test]' && pytest"


def test_there_are_examples_to_run() -> None:
    assert len(convvol_examples(README)) >= 10
    for page in ("cli.md", "banks.md", "formats.md", "scaling.md", "errors.md"):
        assert convvol_examples(PAGES[page]), page


@pytest.mark.parametrize(
    ("where", "block"),
    [
        (where, block)
        for where, text in [("README.md", README), *((f"docs/{n}", t) for n, t in PAGES.items())]
        for block in python_blocks(text)
    ],
)
def test_python_example_runs(
    where: str, block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(REPO / "sample_images", tmp_path / "sample_images")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block, where, "exec"), namespace)
    if "out" in namespace:  # the engine example: two filters over the 512×512 astronaut
        assert namespace["out"].shape == (512, 512, 2)  # type: ignore[attr-defined]
        assert (tmp_path / "edges.png").is_file()


def test_the_readme_has_a_python_example() -> None:
    assert any("convvol.convolve(" in block for block in python_blocks(README))


@pytest.mark.parametrize(
    ("where", "commands"), example_scripts(), ids=[where for where, _ in example_scripts()]
)
def test_examples_run(where: str, commands: list[str], tmp_path: Path) -> None:
    """Run a block's examples in order in a scratch directory holding the samples and the
    banks; each must exit 0 without a traceback."""
    env = scratch_directory(tmp_path)
    for command in commands:
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{where}: {command}\n{done.stderr}"
        assert "Traceback" not in done.stderr, f"{where}: {command}\n{done.stderr}"


# The site and the README.


def test_the_cli_reference_is_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_cli_docs.py"), "--check"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # says: run python scripts/make_cli_docs.py


@IN_A_CHECKOUT
def test_mkdocs_builds_the_site_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "cli" / "index.html").is_file()


@IN_A_CHECKOUT
def test_every_page_is_in_the_nav() -> None:
    """Also checked by the strict build; this holds where mkdocs is not installed."""
    config = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    assert set(re.findall(r"^  - [^:]+: (\S+\.md)$", config, flags=re.MULTILINE)) == set(PAGES)


def test_linked_headings_have_the_same_anchor_on_github() -> None:
    """A link to `page.md#anchor` works on the site and when GitHub shows the page: the
    headings linked to slugify alike under Python-Markdown's rule and GitHub's."""

    def python_markdown(heading: str) -> str:  # markdown.extensions.toc.slugify
        ascii_text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
        return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_text).strip().lower())

    def github(heading: str) -> str:
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    sources = [("README.md", README), *((name, GENERATED.sub("", t)) for name, t in PAGES.items())]
    links = [
        (page.removeprefix("docs/") or where, anchor)
        for where, text in sources
        for page, anchor in re.findall(r"\]\(([\w./-]*)#([\w-]+)\)", text)
    ]
    assert len(links) > 20
    for page, anchor in links:
        headings = re.findall(r"^#{2,3} (.+)$", PAGES[page], flags=re.MULTILINE)
        (heading,) = [heading for heading in headings if python_markdown(heading) == anchor]
        assert github(heading) == anchor, f"{page}#{anchor}: {heading!r}"


def test_the_readme_is_a_front_door() -> None:
    assert len(README.splitlines()) <= README_MAX_LINES
    for page in ("cli.md", "banks.md", "python-api.md", "errors.md", "scaling.md"):
        assert f"](docs/{page})" in README, page


def test_the_readme_links_lead_somewhere() -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        if re.match(r"[a-z]+://", target):
            continue
        path = target.split("#", 1)[0]
        assert (REPO / path).exists(), target


@IN_A_CHECKOUT
def test_ci_runs_the_readme_commands() -> None:
    """.ci/run runs the commands the README's Development section gives, word for word."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    (block,) = [block for block in shell_blocks(README) if "mkdocs build --strict" in block]
    commands = [line.strip() for line in block.splitlines() if line.strip()]
    assert commands[0] == "pip install '.[test]' && pytest"
    for command in commands:
        assert command in ci, command
    assert "set -euo pipefail" in ci
    blocks = shell_blocks(PAGES["development.md"])
    development = {line.strip() for block in blocks for line in block.splitlines()}
    for command in commands:
        assert command in development, f"docs/development.md: {command}"


def test_no_table_puts_a_pipe_in_a_code_span() -> None:
    """GitHub splits a table's cells at every pipe, Python-Markdown not inside code: keep
    both readings the same by never writing one there."""
    for where, text in [("README.md", README), *((f"docs/{n}", t) for n, t in PAGES.items())]:
        for number, line in enumerate(text.splitlines(), 1):
            if line.startswith("|"):
                spans = line.split("`")[1::2]
                assert not any("|" in span for span in spans), f"{where}:{number}: {line}"


def test_the_docs_name_only_the_public_api() -> None:
    """Modules behind convvol's names are internal (and being renamed): the manual uses
    `convvol.NAME` for names in convvol.__all__ only."""
    public = {*convvol.__all__, "__all__"}
    for where, text in PAGES.items():
        for name in re.findall(r"\bconvvol\.([A-Za-z_]\w*)", GENERATED.sub("", text)):
            assert name in public, f"docs/{where}: convvol.{name}"


def test_every_public_name_is_in_the_python_api_page() -> None:
    page = (REPO / "docs" / "python-api.md").read_text(encoding="utf-8")
    for name in convvol.__all__:
        assert f"convvol.{name}" in page, name
