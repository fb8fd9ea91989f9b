"""Benchmark suites of toy personalizations with known ground truth, and the scoring of explanations."""
