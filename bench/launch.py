"""Tiny launcher: spawn a command, reap it with os.wait4, write its wall time and rusage as JSON.

    python -S bench/launch.py OUT.json CMD [ARGS...]

Why not measure from the benchmark process directly: on Linux a child's ru_maxrss starts at the
peak RSS of the process that spawned it (exec records the old address space's high-water mark),
so children of a big parent (the benchmark holds the corpus report) would all report at least the
parent's size. This launcher is a bare interpreter (~10 MB), far below any measured command.

Stdlib only, no imports from the project, so it runs with `python -S`. Exits with the command's
exit status; SIGTERM/SIGINT are forwarded to the command.
"""
import json
import os
import signal
import sys
import time


def main() -> int:
    out, cmd = sys.argv[1], sys.argv[2:]
    start = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    with open(out, 'w') as fh:
        json.dump({'returncode': code, 'wall_s': wall, 'user_s': usage.ru_utime,
                   'sys_s': usage.ru_stime, 'maxrss_kb': usage.ru_maxrss}, fh)
    return code if code >= 0 else 128 - code


if __name__ == '__main__':
    sys.exit(main())
