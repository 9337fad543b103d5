"""The model of bench/callback.py: its input, at once."""

from __future__ import annotations

from typing import Any

import freight


class Noop(freight.Model):
    name = "noop"

    def predict(self, input: Any) -> Any:
        return input
