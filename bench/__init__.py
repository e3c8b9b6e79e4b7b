"""The benchmarks (docs/benchmark.md): throughput against a plain-Python reference and the
official Segment client, and a run's cost as the bucket's history grows.

    python -m bench.run [--events N] [--runs 3] [--scale-check] [--smoke]   # bench/RESULTS.md
    python -m bench.history [--local N,N] [--s3 N,N] [--rounds 3]           # bench/HISTORY.md

Each rewrites its Markdown table on every full run; `--help` gives the options.
"""
