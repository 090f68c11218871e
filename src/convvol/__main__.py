"""``python -m convvol`` and the ``convvol`` command: the CLI, with Ctrl-C handled from the
first instant (``import convvol`` itself imports nothing heavy)."""

import os
import sys


def main() -> None:
    """Console-script entry point."""
    # The engine runs BLAS on one thread (its bands are its parallelism), so OpenBLAS's
    # own threads would only spin up at import and burn CPU the workers need. Set before
    # NumPy is imported; a user's own setting wins. The Python API leaves it alone.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from convvol.cli import main as cli_main
    except KeyboardInterrupt:  # Ctrl-C while Python is still importing: no traceback either
        sys.stderr.write("convvol: error: interrupted; no output was written\n")
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
