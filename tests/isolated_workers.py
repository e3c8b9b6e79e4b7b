"""SDK workers that share nothing with the launcher, as on a Flink or Spark cluster: the packaged
project installed into its own virtualenv, and Beam's worker pool started from it with its own
working directory, HOME and TMPDIR and an environment without the tests' variables.

The virtualenv is built from an sdist of the checkout (setup.py is the single source of
dependencies) and cached under .cache/isolated-workers/<hash of setup.py>/ (~0.9 GB, so only the
latest is kept); when the package sources change (their hash is its stamp) only the project is
installed again from a new sdist, without its dependencies (seconds). A first build takes a
minute or two with pip's cache.

pytest-independent. The pool listens on 127.0.0.1 only: it is Beam's worker pool servicer
(apache_beam.runners.worker.worker_pool_main, starting each SDK worker as a `python` process of
its virtualenv), served on loopback, because `worker_pool_main`'s own main binds every
interface.
"""
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

from tests.servers import HOST, free_port, wait_until_answering

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / '.cache' / 'isolated-workers'
PACKAGES = ('pipeline', 'transforms')

# Beam's worker pool servicer, as worker_pool_main runs it, on 127.0.0.1 only.
POOL = '''
import sys
import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
from apache_beam.utils import thread_pool_executor
server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                     options=[("grpc.http2.max_pings_without_data", 0),
                              ("grpc.http2.max_ping_strikes", 0)])
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
    BeamFnExternalWorkerPoolServicer(use_process=True, state_cache_size=0,
                                     data_buffer_time_limit_ms=-1), server)
server.start()
print("worker pool listening on 127.0.0.1:" + sys.argv[1], flush=True)
server.wait_for_termination()
'''


def sources_hash(root: Path = ROOT) -> str:
    """What the installed package is made of: every file of its packages."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob('*')):
            if path.is_file() and '__pycache__' not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b'\0' + path.read_bytes())
    return digest.hexdigest()[:16]


def worker_venv(root: Path = ROOT) -> Path:
    """The cached virtualenv holding only the packaged project (and its dependencies)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256((root / 'setup.py').read_bytes()).hexdigest()[:16]
    venv = CACHE / key / 'venv'
    python = str(venv / 'bin' / 'python')
    stamp = venv.parent / f'package-{sources_hash(root)}'
    with open(CACHE / '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # two test runs build it once
        if stamp.exists():
            return venv
        fresh = not (venv.parent / 'ready').exists()
        if fresh:
            for old in CACHE.iterdir():     # another setup.py's: no longer needed
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
            venv.parent.mkdir(parents=True)
            _run([sys.executable, '-m', 'venv', str(venv)])
        with tempfile.TemporaryDirectory(prefix='c2s-sdist-') as build:
            source = Path(build) / 'src'
            source.mkdir()
            shutil.copy2(root / 'setup.py', source)
            for package in PACKAGES:
                shutil.copytree(root / package, source / package,
                                ignore=shutil.ignore_patterns('__pycache__'))
            _run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(Path(build) / 'dist')],
                 cwd=source)
            sdist, = (Path(build) / 'dist').glob('*.tar.gz')
            if fresh:
                _run([python, '-m', 'pip', 'install', '-q', str(sdist)], cwd=build)
            else:   # the same dependencies: the project alone
                _run([python, '-m', 'pip', 'install', '-q', '--no-deps', '--force-reinstall',
                      str(sdist)], cwd=build)
        for old in venv.parent.glob('package-*'):
            old.unlink()
        (venv.parent / 'ready').touch()
        stamp.touch()
        return venv


def _run(argv, cwd=None) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    if done.returncode:
        raise RuntimeError(f'{" ".join(map(str, argv[:4]))} failed: {done.stderr[-2000:]}')


class WorkerPool:
    """Beam's worker pool from `venv`, in `folder`/{cwd,home,tmp}, with only `env` (plus PATH,
    HOME, TMPDIR) in its environment."""

    def __init__(self, venv: Path, folder: Path, env: Optional[Dict[str, str]] = None):
        self.venv = Path(venv)
        self.folder = Path(folder)
        self.cwd, self.home, self.tmp = (self.folder / n for n in ('cwd', 'home', 'tmp'))
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.address = f'{HOST}:{self.port}'
        self.log_path = self.folder / 'pool.log'
        self._proc: Optional[subprocess.Popen] = None

    def environment(self) -> Dict[str, str]:
        return {'PATH': f'{self.venv / "bin"}:/usr/bin:/bin', 'HOME': str(self.home),
                'TMPDIR': str(self.tmp), 'LANG': 'C.UTF-8', **self.extra_env}

    def start(self) -> 'WorkerPool':
        if self._proc is not None:   # `with pool.start():` enters a started pool
            return self
        for folder in (self.cwd, self.home, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, 'w')
        self._proc = subprocess.Popen(
            [str(self.venv / 'bin' / 'python'), '-c', POOL, str(self.port)], cwd=self.cwd,
            env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)   # its SDK workers too are stopped with it
        log.close()
        wait_until_answering(self._answers, f'worker pool at {self.address}', 60, self._proc,
                             str(self.log_path))
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors='replace')

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)   # the pool's own process group
            self._proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._proc.wait(10)
        self._proc = None

    def __enter__(self) -> 'WorkerPool':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def portable_options(pool: WorkerPool):
    """What the launcher passes to submit to the pool through Beam's embedded job server."""
    return ['--runner', 'PortableRunner', '--job_endpoint', 'embed',
            '--environment_type', 'EXTERNAL', '--environment_config', pool.address]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f'{what} did not happen within {timeout} s')
