"""`python -m genofed` runs the command-line program."""

from genofed.cli.main import main

raise SystemExit(main())
