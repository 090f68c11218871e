"""``python -m convvol`` runs the command line."""

import sys

try:
    from convvol.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python is still importing: no traceback either
    sys.exit(130)

main()
