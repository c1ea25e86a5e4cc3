"""`python -m asyncflow ...` runs the `asyncflow` command."""

from .cli import main

raise SystemExit(main())
