"""Benchmarks that print figures; targets are reported against, never asserted on time."""
