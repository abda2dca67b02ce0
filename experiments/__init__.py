"""Hydra entry points: `flchain run` and the benchmark suites. Each only composes a config
and hands it to the code that runs it."""
