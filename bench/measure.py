"""Running one benchmark subprocess and measuring it: wall time, CPU, peak memory.

The command is started by a tiny launcher (bench/launch.py, see there why) that reaps it with
os.wait4 and reports:
- wall time from spawn to exit;
- CPU: user+sys. Linux reports the command's own usage plus that of every descendant it waited
  for (Beam waits for the SDK worker processes it starts in multi_processing mode), so this is
  the whole process tree's CPU;
- ru_maxrss: the largest peak RSS of any *single* process in that tree (Linux takes the max, not
  the sum). Exact, not sampled.
Tree RSS: the sum of VmRSS over the command and all its descendants, sampled every
  `interval` seconds from /proc; the peak of that sum is reported. Shared pages (e.g. libraries in
  forked workers) count once per process, so it is an upper bound; it can miss short spikes.
Tree PSS: the sum of each process's proportional set size (/proc/PID/smaps_rollup: a page shared
  by N processes counts 1/N in each), i.e. the memory the tree really holds. Workers forked from
  one warm process share most of its heap, which the RSS sum counts once per worker. Reading
  smaps_rollup costs ~5 ms per process, so it is read when the RSS sum nears its peak so far (at
  most every 0.5 s) and at least every 2 s.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

PAGE_KB = os.sysconf('SC_PAGE_SIZE') // 1024
LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'launch.py')


@dataclass
class Measured:
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kb: int               # ru_maxrss: max over single processes of the tree (exact)
    tree_rss_peak_kb: int        # sampled sum over the tree
    tree_procs_max: int          # most processes seen at once in the tree
    tree_pss_peak_kb: int = 0    # sampled sum of proportional set sizes over the tree
    stdout: str = ''
    stderr: str = ''

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def _proc_table() -> Dict[int, tuple]:
    """pid -> (ppid, rss_kb) for every process visible in /proc."""
    table = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open(f'/proc/{name}/stat', 'rb') as fh:
                data = fh.read()
        except OSError:
            continue
        rest = data[data.rfind(b')') + 2:].split()
        try:
            table[int(name)] = (int(rest[1]), int(rest[21]) * PAGE_KB)
        except (IndexError, ValueError):
            continue
    return table


def tree_pids(root: int, include_root: bool = True, table=None) -> List[int]:
    """`root` (optionally) and its descendants."""
    table = _proc_table() if table is None else table
    if root not in table:
        return []
    children: Dict[int, List[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid != root or include_root:
            found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def tree_rss_kb(root: int, include_root: bool = True):
    """(sum of RSS in kB, number of processes) for `root` (optionally) and its descendants."""
    table = _proc_table()
    pids = tree_pids(root, include_root, table)
    return sum(table[pid][1] for pid in pids), len(pids)


def pss_kb(pid: int) -> int:
    """The process's proportional set size in kB (0 if it is gone)."""
    try:
        with open(f'/proc/{pid}/smaps_rollup', 'rb') as fh:
            for line in fh:
                if line.startswith(b'Pss:'):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class _Sampler(threading.Thread):
    PSS_MIN_GAP, PSS_MAX_GAP = 0.5, 2.0

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = self.procs = self.pss_peak_kb = 0
        self.stop = threading.Event()

    def run(self):
        last_pss = 0.0
        while not self.stop.is_set():
            try:
                table = _proc_table()
                pids = tree_pids(self.pid, include_root=False, table=table)   # root = launcher
                kb, n = sum(table[pid][1] for pid in pids), len(pids)
            except OSError:
                pids, kb, n = [], 0, 0
            now = time.monotonic()
            near_peak = kb >= 0.95 * self.peak_kb and now - last_pss >= self.PSS_MIN_GAP
            if pids and (near_peak or now - last_pss >= self.PSS_MAX_GAP):
                self.pss_peak_kb = max(self.pss_peak_kb, sum(pss_kb(pid) for pid in pids))
                last_pss = now
            self.peak_kb = max(self.peak_kb, kb)
            self.procs = max(self.procs, n)
            self.stop.wait(self.interval)


