"""``python -m freight.cli``: the same as the ``freight`` command."""

from freight.cli import main

main()
