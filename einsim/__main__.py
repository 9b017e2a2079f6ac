"""`python -m einsim` runs the command-line interface."""

from einsim.cli import main

raise SystemExit(main())
