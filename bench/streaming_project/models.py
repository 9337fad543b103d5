"""The model of bench/streaming.py (B14): a generator that yields the words of a text it
computes, one chunk per word.

``{"n": N}``: the words are the first N Fibonacci numbers, each written out after a
little arithmetic (the text is computed, not stored), so the first chunk costs a few
microseconds of the model's own: what the bench measures is freight's part.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import freight


class Teller(freight.Model):
    name = "teller"
    replicas = freight.Replicas(min=1, max=1)

    def predict(self, input: dict[str, Any]) -> Iterator[str]:
        a, b = 0, 1
        for _ in range(int(input.get("n", 16))):
            yield f"{a} "
            a, b = b, a + b
