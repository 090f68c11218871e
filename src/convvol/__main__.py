"""``python -m convvol`` and the ``convvol`` command: the CLI, with Ctrl-C handled from the
first instant (``import convvol`` itself imports nothing heavy)."""

import sys


def main() -> None:
    """Console-script entry point."""
    try:
        from convvol.cli import main as cli_main
    except KeyboardInterrupt:  # Ctrl-C while Python is still importing: no traceback either
        sys.stderr.write("convvol: error: interrupted; no output was written\n")
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
