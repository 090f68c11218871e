"""``python -m convvol`` runs the command line."""

from convvol.cli import main

main()
