"""A local S3 for tests: moto's server on 127.0.0.1 in a subprocess, plus IAM and upload helpers.

pytest-independent. The server's access log (werkzeug, one line per request) is kept in a file,
so tests can tell which objects a run opened. `enforce_auth()` switches on moto's IAM checks:
from then on only access keys of IAM users created here work, with their policies applied (an
explicit Deny on one object gives a real 403 AccessDenied), and unknown keys are refused
(InvalidAccessKeyId).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from tests.servers import (HOST, access_log_requests, free_port, reads_by_name, stop_process,
                           wait_until_answering)

REGION = 'us-east-1'
ADMIN_POLICY = {'Version': '2012-10-17',
                'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}


class MotoServer:
    """Starts/stops `python -m moto.server` and talks to it with boto3."""

    def __init__(self, host: str = HOST, port: Optional[int] = None):
        self.host = host
        self.port = port or free_port(host)
        self.url = f'http://{host}:{self.port}'
        self._proc: Optional[subprocess.Popen] = None
        self._log = None
        self.keys: Tuple[str, str] = ('testing', 'testing')   # until enforce_auth()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> 'MotoServer':
        self._log = tempfile.NamedTemporaryFile(prefix='moto-', suffix='.log', delete=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith('AWS_')}
        env['PYTHONUNBUFFERED'] = '1'
        self._proc = subprocess.Popen(
            [sys.executable, '-m', 'moto.server', '-H', self.host, '-p', str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)
        wait_until_answering(self._answers, f'moto server at {self.url}', 30, self._proc,
                             self._log.name)
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + '/moto-api/', timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None
        if self._log is not None:
            self._log.close()
            os.unlink(self._log.name)
            self._log = None

    def __enter__(self) -> 'MotoServer':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients -----------------------------------------------------------------------------
    def client(self, service: str = 's3', keys: Optional[Tuple[str, str]] = None):
        import boto3
        key_id, secret = keys or self.keys
        return boto3.session.Session().client(
            service, endpoint_url=self.url, region_name=REGION, aws_access_key_id=key_id,
            aws_secret_access_key=secret)

    def create_user(self, name: str, policy: dict) -> Tuple[str, str]:
        """An IAM user with one inline policy; returns its access key pair."""
        iam = self.client('iam')
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=f'{name}-policy',
                            PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)['AccessKey']
        return key['AccessKeyId'], key['SecretAccessKey']

    def enforce_auth(self) -> None:
        """From now on every request needs an IAM user's keys; the helpers use an admin's."""
        admin = self.create_user('c2s-test-admin', ADMIN_POLICY)
        request = urllib.request.Request(self.url + '/moto-api/reset-auth', data=b'0',
                                         method='POST', headers={'Content-Type': 'text/plain'})
        with urllib.request.urlopen(request, timeout=10) as r:
            r.read()
        self.keys = admin

    # -- objects -----------------------------------------------------------------------------
    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def upload_bytes(self, bucket: str, key: str, data: bytes) -> str:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)
        return f's3://{bucket}/{key}'

    def upload_tree(self, local_dir: Union[str, Path], bucket: str, prefix: str = '') -> List[str]:
        """Every file under local_dir to s3://bucket/prefix/<relative path>; the URLs, sorted."""
        client = self.client()
        root = Path(local_dir)
        urls = []
        for path in sorted(p for p in root.rglob('*') if p.is_file()):
            rel = path.relative_to(root).as_posix()
            key = f'{prefix.strip("/")}/{rel}' if prefix.strip('/') else rel
            client.upload_file(str(path), bucket, key)
            urls.append(f's3://{bucket}/{key}')
        return urls

    def list(self, bucket: str, prefix: str = '') -> List[str]:
        pages = self.client().get_paginator('list_objects_v2').paginate(Bucket=bucket,
                                                                        Prefix=prefix)
        return sorted(o['Key'] for page in pages for o in page.get('Contents', []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)['Body'].read()

    # -- request log -------------------------------------------------------------------------
    def log_position(self) -> int:
        return Path(self._log.name).stat().st_size

    def _synced_log(self, since: int) -> str:
        """The log from `since`, once a marker request made now shows in it (the server logs
        each request after answering it)."""
        self._marks = getattr(self, '_marks', 0) + 1
        marker = f'/moto-api/?log-mark={self._marks}'
        with urllib.request.urlopen(self.url + marker, timeout=10) as r:
            r.read()
        deadline = time.monotonic() + 10
        while True:
            with open(self._log.name, 'rb') as f:
                f.seek(since)
                text = f.read().decode('utf-8', 'replace')
            if marker in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def requests(self, since: int = 0) -> List[Tuple[str, str, int]]:
        """(method, decoded path, status) of every request since a log_position()."""
        return access_log_requests(self._synced_log(since))

    def objects_opened(self, bucket: str, since: int = 0) -> Dict[str, int]:
        """{key: number of GET/HEAD requests} for object reads of one bucket."""
        return reads_by_name(self.requests(since), bucket)


def s3_urls(keys: Iterable[str], bucket: str) -> List[str]:
    return [f's3://{bucket}/{k}' for k in keys]


class InProcessMoto:
    """moto's S3 in a thread of this process, so that objects can be put straight into its
    backend in bulk (a history of 50,000 objects in seconds, not minutes of PUTs), and every
    request it answers is counted by kind (`lists`: ListObjects(V2), `gets`: object reads)."""

    def __init__(self, host: str = HOST, port: Optional[int] = None):
        self.host = host
        self.port = port or free_port(host)
        self.url = f'http://{host}:{self.port}'
        self.keys = ('testing', 'testing')
        self.requests: List[Tuple[str, str, str]] = []   # method, path, query
        self._server = None

    def start(self) -> 'InProcessMoto':
        import threading
        from moto.moto_server.werkzeug_app import (DomainDispatcherApplication,
                                                   MotoRequestHandler, create_backend_app)
        from werkzeug.serving import make_server
        app = DomainDispatcherApplication(create_backend_app)

        def counted(environ, start_response):
            self.requests.append((environ['REQUEST_METHOD'], environ.get('PATH_INFO', ''),
                                  environ.get('QUERY_STRING', '')))
            return app(environ, start_response)
        self._server = make_server(self.host, self.port, counted, threaded=True,
                                   request_handler=MotoRequestHandler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> 'InProcessMoto':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client(self):
        import boto3
        return boto3.session.Session().client(
            's3', endpoint_url=self.url, region_name=REGION, aws_access_key_id=self.keys[0],
            aws_secret_access_key=self.keys[1])

    def inject(self, bucket: str, keys: Iterable[str], data: bytes = b'') -> None:
        """Objects put straight into moto's S3 backend: no request each."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends
        backend = s3_backends[DEFAULT_ACCOUNT_ID]['global']
        for key in keys:
            backend.put_object(bucket, key, data)

    def lists(self, since: int = 0) -> int:
        """ListObjects requests answered since `since` (a len(self.requests))."""
        return sum(1 for method, path, query in self.requests[since:]
                   if method == 'GET' and ('list-type=2' in query or (
                       path.count('/') <= 1 and 'prefix=' in query)))

    def gets(self, bucket: str, since: int = 0) -> List[str]:
        """Keys of the objects of `bucket` read (GET/HEAD) since `since`."""
        found = []
        for method, path, query in self.requests[since:]:
            parts = path.lstrip('/').split('/', 1)
            if method in ('GET', 'HEAD') and len(parts) == 2 and parts[0] == bucket and \
                    parts[1] and 'list-type' not in query:
                found.append(urllib.parse.unquote(parts[1]))
        return found
