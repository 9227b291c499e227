"""``python -m contactcentre.cli``: the same as the ``contactcentre`` command."""

from contactcentre.cli import main

raise SystemExit(main())
