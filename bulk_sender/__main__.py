"""``python -m bulk_sender``: the same entry point as the ``bulk-sender`` script."""

from bulk_sender.cli import main

raise SystemExit(main())
