"""``python -m freight.runner --ref module:Class --project DIR --storage URL``."""

from freight.runner.process import main

raise SystemExit(main())
