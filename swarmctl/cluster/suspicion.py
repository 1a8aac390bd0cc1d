"""The Lifeguard suspicion timer of one suspected member.

A suspicion starts with the maximum timeout. Each member other than the first accuser
that independently suspects the same member, at the same incarnation, is a confirmation,
and confirmations shorten the timeout along a logarithmic curve:

    timeout(c) = max(min_s, max_s - (max_s - min_s) * log(c + 1) / log(needed + 1))

so the first confirmation removes the largest share, and ``needed`` confirmations bring
it down to ``min_s``. A member that is suspected only because one prober's packets were
lost keeps the long timeout, which gives it time to refute. A crashed member is soon
suspected by many probers and is declared dead after about ``min_s``. The deadline is
always measured from the start of the suspicion, not from the last confirmation.
"""

from __future__ import annotations

import math


class Suspicion:
    """The deadline at which a suspected member is declared dead, and who has confirmed it."""

    def __init__(self, accuser: str, started: float, min_s: float, max_s: float, needed: int) -> None:
        self.started = started
        self.min_s = min_s
        self.max_s = max_s
        self.needed = needed
        self._accusers = {accuser}
        self.deadline = started + (min_s if needed <= 0 else max_s)

    @property
    def confirmations(self) -> int:
        """Members that suspected independently after the first accuser."""
        return len(self._accusers) - 1

    def confirm(self, accuser: str) -> bool:
        """Count ``accuser`` as a confirmation; return whether it was new and still shortened the timeout.

        Once ``needed`` confirmations are counted, further accusers change nothing and return
        False, so the caller stops re-broadcasting them.
        """
        if accuser in self._accusers or self.confirmations >= self.needed:
            return False
        self._accusers.add(accuser)
        fraction = math.log(self.confirmations + 1) / math.log(self.needed + 1)
        timeout = max(self.min_s, self.max_s - (self.max_s - self.min_s) * fraction)
        self.deadline = self.started + timeout
        return True
