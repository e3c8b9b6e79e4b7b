"""A local Azure Blob Storage for tests: Azurite (npm `azurite`, Node.js) on 127.0.0.1.

pytest-independent. Azurite is installed under <repo>/.cache/azurite on first use
(`npm install --prefix .cache/azurite azurite`, as run_tests.sh does) and started per test
session in memory. It checks Shared Key signatures, so a wrong account key is refused as Azure
refuses it. Its access log (one line per request) is kept, so tests can tell which blobs a run
opened.
"""
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from tests.servers import (HOST, access_log_requests, free_port, reads_by_name, stop_process,
                           wait_until_answering)

ROOT = Path(__file__).resolve().parent.parent
PREFIX = ROOT / '.cache' / 'azurite'
BIN = PREFIX / 'node_modules' / '.bin' / 'azurite-blob'
ACCOUNT = 'devstoreaccount1'
# Azurite's documented development account key: public, the same in every Azurite install.
DEV_KEY = ('Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/'
           'K1SZFPTOtr/KBHBeksoGMGw==')


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


class Azurite:
    """Starts/stops azurite-blob and talks to it with azure-storage-blob.

    In memory by default; `on_disk` keeps its metadata in its workspace instead, so that many
    blobs can be put straight into its store (`inject`)."""

    def __init__(self, host: str = HOST, port: Optional[int] = None, on_disk: bool = False):
        self.host = host
        self.port = port or free_port(host)
        self.endpoint = f'http://{host}:{self.port}/{ACCOUNT}'
        self.on_disk = on_disk
        self._proc: Optional[subprocess.Popen] = None
        self._log = None
        self._workspace: Optional[str] = None

    def connection_string(self, key: str = DEV_KEY) -> str:
        return (f'DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};'
                f'BlobEndpoint={self.endpoint};')

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> 'Azurite':
        self._log = tempfile.NamedTemporaryFile(prefix='azurite-', suffix='.log', delete=False)
        self._workspace = tempfile.mkdtemp(prefix='azurite-')
        self._run()
        return self

    def _run(self) -> None:
        store = (['--location', self._workspace] if self.on_disk
                 else ['--inMemoryPersistence'])
        self._proc = subprocess.Popen(
            [str(install()), '--blobHost', self.host, '--blobPort', str(self.port), *store,
             '--skipApiVersionCheck', '--disableTelemetry'],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self._workspace)
        wait_until_answering(self._answers, f'Azurite at {self.endpoint}', 60, self._proc,
                             self._log.name)

    def inject(self, container: str, names: Iterable[str]) -> None:
        """Empty blobs put straight into Azurite's metadata store (LokiJS, in its workspace),
        many at once: Azurite is stopped, each blob written as a copy of a template blob
        uploaded the usual way, renamed, and Azurite started again on the same port. Uploads
        slow down as a container fills (~50 a second past 30,000); this does not."""
        import copy
        import json
        if not self.on_disk:
            raise RuntimeError('inject needs Azurite(on_disk=True)')
        self.upload_bytes(container, '.c2s-template', b'')
        stop_process(self._proc)
        path = Path(self._workspace) / '__azurite_db_blob__.json'
        db = json.loads(path.read_text())
        blobs = next(c for c in db['collections'] if c['name'] == '$BLOBS_COLLECTION$')
        template = next(d for d in blobs['data'] if d['containerName'] == container
                        and d['name'] == '.c2s-template')
        next_id = blobs['maxId']
        for name in names:
            next_id += 1
            doc = copy.deepcopy(template)
            doc['name'], doc['$loki'] = name, next_id
            blobs['data'].append(doc)
        blobs['maxId'] = next_id
        data = blobs['data']
        blobs['idIndex'] = [d['$loki'] for d in data]
        for field, index in blobs['binaryIndices'].items():   # positions sorted by the field
            index['dirty'] = False
            index['values'] = sorted(range(len(data)), key=lambda i: (data[i][field], i))
        path.write_text(json.dumps(db))
        self._run()
        self.client.get_blob_client(container, '.c2s-template').delete_blob()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f'{self.endpoint}?comp=list', timeout=1):
                return True
        except urllib.error.HTTPError:
            return True   # it answers (403 without a signature): up
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self._proc)
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
            return access_log_requests(f.read().decode('utf-8', 'replace'))

    def blobs_opened(self, container: str, since: int = 0) -> Dict[str, int]:
        """{blob name: GET/HEAD requests} for blob reads of one container."""
        return reads_by_name(self.requests(since), ACCOUNT, container)
