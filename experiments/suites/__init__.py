"""Benchmark suites: each exposes `run(config, out_dir) -> figures` and writes its results
(Markdown table, JSON, plots, the environment) into `out_dir`."""
