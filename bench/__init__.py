"""Benchmark of the pipeline against a plain-Python reference and the official Segment client.

    python -m bench.run [--events N] [--runs 3] [--scale-check] [--smoke]

See bench/RESULTS.md (rewritten by every full run) and `python -m bench.run --help`.
"""
