"""A local Azure Blob Storage for tests: Azurite (npm `azurite`, Node.js) on 127.0.0.1.

pytest-independent. Azurite is installed under <repo>/.cache/azurite on first use
(`npm install --prefix .cache/azurite azurite`, as run_tests.sh does) and started per test
session in memory. It checks Shared Key signatures, so a wrong account key is refused as Azure
refuses it. Its access log (one line per request) is kept, so tests can tell which blobs a run
opened.
"""
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

ROOT = Path(__file__).resolve().parent.parent
PREFIX = ROOT / '.cache' / 'azurite'
BIN = PREFIX / 'node_modules' / '.bin' / 'azurite-blob'
HOST = '127.0.0.1'
ACCOUNT = 'devstoreaccount1'
# Azurite's documented development account key: public, the same in every Azurite install.
DEV_KEY = ('Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/'
           'K1SZFPTOtr/KBHBeksoGMGw==')
_ACCESS_LINE = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')


def install(timeout: float = 600) -> Path:
    """Azurite's blob server binary, installed with npm if absent."""
    if BIN.exists():
        return BIN
    npm = shutil.which('npm')
    if npm is None:
        raise RuntimeError('Azurite is not installed and npm is not on PATH (install Node.js)')
    PREFIX.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, 'install', '--prefix', str(PREFIX), '--no-audit', '--no-fund',
                    'azurite'], check=True, timeout=timeout, capture_output=True)
    return BIN


def free_port(host: str = HOST) -> int:
    import socket
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Azurite:
    """Starts/stops azurite-blob in memory and talks to it with azure-storage-blob."""

    def __init__(self, host: str = HOST, port: Optional[int] = None):
        self.host = host
        self.port = port or free_port(host)
        self.endpoint = f'http://{host}:{self.port}/{ACCOUNT}'
        self._proc: Optional[subprocess.Popen] = None
        self._log = None
        self._workspace: Optional[str] = None

    def connection_string(self, key: str = DEV_KEY) -> str:
        return (f'DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};'
                f'BlobEndpoint={self.endpoint};')

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> 'Azurite':
        binary = install()
        self._log = tempfile.NamedTemporaryFile(prefix='azurite-', suffix='.log', delete=False)
        self._workspace = tempfile.mkdtemp(prefix='azurite-')
        self._proc = subprocess.Popen(
            [str(binary), '--blobHost', self.host, '--blobPort', str(self.port),
             '--inMemoryPersistence', '--skipApiVersionCheck', '--disableTelemetry'],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self._workspace)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f'Azurite exited: {Path(self._log.name).read_text()}')
            try:
                with urllib.request.urlopen(f'{self.endpoint}?comp=list', timeout=1):
                    pass
            except urllib.error.HTTPError:
                return self  # it answers (403 without a signature): up
            except OSError:
                time.sleep(0.1)
                continue
            return self
        raise RuntimeError(f'Azurite did not answer at {self.endpoint}')

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            os.unlink(self._log.name)
            self._log = None
        if self._workspace:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None

    def __enter__(self) -> 'Azurite':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- blobs -------------------------------------------------------------------------------
    @property
    def client(self):
        from azure.storage.blob import BlobServiceClient
        return BlobServiceClient.from_connection_string(self.connection_string())

    def create_container(self, name: str) -> None:
        self.client.create_container(name)

    def upload_bytes(self, container: str, name: str, data: bytes) -> str:
        self.client.get_blob_client(container, name).upload_blob(data, overwrite=True)
        return f'azfs://{ACCOUNT}/{container}/{name}'

    def upload_tree(self, local_dir: Union[str, Path], container: str,
                    prefix: str = '') -> List[str]:
        root = Path(local_dir)
        urls = []
        with self.client as client:
            for path in sorted(p for p in root.rglob('*') if p.is_file()):
                rel = path.relative_to(root).as_posix()
                name = f'{prefix.strip("/")}/{rel}' if prefix.strip('/') else rel
                client.get_blob_client(container, name).upload_blob(path.read_bytes(),
                                                                    overwrite=True)
                urls.append(f'azfs://{ACCOUNT}/{container}/{name}')
        return urls

    def list(self, container: str, prefix: str = '') -> List[str]:
        with self.client as client:
            return sorted(b.name for b in client.get_container_client(container).list_blobs(
                name_starts_with=prefix or None))

    def read(self, container: str, name: str) -> bytes:
        with self.client as client:
            return client.get_blob_client(container, name).download_blob().readall()

    # -- request log -------------------------------------------------------------------------
    def log_position(self) -> int:
        return Path(self._log.name).stat().st_size

    def requests(self, since: int = 0) -> List[Tuple[str, str, int]]:
        """(method, decoded path, status) of every request since a log_position()."""
        time.sleep(0.2)  # Azurite writes its access line as it finishes the response
        with open(self._log.name, 'rb') as f:
            f.seek(since)
            text = f.read().decode('utf-8', 'replace')
        return [(m.group(1), urllib.parse.unquote(m.group(2).split('?', 1)[0]), int(m.group(3)))
                for m in _ACCESS_LINE.finditer(text)]

    def blobs_opened(self, container: str, since: int = 0) -> Dict[str, int]:
        """{blob name: GET/HEAD requests} for blob reads of one container (not listings,
        nor probes of names that do not exist)."""
        opened: Dict[str, int] = {}
        for method, path, status in self.requests(since):
            parts = path.lstrip('/').split('/', 2)
            if (method in ('GET', 'HEAD') and status != 404 and len(parts) == 3
                    and parts[1] == container and parts[2]):
                opened[parts[2]] = opened.get(parts[2], 0) + 1
        return opened
