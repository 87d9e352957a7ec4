"""Benchmarks. Each ``bench/<topic>.py`` has ``main(argv) -> dict``, prints its table and writes
``bench/out/<topic>.json``. Speed is always a ratio against a baseline measured in the same run."""
