"""A clock for the sandboxes' rate windows, tokens and queues that moves only when a test
moves it (`now = ...` or `advance`), so time-outs and windows cost no waiting."""

from __future__ import annotations


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
