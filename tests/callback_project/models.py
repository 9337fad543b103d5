"""The model of the callback tests: its input plus one."""

from __future__ import annotations

import freight


class Inc(freight.Model):
    name = "inc"

    def predict(self, input: int) -> int:
        return input + 1
