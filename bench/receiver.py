"""The project's local Segment-compatible receiver (devtools.receiver), one process per run.

Started through its CLI as a separate process (so its CPU is not the measured client's), fresh
for every run (its `accepted` counts unique messageIds since it started), stopped with SIGTERM
and reaped with os.wait4 so its own CPU time is known too.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Optional, Set

from devtools.receiver import control_headers


class Receiver:
    def __init__(self, workdir: str, write_key: str, cwd: str, python: str = sys.executable):
        self.workdir = workdir
        self.write_key = write_key
        self.cwd = cwd
        self.python = python
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.cpu_s = 0.0

    def start(self, timeout: float = 30.0) -> 'Receiver':
        os.makedirs(self.workdir, exist_ok=True)
        port_file = os.path.join(self.workdir, 'receiver.port')
        if os.path.exists(port_file):
            os.remove(port_file)
        self._log = open(os.path.join(self.workdir, 'receiver.log'), 'wb')
        self.proc = subprocess.Popen(
            [self.python, '-m', 'devtools.receiver', '--host', '127.0.0.1', '--port', '0',
             '--port-file', port_file, '--write-key', self.write_key],
            cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f'receiver exited with {self.proc.returncode}; see {self._log.name}')
            try:
                with open(port_file) as fh:
                    text = fh.read().strip()
                if text:
                    self.port = int(text)
                    return self
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError('receiver did not start in time')

    @property
    def base(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    @property
    def url(self) -> str:
        return f'{self.base}/v1/batch'

    def stats(self) -> dict:
        req = urllib.request.Request(f'{self.base}/_receiver/stats',
                                     headers=control_headers(self.write_key))
        with urllib.request.urlopen(req, timeout=60) as r:
            stats = json.load(r)
        stats.pop('arrivals', None)
        return stats

    def message_ids(self) -> Set[str]:
        """messageIds of every stored (accepted, de-duplicated) message, read line by line."""
        ids = set()
        loads = json.loads
        req = urllib.request.Request(f'{self.base}/_receiver/messages',
                                     headers=control_headers(self.write_key))
        with urllib.request.urlopen(req, timeout=600) as r:
            for line in r:
                if line.strip():
                    ids.add(loads(line)['messageId'])
        return ids

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            killer = threading.Timer(30.0, proc.kill)   # never hang the benchmark on it
            killer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_s = usage.ru_utime + usage.ru_stime
            except ChildProcessError:
                pass
            finally:
                killer.cancel()
        self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
