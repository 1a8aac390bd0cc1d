"""swarmctl: run a test suite across many executors and report it as one machine would."""

__version__ = "0.1.0"
