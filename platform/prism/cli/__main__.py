"""``python -m prism.cli``."""

from prism.cli import main

raise SystemExit(main())
