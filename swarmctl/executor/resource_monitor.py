"""Resource readings of the executor's machine: CPU, memory, load average and disk, from psutil.

Each heartbeat carries a sample and a load score. The score is the busiest of three ratios,
CPU use, memory use and the one-minute load average per CPU, so 1.0 means one of them is
saturated. The coordinator prefers executors with a lower score, which moves work away from
machines shared with other jobs.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Resources:
    cpus: int
    cpu_percent: float  # all CPUs, since the previous sample
    memory_percent: float
    memory_available_mb: float
    load_1m: float
    disk_free_mb: float  # on the filesystem of the executor's data folder

    @property
    def load(self) -> float:
        return max(self.cpu_percent / 100, self.memory_percent / 100, self.load_1m / max(1, self.cpus))

    def to_wire(self) -> dict[str, Any]:
        return {**asdict(self), "load": round(self.load, 3)}


class ResourceMonitor:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.cpus = psutil.cpu_count() or 1
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def sample(self) -> Resources:
        memory = psutil.virtual_memory()
        try:
            disk_free = psutil.disk_usage(str(self.data_dir)).free / MB
        except OSError:
            disk_free = 0.0  # the folder is not created yet, or was removed
        return Resources(
            cpus=self.cpus,
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_percent=memory.percent,
            memory_available_mb=round(memory.available / MB, 1),
            load_1m=os.getloadavg()[0],
            disk_free_mb=round(disk_free, 1),
        )
