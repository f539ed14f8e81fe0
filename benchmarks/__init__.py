"""Benchmarks for linoverfit: ``python -m benchmarks.run W1|W2|all [--torch]`` (see README.md here)."""