def run_measured(cmd: List[str], env: Optional[dict] = None, cwd: Optional[str] = None,
                 stdout_path: Optional[str] = None, stderr_path: Optional[str] = None,
                 interval: float = 0.2, timeout: Optional[float] = None) -> Measured:
    """Runs `cmd` to completion through bench/launch.py and measures it (module docstring)."""
    fd, usage_path = tempfile.mkstemp(prefix='bench-usage-', suffix='.json')
    os.close(fd)
    out = open(stdout_path, 'wb') if stdout_path else subprocess.DEVNULL
    err = open(stderr_path, 'wb') if stderr_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen([sys.executable, '-S', LAUNCHER, usage_path] + list(cmd),
                                env=env, cwd=cwd, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        sampler = _Sampler(proc.pid, interval)
        sampler.start()
        timer = threading.Timer(timeout, _kill_group, (proc.pid,)) if timeout else None
        if timer:
            timer.start()
        try:
            proc.wait()
        except BaseException:          # e.g. Ctrl-C: the command runs in its own session
            _kill_group(proc.pid)
            proc.wait()
            raise
        finally:
            if timer:
                timer.cancel()
            sampler.stop.set()
            sampler.join()
        try:
            with open(usage_path) as fh:
                usage = json.load(fh)
        except (OSError, ValueError):   # the launcher itself was killed
            usage = {'returncode': proc.returncode, 'wall_s': 0.0, 'user_s': 0.0, 'sys_s': 0.0,
                     'maxrss_kb': 0}
    finally:
        for fh in (out, err):
            if fh is not subprocess.DEVNULL:
                fh.close()
        os.remove(usage_path)
    return Measured(usage['returncode'], usage['wall_s'], usage['user_s'], usage['sys_s'],
                    usage['maxrss_kb'], sampler.peak_kb, sampler.procs, sampler.pss_peak_kb,
                    stdout_path or '', stderr_path or '')


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------
# Machine-wide CPU, to see how much CPU *other* processes used during a run (a shared machine).

CLK_TCK = os.sysconf('SC_CLK_TCK')


def machine_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open('/proc/stat') as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def process_cpu_s(pid: int) -> float:
    """user+sys CPU seconds of one live process (all its threads), 0.0 if it is gone."""
    try:
        with open(f'/proc/{pid}/stat', 'rb') as fh:
            rest = fh.read().rsplit(b')', 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def self_cpu_s() -> float:
    import resource
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def wait_for_quiet(max_cores: float = 0.3, window: float = 1.0, max_wait: float = 90.0) -> tuple:
    """Waits until other processes use less than `max_cores` CPUs over `window` seconds.

    Returns (seconds waited, the last window's foreign load in CPUs). Gives up after max_wait.
    """
    started = time.monotonic()
    while True:
        b0, s0 = machine_busy_s(), self_cpu_s()
        time.sleep(window)
        load = max(0.0, (machine_busy_s() - b0) - (self_cpu_s() - s0)) / window
        waited = time.monotonic() - started
        if load < max_cores or waited >= max_wait:
            return waited, load


def calibrate(repeat: int = 3) -> float:
    """Milliseconds for a fixed pure-Python workload (best of `repeat`): how fast this CPU is
    right now. On a shared or virtualised machine it drifts; compare runs with similar values."""
    best = float('inf')
    for _ in range(repeat):
        start = time.perf_counter()
        d = {}
        for i in range(200_000):
            d[i & 1023] = f'{i}:{i * 7}'
        best = min(best, time.perf_counter() - start)
    return best * 1000


def warm_page_cache(folder: str, chunk: int = 1 << 20) -> tuple:
    """Reads every file under `folder` once, so that the run after it reads from memory.

    This VM's kernel reclaims pages left unused for a while (it runs DAMON, `kdamond`): a corpus
    untouched since the previous round was partly read from disk again, and the variant that
    came first waited tens of seconds for I/O (vmstat `bi`, /proc/pressure/io). Every variant
    gets the same warm cache. Returns (files, bytes, seconds).
    """
    started = time.monotonic()
    files = size = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                with open(os.path.join(dirpath, name), 'rb', buffering=0) as fh:
                    while True:
                        block = fh.read(chunk)
                        if not block:
                            break
                        size += len(block)
            except OSError:
                continue
            files += 1
    return files, size, time.monotonic() - started


def io_full_stall_s(text: str) -> Optional[float]:
    """Seconds, since boot, in which every non-idle task waited for I/O: the `full` line's
    total (microseconds) of /proc/pressure/io. None if the text has no such line."""
    for line in text.splitlines():
        if line.startswith('full '):
            for field in line.split()[1:]:
                key, _, value = field.partition('=')
                if key == 'total' and value.isdigit():
                    return int(value) / 1e6
    return None


def io_stall_s() -> Optional[float]:
    """io_full_stall_s of this machine now; None where the kernel has no pressure accounting."""
    try:
        with open('/proc/pressure/io') as fh:
            return io_full_stall_s(fh.read())
    except OSError:
        return None
