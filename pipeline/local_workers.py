"""Warm local worker processes: forked from the launcher instead of started cold.

Beam's `multi_processing` mode starts every SDK worker as a fresh
`python -m apache_beam.runners.worker.sdk_worker_main`, which spends ~1.8 CPU-seconds importing
Beam and this project before its first event: on a 2-core machine that is a fifth of a
300,000-event run (bench/). Here the launcher forks one *zygote* right after its own imports,
before any gRPC channel, thread or storage client exists. Beam still starts and waits for one
command per worker (its own SubprocessSdkWorker, with the usual environment: control address,
pipeline options, worker id); that command is a stdlib-only *attach* client which hands the
environment to the zygote over a Unix socket in a private (0700) folder, and the zygote forks a
worker that runs Beam's own `sdk_worker_main.main` with it, already warm. The client exits with
the worker's status; if Beam kills the client, the zygote kills the worker. A client that
cannot reach the zygote becomes the cold worker Beam would have started (exec), so a worker
is never missing.

The zygote forks only for a client of our own uid (SO_PEERCRED), and the socket folder goes
away on every exit: the launcher's close() (also on SIGTERM, turned into a normal exit), and
the zygote's own exit when the launcher is gone (even killed outright).

Linux only (fork); anything else, or `--fresh_worker_processes`, keeps Beam's cold start.
This file runs as a script for the attach client, so its top level imports the stdlib only.
"""
import json
import os
import select
import shlex
import signal
import socket
import struct
import sys
import tempfile

_SOCKET_NAME = 'zygote.sock'
_DEATHS_NAME = 'deaths'   # one line per worker killed by a signal: the signal number
COLD_WORKER_MODULE = 'apache_beam.runners.worker.sdk_worker_main'   # what Beam itself runs
POLL_SECONDS = 0.2   # the zygote's look at its workers where no pidfd tells it of an exit


class WarmWorkers:
    """The zygote, seen from the launcher: start it early, hand its command to Beam, close it."""

    def __init__(self, target=None):
        self.target = target or run_beam_worker   # what a forked worker runs (tests swap it)
        self.pid = None
        self._dir = None
        self._control = None   # write end of a pipe: closing it (or dying) stops the zygote
        self._old_sigterm = None

    @staticmethod
    def supported() -> bool:
        return sys.platform.startswith('linux') and hasattr(os, 'fork')

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> 'WarmWorkers':
        """Fork the zygote now; call before anything opens connections or starts threads."""
        self._dir = tempfile.mkdtemp(prefix='currents-workers-')   # 0700: only we can connect
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(os.path.join(self._dir, _SOCKET_NAME))   # fails if the path is too long
            listener.listen(64)
        except OSError:
            listener.close()
            self.close()
            raise
        read_end, write_end = os.pipe()
        for stream in (sys.stdout, sys.stderr):   # nothing buffered may be written twice
            stream.flush()
        # SIGTERM stays blocked across the fork until the zygote has its handler: a SIGTERM in
        # between would otherwise end it at once, leaving the socket folder behind.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        pid = os.fork()
        if pid == 0:
            os.close(write_end)
            code = 0
            try:
                _zygote(listener, read_end, self.target, self._dir, mask)
            except BaseException:   # noqa: B902 - a zygote must never return into the launcher
                code = 1
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        listener.close()
        os.close(read_end)
        self.pid, self._control = pid, write_end
        self._exit_on_sigterm()
        return self

    def _exit_on_sigterm(self) -> None:
        """SIGTERM would end the launcher without its finally blocks: make it a normal exit."""
        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                self._old_sigterm = signal.signal(signal.SIGTERM, _exit_143)
        except ValueError:   # not the main thread: the zygote still cleans up after itself
            self._old_sigterm = None

    def command(self) -> str:
        """The shell command Beam runs per worker (it adds the worker's environment)."""
        return 'exec ' + ' '.join(shlex.quote(part) for part in (   # exec: Beam's signals
            sys.executable, '-S', os.path.abspath(__file__), 'attach',  # reach the client
            os.path.join(self._dir, _SOCKET_NAME)))

    def deaths(self) -> list:
        """Signals that killed warm workers so far (the launcher names them in one line)."""
        try:
            with open(os.path.join(self._dir, _DEATHS_NAME)) as f:
                return [int(line) for line in f if line.strip().isdigit()]
        except (OSError, TypeError):
            return []

    def close(self) -> None:
        if self._old_sigterm is not None:
            try:
                signal.signal(signal.SIGTERM, self._old_sigterm)
            except ValueError:
                pass
            self._old_sigterm = None
        if self._control is not None:
            os.close(self._control)
            self._control = None
        if self.pid is not None:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = None
        if self._dir is not None:
            _remove_folder(self._dir)
            self._dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _exit_143(*_):
    raise SystemExit(143)


