"""A local GCS for tests: gcp-storage-emulator on 127.0.0.1, plus upload/list/read helpers.

pytest-independent. Typical use::

    with GcsEmulator(bucket='test-bucket') as gcs:
        os.environ['STORAGE_EMULATOR_HOST'] = gcs.url   # Beam's GCS IO then talks to it
        gcs.upload_tree('/some/dir', 'currents/...')
        names = gcs.list('rejects/')

The server runs in a thread of this process (gcp_storage_emulator.server.create_server, in memory),
so nothing is left behind and no network beyond loopback is used. If that API is unavailable the
`gcp-storage-emulator start` CLI is started as a subprocess instead.
"""
import http.server
import os
import shutil
import subprocess
import sys
import threading
import types
import urllib.parse
import urllib.request
from http import HTTPStatus
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

from tests.servers import HOST, free_port, stop_process, wait_until_answering


def _healthy(url: str) -> bool:
    """The emulator's health endpoint (`GET /` answers `OK`)."""
    try:
        with urllib.request.urlopen(url + '/', timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


class _QuietServer(http.server.HTTPServer):
    """A client that hung up (a test's client done or timed out) is not an error. The emulator's
    own server prints a traceback for it from its thread, and Python 3.11 formatting two
    tracebacks at once in two threads can fail with `SystemError: AST constructor recursion
    depth mismatch` (CPython gh-106905), which hides the failure pytest was reporting."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def quiet_hung_up_clients() -> None:
    """The in-process emulator's server made a `_QuietServer`. Idempotent."""
    from gcp_storage_emulator import server
    server.server = types.SimpleNamespace(HTTPServer=_QuietServer,
                                          BaseHTTPRequestHandler=http.server.BaseHTTPRequestHandler)


_PRECONDITION_LOCK = threading.Lock()


def honour_generation_preconditions() -> None:
    """Makes the in-process emulator answer `ifGenerationMatch` as GCS does (412 on mismatch).

    gcp-storage-emulator ignores preconditions, which conditional creates (generation 0 = only
    if absent) and compare-and-swap writes rely on. Object inserts and deletes get the check,
    made atomic with the write under one lock; requests without the parameter are unchanged.
    Idempotent.
    """
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    def current_generation(storage, bucket, name):
        try:
            return int(storage.get_file_obj(bucket, name)['generation'])
        except NotFound:
            return 0

    def object_name(request):
        if 'name' in request.query:
            return request.query['name'][0]
        if request.params.get('object_id'):
            return request.params['object_id']
        data = request.data or {}
        meta = data.get('meta') if isinstance(data, dict) else None
        return (meta or data).get('name') if isinstance(meta or data, dict) else None

    def conditional(handler):
        if getattr(handler, 'honours_preconditions', False):
            return handler

        def wrapped(request, response, storage, *args, **kwargs):
            wanted = request.query.get('ifGenerationMatch')
            if not wanted:
                return handler(request, response, storage, *args, **kwargs)
            with _PRECONDITION_LOCK:
                name = object_name(request)
                if name is not None and current_generation(
                        storage, request.params['bucket_name'], name) != int(wanted[0]):
                    response.status = HTTPStatus.PRECONDITION_FAILED
                    response.json({'error': {'code': 412, 'message': 'conditionNotMet',
                                             'errors': [{'reason': 'conditionNotMet',
                                                         'message': 'conditionNotMet'}]}})
                    return None
                return handler(request, response, storage, *args, **kwargs)
        wrapped.honours_preconditions = True
        return wrapped

    _wrap_handlers((objects.insert, objects.delete), conditional)


def _wrap_handlers(targets, wrap) -> None:
    """Every route of the in-process emulator served by one of `targets`, served through
    `wrap(handler)` instead."""
    from gcp_storage_emulator import server
    for _regex, methods in server.HANDLERS:
        for method, handler in list(methods.items()):
            if handler in targets:
                methods[method] = wrap(handler)


LIST_PAGE = 1000   # GCS returns at most 1,000 objects per list request
_LIST_COUNTS = {'lists': 0}


def honour_list_bounds() -> None:
    """Makes the in-process emulator's object listing answer as GCS documents it: `startOffset`
    and `endOffset` bound the names, and `maxResults` (1,000 at most) / `pageToken` page them.

    gcp-storage-emulator returns every object under the prefix in one answer, whatever the
    request asks: a listing bounded by offsets would then look bounded without being so. Every
    list request is counted (`list_requests`). Idempotent.
    """
    import base64
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    def bounded(handler):
        if getattr(handler, 'honours_list_bounds', False):
            return handler

        def wrapped(request, response, storage, *args, **kwargs):
            _LIST_COUNTS['lists'] += 1
            handler(request, response, storage, *args, **kwargs)
            body = getattr(response, '_c2s_json', None)
            if body is None:
                return None
            query = request.query
            first = query.get('startOffset', [''])[0]
            end = query.get('endOffset', [None])[0]
            limit = min(int(query.get('maxResults', [LIST_PAGE])[0]), LIST_PAGE)
            after = query.get('pageToken', [None])[0]
            after = base64.urlsafe_b64decode(after).decode() if after else None
            entries = ([(item['name'], 'item', item) for item in body.get('items', [])]
                       + [(p, 'prefix', p) for p in body.get('prefixes', [])])
            entries = sorted(e for e in entries if e[0] >= first and (end is None or e[0] < end)
                             and (after is None or e[0] > after))
            page, rest = entries[:limit], entries[limit:]
            out = {'kind': 'storage#objects',
                   'items': [v for _, kind, v in page if kind == 'item'],
                   'prefixes': [v for _, kind, v in page if kind == 'prefix']}
            if rest:
                out['nextPageToken'] = base64.urlsafe_b64encode(page[-1][0].encode()).decode()
            response.json(out)
            return None
        wrapped.honours_list_bounds = True
        return wrapped

    if not getattr(server.Response.json, 'keeps_body', False):
        original = server.Response.json

        def json_keeping_body(self, obj):
            self._c2s_json = obj
            return original(self, obj)
        json_keeping_body.keeps_body = True
        server.Response.json = json_keeping_body
    _wrap_handlers((objects.ls,), bounded)


class GcsEmulator:
    """Starts/stops gcp-storage-emulator with one bucket, and talks to it as a GCS client."""

    def __init__(self, bucket: str = 'test-bucket', host: str = HOST, port: Optional[int] = None):
        self.bucket_name = bucket
        self.host = host
        self.port = port or free_port(host)
        self.url = f'http://{self.host}:{self.port}'
        self._server = None
        self._proc: Optional[subprocess.Popen] = None
        self._client = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> 'GcsEmulator':
        try:
            from gcp_storage_emulator.server import create_server
        except ImportError:
            create_server = None
        if create_server is not None:
            honour_generation_preconditions()
            honour_list_bounds()
            quiet_hung_up_clients()
            self._server = create_server(self.host, self.port, in_memory=True,
                                         default_bucket=self.bucket_name)
            self._server.start()
        else:
            self._start_cli()
        wait_until_answering(lambda: _healthy(self.url), f'gcp-storage-emulator at {self.url}',
                             15.0, self._proc)
        return self

    def _start_cli(self) -> None:
        exe = shutil.which('gcp-storage-emulator') or str(
            Path(sys.executable).with_name('gcp-storage-emulator'))
        self._proc = subprocess.Popen(
            [exe, 'start', f'--host={self.host}', f'--port={self.port}', '--in-memory',
             f'--default-bucket={self.bucket_name}'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def count_reads(self) -> None:
        """From now on, (bucket, object) of every object read (metadata or media) is appended
        to `reads`."""
        from gcp_storage_emulator.handlers import objects
        self.reads = []
        reads = self

        def counted(handler):
            def wrapped(request, response, storage, *args, **kwargs):
                params = request.params or {}
                if params.get('bucket_name') and params.get('object_id'):
                    reads.reads.append((params['bucket_name'],
                                        urllib.parse.unquote(params['object_id'])))
                return handler(request, response, storage, *args, **kwargs)
            wrapped.counts_reads = True
            return wrapped
        _wrap_handlers((objects.get, objects.download), counted)

    @property
    def list_requests(self) -> int:
        """Object list requests the in-process emulator answered, all emulators together."""
        return _LIST_COUNTS['lists']

    def inject(self, names: Iterable[str], content: bytes = b'',
               bucket: Optional[str] = None) -> None:
        """Objects put straight into the emulator's storage (no HTTP): cheap in bulk. Each is a
        copy of a template object uploaded the usual way, renamed."""
        import copy
        storage = self._server._storage
        bucket = bucket or self.bucket_name
        self.upload_bytes('.c2s-template', content, bucket)
        template = storage.get_file_obj(bucket, '.c2s-template')
        objects = storage.objects.setdefault(bucket, {})
        for name in names:   # as Storage.create_file does, but its metadata file written once
            obj = copy.deepcopy(template)
            obj['name'] = name
            obj['id'] = f'{bucket}/{name}/{obj.get("generation", "1")}'
            obj['selfLink'] = obj.get('selfLink', '').replace('.c2s-template', name)
            storage._store.write_bytes(storage._object_path(bucket, name), content)
            objects[name] = obj
        storage._write_config_to_file()
        storage.delete_file(bucket, '.c2s-template')

    def stop(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        stop_process(self._proc)
        self._proc = None

    def __enter__(self) -> 'GcsEmulator':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wipe(self) -> None:
        """Deletes every object, keeps the buckets (emulator-only endpoint)."""
        with urllib.request.urlopen(self.url + '/wipe?keep-buckets=true', timeout=10) as r:
            r.read()

    # -- client ------------------------------------------------------------------------------
    @property
    def client(self):
        """A google-cloud-storage client bound to the emulator, anonymous credentials."""
        if self._client is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage
            self._client = storage.Client(project='test-project',
                                          credentials=AnonymousCredentials(),
                                          client_options={'api_endpoint': self.url})
        return self._client

    def bucket(self, name: Optional[str] = None):
        return self.client.bucket(name or self.bucket_name)

    def upload_bytes(self, name: str, data: bytes, bucket: Optional[str] = None) -> str:
        self.bucket(bucket).blob(name).upload_from_string(
            data, content_type='application/octet-stream')
        return f'gs://{bucket or self.bucket_name}/{name}'

    def upload_files(self, mapping: Dict[str, Union[str, Path]],
                     bucket: Optional[str] = None) -> List[str]:
        """{object name: local file} → uploaded gs:// URLs."""
        return [self.upload_bytes(name, Path(local).read_bytes(), bucket)
                for name, local in mapping.items()]

    def upload_tree(self, local_dir: Union[str, Path], prefix: str = '',
                    bucket: Optional[str] = None) -> List[str]:
        return upload_tree(local_dir, bucket or self.bucket_name, prefix, emulator=self)

    def list(self, prefix: str = '', bucket: Optional[str] = None) -> List[str]:
        return sorted(b.name for b in self.client.list_blobs(bucket or self.bucket_name,
                                                             prefix=prefix))

    def read(self, name: str, bucket: Optional[str] = None) -> bytes:
        return self.bucket(bucket).blob(name).download_as_bytes()

    def delete_prefix(self, prefix: str, bucket: Optional[str] = None) -> None:
        for blob in list(self.client.list_blobs(bucket or self.bucket_name, prefix=prefix)):
            blob.delete()


def upload_tree(local_dir: Union[str, Path], bucket: str, prefix: str = '', *,
                emulator: Optional[GcsEmulator] = None,
                endpoint: Optional[str] = None) -> List[str]:
    """Uploads every file under local_dir to gs://bucket/prefix/<relative path>.

    The emulator is given either as a running GcsEmulator or as its URL (default: the
    STORAGE_EMULATOR_HOST environment variable). Returns the gs:// URLs, sorted.
    """
    if emulator is None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        url = endpoint or os.environ['STORAGE_EMULATOR_HOST']
        client = storage.Client(project='test-project', credentials=AnonymousCredentials(),
                                client_options={'api_endpoint': url})
    else:
        client = emulator.client
    root = Path(local_dir)
    prefix = prefix.strip('/')
    urls = []
    for path in sorted(p for p in root.rglob('*') if p.is_file()):
        rel = path.relative_to(root).as_posix()
        name = f'{prefix}/{rel}' if prefix else rel
        client.bucket(bucket).blob(name).upload_from_filename(
            str(path), content_type='application/octet-stream')
        urls.append(f'gs://{bucket}/{name}')
    if emulator is None:
        client.close()
    return urls


def gs_urls(names: Iterable[str], bucket: str) -> List[str]:
    return [f'gs://{bucket}/{n}' for n in names]
