"""A seeded in-memory network between simulated voters.

Each message is lost with probability ``loss``, and otherwise arrives after a delay
drawn uniformly from ``delay_s``. With probability ``duplicate``, a second copy arrives
after a delay drawn independently. Independent delays reorder messages on the same
link. Links can be cut in one or both directions. A cut applies to messages sent while
it lasts: a message already in flight still arrives, as one in a router's queue would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkProfile:
    loss: float = 0.0
    duplicate: float = 0.0
    delay_s: tuple[float, float] = (0.001, 0.005)


RELIABLE = NetworkProfile()  # no loss, no duplicates, 1-5 ms of delay


class SimNetwork:
    def __init__(self, rng: random.Random, profile: NetworkProfile = RELIABLE) -> None:
        self._rng = rng
        self.profile = profile
        self._cut: set[tuple[str, str]] = set()  # (source, target) links that drop everything
        self.stats = {"sent": 0, "lost": 0, "duplicated": 0}

    def partition(self, *groups: tuple[str, ...] | list[str]) -> None:
        """Cut every link between voters of different groups, in both directions."""
        self._cut = set()
        for index, group in enumerate(groups):
            for other in groups[index + 1 :]:
                for source in group:
                    for target in other:
                        self._cut.add((source, target))
                        self._cut.add((target, source))

    def cut_one_way(self, source: str, target: str) -> None:
        """Drop messages from ``source`` to ``target`` while the reverse direction still works."""
        self._cut.add((source, target))

    def heal(self) -> None:
        self._cut = set()

    def connected(self, source: str, target: str) -> bool:
        return (source, target) not in self._cut

    def arrivals(self, source: str, target: str, now: float) -> list[float]:
        """Return when copies of a message sent now from ``source`` to ``target`` arrive (none if lost)."""
        self.stats["sent"] += 1
        profile = self.profile
        rng = self._rng
        if (source, target) in self._cut or (profile.loss and rng.random() < profile.loss):
            self.stats["lost"] += 1
            return []
        low, high = profile.delay_s
        times = [now + rng.uniform(low, high)]
        if profile.duplicate and rng.random() < profile.duplicate:
            self.stats["duplicated"] += 1
            times.append(now + rng.uniform(low, high))
        return times