def _remove_folder(folder: str) -> None:
    for remove, path in ((os.unlink, os.path.join(folder, _SOCKET_NAME)),
                         (os.unlink, os.path.join(folder, _DEATHS_NAME)), (os.rmdir, folder)):
        try:
            remove(path)
        except OSError:
            pass


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (Linux SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
    return struct.unpack('3i', creds)[1]


def _zygote(listener: socket.socket, control_fd: int, target, folder: str = None,
            mask=None) -> None:
    """Fork one warm worker per attach request; report each worker's exit status to its client."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C: the launcher decides, then closes us
    signal.signal(signal.SIGTERM, _exit_143)       # ... and SIGTERM still cleans up below
    import gc
    gc.freeze()   # what the launcher built stays shared with the workers, outside the collector
    workers = {}   # pid -> the attach client's connection
    exits = {}     # pid -> a descriptor readable once it exits (Linux pidfd), so the status
    # reaches Beam at once rather than at the next poll (a run waits for every worker)
    try:
        if mask is not None:   # a SIGTERM held since the fork arrives now, inside the clean-up
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        while True:
            waiting = [listener, control_fd] + list(workers.values()) + \
                [fd for fd in exits.values() if fd is not None]
            ready = select.select(waiting, [], [], POLL_SECONDS)[0]
            if control_fd in ready:   # the launcher closed the pipe (finished or died)
                return
            for conn in [c for c in ready if c in workers.values()]:
                pid = next(p for p, c in workers.items() if c is conn)
                _kill(pid)            # the client went away: Beam gave up on this worker
            if listener in ready:
                conn, _ = listener.accept()
                try:
                    same_user = peer_uid(conn) == os.getuid()
                except OSError:
                    same_user = False
                if not same_user:   # the 0700 folder should stop them; refuse them anyway
                    conn.close()
                    continue
                env = _receive_env(conn)
                if env is None:
                    conn.close()
                else:
                    pid = os.fork()
                    if pid == 0:
                        listener.close()
                        for other in list(workers.values()) + [conn]:
                            other.close()
                        for fd in exits.values():
                            if fd is not None:
                                os.close(fd)
                        os.close(control_fd)
                        _run_worker(env, target)   # never returns
                    workers[pid] = conn
                    exits[pid] = _exit_descriptor(pid)
            for pid in list(workers):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    conn = workers.pop(pid)
                    fd = exits.pop(pid, None)
                    if fd is not None:
                        os.close(fd)
                    if os.WIFSIGNALED(status) and folder:
                        with open(os.path.join(folder, _DEATHS_NAME), 'a') as f:
                            f.write(f'{os.WTERMSIG(status)}\n')
                    try:
                        conn.sendall(b'%d\n' % os.waitstatus_to_exitcode(status))
                    except OSError:
                        pass
                    conn.close()
    finally:
        for pid in workers:
            _kill(pid)
        for pid in list(workers):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if folder:   # the launcher may be gone (killed): nothing else would remove it
            listener.close()
            _remove_folder(folder)


def _exit_descriptor(pid: int):
    """A pidfd for `pid` where the system has them (Linux 5.3+), else None (then polled)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _receive_env(conn: socket.socket):
    conn.settimeout(30)
    data = b''
    try:
        while not data.endswith(b'\n'):
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        env = json.loads(data)
    except (OSError, ValueError):
        return None
    finally:
        conn.settimeout(None)
    return env if isinstance(env, dict) else None


def _run_worker(env: dict, target) -> None:
    """In the forked worker: set the environment Beam chose, run, leave with the status."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C: the launcher stops the run
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the zygote's clean-up handler
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        code = target()
    except BaseException:   # noqa: B902 - report, then leave without running the launcher's code
        import traceback
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:   # noqa: BLE001
                pass
        os._exit(code if isinstance(code, int) else 1)


def run_beam_worker() -> int:
    """Beam's own SDK worker main, as `python -m ...sdk_worker_main` would run it."""
    import logging
    root = logging.getLogger()
    for handler in list(root.handlers):   # as in a fresh worker: its logs go to the runner
        root.removeHandler(handler)
    from apache_beam.runners.worker import sdk_worker_main
    sdk_worker_main.main([])
    return 0


def attach(socket_path: str) -> int:
    """The per-worker command: hand our environment to the zygote, exit with the worker's status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the whole process group:
    # the launcher decides (it stops the run cleanly); the worker must not die under it
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(socket_path)
    except OSError as exc:   # no zygote: be the cold worker Beam would have started
        print(f'warm worker: launcher unreachable ({exc}); starting a fresh worker',
              file=sys.stderr, flush=True)
        cold()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # closing conn kills the worker
    conn.sendall(json.dumps(dict(os.environ)).encode('utf-8') + b'\n')
    reply = conn.makefile('rb').readline().strip()
    try:
        return int(reply)
    except ValueError:
        print('warm worker: the launcher went away', file=sys.stderr)
        return 1


def cold() -> None:
    """Become the cold worker Beam would have started, deaf to Ctrl-C as a warm one is.

    A terminal's Ctrl-C reaches the whole process group; a worker it killed would leave the
    launcher waiting on Beam for a worker that never answers. Ignoring SIGINT survives exec.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.execv(sys.executable, [sys.executable, '-m', COLD_WORKER_MODULE])


def cold_command() -> str:
    """The shell command Beam runs per cold worker (`--fresh_worker_processes`, or no fork)."""
    return 'exec ' + ' '.join(shlex.quote(part) for part in (
        sys.executable, '-S', os.path.abspath(__file__), 'cold'))


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == 'attach':
        sys.exit(attach(sys.argv[2]))
    if sys.argv[1:] == ['cold']:
        cold()
    print(f'usage: {os.path.basename(sys.argv[0])} attach SOCKET | cold', file=sys.stderr)
    sys.exit(2)
