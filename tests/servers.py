"""What the local store servers of the tests share (GCS emulator, moto, Azurite): a free
loopback port, a server waited for until it answers and stopped for sure, and an access log
read as (method, path, status) per request."""
import re
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

HOST = '127.0.0.1'
_ACCESS_LINE = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until_answering(answers: Callable[[], bool], what: str, timeout: float,
                         proc: Optional[subprocess.Popen] = None,
                         log: Optional[str] = None) -> None:
    """Polls `answers()` until it is true; fails at once if `proc` exits (with its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = Path(log).read_text() if log else ''
            raise RuntimeError(f'{what} exited: {text}')
        if answers():
            return
        time.sleep(0.05)
    raise RuntimeError(f'{what} did not answer within {timeout}s')


def stop_process(proc: Optional[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def access_log_requests(text: str) -> List[Tuple[str, str, int]]:
    """(method, decoded path without query, status) of each access-log line."""
    return [(m.group(1), urllib.parse.unquote(m.group(2).split('?', 1)[0]), int(m.group(3)))
            for m in _ACCESS_LINE.finditer(text)]


def reads_by_name(requests: List[Tuple[str, str, int]], *folders: str) -> Dict[str, int]:
    """{name: GET/HEAD requests} of object reads under /<folders...>/<name> (not listings of
    the folder itself, nor probes of names that do not exist)."""
    depth = len(folders)
    opened: Dict[str, int] = {}
    for method, path, status in requests:
        parts = path.lstrip('/').split('/', depth)
        if (method in ('GET', 'HEAD') and status != 404 and len(parts) == depth + 1
                and tuple(parts[:depth]) == folders and parts[depth]):
            opened[parts[depth]] = opened.get(parts[depth], 0) + 1
    return opened
