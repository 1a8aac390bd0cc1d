"""The resource monitor: psutil readings and the load score sent with heartbeats."""

from __future__ import annotations

from swarmctl.executor.resource_monitor import ResourceMonitor, Resources


def test_monitor_sample_reads_machine(tmp_path):
    sample = ResourceMonitor(tmp_path).sample()

    assert sample.cpus >= 1
    assert 0.0 <= sample.cpu_percent <= 100.0
    assert 0.0 < sample.memory_percent < 100.0
    assert sample.memory_available_mb > 0
    assert sample.load_1m >= 0.0
    assert sample.disk_free_mb > 0
    assert set(sample.to_wire()) == {
        "cpus", "cpu_percent", "memory_percent", "memory_available_mb", "load_1m", "disk_free_mb", "load"
    }


def test_monitor_load_is_busiest_ratio():
    sample = Resources(cpus=4, cpu_percent=20.0, memory_percent=35.0, memory_available_mb=1000.0, load_1m=6.0, disk_free_mb=1.0)

    assert sample.load == 1.5
    assert Resources(4, 50.0, 10.0, 1.0, 1.0, 1.0).load == 0.5
