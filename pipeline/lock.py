"""A lock with a lease, kept on the store that holds --rejects (local, gs://, s3://, azfs://).

`--since_last_run` launches overlap when a scheduler fires while the previous run still sends;
both would list the same new files and send them twice. The lock is one small JSON object
(`<rejects>/since_last_run.lock`) created only if absent, with the store's own conditional
write, so exactly one launcher gets it:

| store    | create if absent                | replace / delete only if unchanged   |
|----------|---------------------------------|--------------------------------------|
| local    | `O_CREAT \\| O_EXCL`             | content compared, under `flock`      |
| gs://    | `if_generation_match=0`         | `if_generation_match=<generation>`   |
| s3://    | `IfNoneMatch='*'`               | `IfMatch=<ETag>`                     |
| azfs://  | `overwrite=False`               | `etag` + `MatchConditions.IfNotModified` |

The lock holds a lease: the holder renews it while it runs; a holder that dies (SIGKILL, a lost
VM) stops renewing and the next launcher takes the lock over once the lease has expired, again
with a conditional write, so two launchers cannot both take over the same stale lock. A lease
may also name a `done_marker`: a detached Dataflow job holds the lock until its last step
writes that object (its per-file record), so the next launch need not wait for the lease.
Leases compare wall clocks of different machines: keep them NTP-synchronised (minutes of
skew would matter, seconds do not).
"""
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from pipeline.paths import UsageError
from transforms.listing import object_exists

LOCK_NAME = 'since_last_run.lock'
DEFAULT_LEASE_SECONDS = 120.0
LEASE_ENV = 'CURRENTS_TO_SEGMENT_LOCK_LEASE_SECONDS'

log = logging.getLogger(__name__)

Token = Any   # what the store compares on replace/delete: bytes, a generation, an ETag


def lock_path(rejects: str) -> str:
    return FileSystems.join(rejects, LOCK_NAME)


def lease_seconds() -> float:
    """The lease length; CURRENTS_TO_SEGMENT_LOCK_LEASE_SECONDS overrides the default."""
    value = os.environ.get(LEASE_ENV)
    if not value:
        return DEFAULT_LEASE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise UsageError(f'{LEASE_ENV} must be a positive number of seconds, got {value!r}')
    return seconds


# ------------------------------------------------------------------------------------ stores
class LockStore:
    """Conditional operations on one small object; each answers whether it won."""

    def create(self, path: str, body: bytes) -> Optional[Token]:
        """Writes the object if it does not exist; None if it does."""
        raise NotImplementedError

    def read(self, path: str) -> Optional[Tuple[bytes, Token]]:
        """The object's body and token, or None if it does not exist."""
        raise NotImplementedError

    def replace(self, path: str, body: bytes, token: Token) -> Optional[Token]:
        """Overwrites the object only if it still has this token; None if it changed."""
        raise NotImplementedError

    def delete(self, path: str, token: Token) -> bool:
        """Deletes the object only if it still has this token."""
        raise NotImplementedError


class LocalStore(LockStore):
    """A local (or NFS-less shared) folder: O_EXCL creates; every step under an flock.

    The flock (on `<lock>.guard`, released by the kernel if its holder dies) makes the
    read-compare-write of a takeover atomic and keeps readers from seeing a half-written body.
    """

    def _guard(self, path: str):
        import fcntl

        class Guard:
            def __enter__(self_):
                os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
                self_.fd = os.open(path + '.guard', os.O_CREAT | os.O_RDWR, 0o644)
                fcntl.flock(self_.fd, fcntl.LOCK_EX)

            def __exit__(self_, *exc):
                fcntl.flock(self_.fd, fcntl.LOCK_UN)
                os.close(self_.fd)
        return Guard()

    @staticmethod
    def _read(path: str) -> Optional[bytes]:
        try:
            with open(path, 'rb') as f:
                return f.read()
        except FileNotFoundError:
            return None

    def create(self, path, body):
        with self._guard(path):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return None
            with os.fdopen(fd, 'wb') as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            return body

    def read(self, path):
        with self._guard(path):
            body = self._read(path)
            return None if body is None else (body, body)

    def replace(self, path, body, token):
        with self._guard(path):
            if self._read(path) != token:
                return None
            tmp = f'{path}.{uuid.uuid4().hex}.tmp'
            with open(tmp, 'wb') as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return body

    def delete(self, path, token):
        with self._guard(path):
            if self._read(path) != token:
                return False
            os.remove(path)
            return True


def _split_url(path: str) -> Tuple[str, str]:
    bucket, _, name = path.split('://', 1)[1].partition('/')
    return bucket, name


class GcsStore(LockStore):
    """gs:// with google-cloud-storage (Beam's own dependency): generation preconditions."""

    def __init__(self, anonymous: bool = False):
        from google.cloud import storage
        credentials = None
        if anonymous:
            from google.auth.credentials import AnonymousCredentials
            credentials = AnonymousCredentials()
        self.client = storage.Client(project=None, credentials=credentials)

    def _blob(self, path):
        bucket, name = _split_url(path)
        return self.client.bucket(bucket).blob(name)

    def _upload(self, path, body, generation):
        from google.api_core.exceptions import NotFound, PreconditionFailed
        blob = self._blob(path)
        try:
            blob.upload_from_string(body, content_type='application/json',
                                    if_generation_match=generation)
        except (PreconditionFailed, NotFound):
            return None
        return blob.generation

    def create(self, path, body):
        return self._upload(path, body, 0)

    def read(self, path):
        from google.api_core.exceptions import NotFound
        bucket, name = _split_url(path)
        blob = self.client.bucket(bucket).get_blob(name)
        if blob is None:
            return None
        generation = blob.generation
        try:
            return blob.download_as_bytes(if_generation_match=generation), generation
        except NotFound:
            return None
        except Exception as exc:   # replaced between the two requests: read again
            if getattr(exc, 'code', None) == 412:
                return self.read(path)
            raise

    def replace(self, path, body, token):
        return self._upload(path, body, token)

    def delete(self, path, token):
        from google.api_core.exceptions import NotFound, PreconditionFailed
        try:
            self._blob(path).delete(if_generation_match=token)
            return True
        except (PreconditionFailed, NotFound):
            return False


class S3Store(LockStore):
    """s3:// with boto3: `IfNoneMatch='*'` creates, `IfMatch=<ETag>` replaces and deletes."""

    def __init__(self, options=None):
        import boto3
        kwargs = {}
        if options is not None:
            from apache_beam.options.pipeline_options import S3Options
            o = options.view_as(S3Options)
            kwargs = {k: v for k, v in {
                'aws_access_key_id': o.s3_access_key_id,
                'aws_secret_access_key': o.s3_secret_access_key,
                'aws_session_token': o.s3_session_token, 'endpoint_url': o.s3_endpoint_url,
                'region_name': o.s3_region_name, 'verify': o.s3_verify}.items()
                if v is not None}
        self.client = boto3.client('s3', **kwargs)

    @staticmethod
    def _refused(exc) -> bool:
        code = exc.response.get('Error', {}).get('Code', '')
        status = exc.response.get('ResponseMetadata', {}).get('HTTPStatusCode')
        return status in (404, 409, 412) or code in (
            'PreconditionFailed', 'ConditionalRequestConflict', 'NoSuchKey')

    def _put(self, path, body, **condition):
        from botocore.exceptions import ClientError
        bucket, key = _split_url(path)
        try:
            return self.client.put_object(Bucket=bucket, Key=key, Body=body,
                                          ContentType='application/json', **condition)['ETag']
        except ClientError as exc:
            if self._refused(exc):
                return None
            raise

    def create(self, path, body):
        return self._put(path, body, IfNoneMatch='*')

    def read(self, path):
        from botocore.exceptions import ClientError
        bucket, key = _split_url(path)
        try:
            answer = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if self._refused(exc):
                return None
            raise
        return answer['Body'].read(), answer['ETag']

    def replace(self, path, body, token):
        return self._put(path, body, IfMatch=token)

    def delete(self, path, token):
        from botocore.exceptions import ClientError
        bucket, key = _split_url(path)
        try:
            self.client.delete_object(Bucket=bucket, Key=key, IfMatch=token)
            return True
        except ClientError as exc:
            if self._refused(exc):
                return False
            raise


class AzureStore(LockStore):
    """azfs://<account>/<container>/<blob> with azure-storage-blob: overwrite=False creates,
    ETag conditions (MatchConditions.IfNotModified) replace and delete."""

    def __init__(self, options=None):
        from azure.storage.blob import BlobServiceClient
        connection = endpoint = None
        if options is not None:
            from apache_beam.options.pipeline_options import AzureOptions
            o = options.view_as(AzureOptions)
            connection, endpoint = o.azure_connection_string, o.blob_service_endpoint
        connection = connection or os.environ.get('AZURE_STORAGE_CONNECTION_STRING')
        if connection:
            self.service = BlobServiceClient.from_connection_string(connection)
        elif endpoint:
            from azure.identity import DefaultAzureCredential
            self.service = BlobServiceClient(endpoint, credential=DefaultAzureCredential())
        else:
            raise UsageError('a lock on azfs:// needs --azure_connection_string or '
                             '--blob_service_endpoint')

    def _blob(self, path):
        _account, _, rest = path.split('://', 1)[1].partition('/')
        container, _, name = rest.partition('/')
        return self.service.get_blob_client(container, name)

    def create(self, path, body):
        from azure.core.exceptions import ResourceExistsError
        try:
            return self._blob(path).upload_blob(body, overwrite=False)['etag']
        except ResourceExistsError:
            return None

    def read(self, path):
        from azure.core.exceptions import ResourceNotFoundError
        try:
            download = self._blob(path).download_blob()
        except ResourceNotFoundError:
            return None
        return download.readall(), download.properties.etag

    def replace(self, path, body, token):
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        try:
            return self._blob(path).upload_blob(
                body, overwrite=True, etag=token,
                match_condition=MatchConditions.IfNotModified)['etag']
        except (ResourceModifiedError, ResourceNotFoundError):
            return None

    def delete(self, path, token):
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        try:
            self._blob(path).delete_blob(etag=token,
                                         match_condition=MatchConditions.IfNotModified)
            return True
        except (ResourceModifiedError, ResourceNotFoundError):
            return False


def store_for(path: str, options=None) -> LockStore:
    """The lock store for the scheme of `path` (Beam options give gs/s3/azfs credentials)."""
    scheme = path.split('://', 1)[0] if '://' in path else ''
    if scheme == '':
        return LocalStore()
    if scheme == 'gs':
        anonymous = False
        if options is not None:
            from apache_beam.options.pipeline_options import GoogleCloudOptions
            anonymous = bool(options.view_as(GoogleCloudOptions).no_auth)
        return GcsStore(anonymous)
    if scheme == 's3':
        return S3Store(options)
    if scheme == 'azfs':
        return AzureStore(options)
    raise UsageError(f'--since_last_run cannot lock {scheme}:// (local, gs://, s3:// or azfs://)')


# ------------------------------------------------------------------------------------- lease
@dataclass
class Lease:
    holder: str            # host:pid:nonce of the launcher
    run_id: str
    acquired: float        # Unix seconds
    expires: float         # Unix seconds; renewed while the holder runs
    done_marker: Optional[str] = None   # the lock is free once this object exists

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode('utf-8')

    @classmethod
    def from_bytes(cls, raw: bytes) -> Optional['Lease']:
        try:
            d = json.loads(raw)
            return cls(str(d['holder']), str(d.get('run_id', '')), float(d['acquired']),
                       float(d['expires']), d.get('done_marker'))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        until = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.expires))
        what = f'run {self.run_id} ({self.holder})'
        if self.done_marker:
            return f'{what}, a submitted job, until it completes or its lease ends at {until}'
        return f'{what}, lease until {until}'


class LockBusy(Exception):
    """Another live run holds the lock."""

    def __init__(self, path: str, lease: Optional[Lease]):
        self.path, self.lease = path, lease
        super().__init__(f'{path} is held by ' + (lease.describe() if lease else
                                                   'a run that is writing it'))


class Lock:
    """One run's hold on the lock: acquire, keep renewed, hand over to a job, release."""

    def __init__(self, path: str, store: Optional[LockStore] = None,
                 lease: Optional[float] = None, options=None):
        self.path = path
        self.store = store or store_for(path, options)
        self.lease_seconds = lease if lease is not None else lease_seconds()
        self.holder = f'{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}'
        self.token: Optional[Token] = None
        self.lease: Optional[Lease] = None
        self.taken_over: Optional[Lease] = None   # the stale lease this run replaced, if any
        self.lost = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _new_lease(self, run_id: str, seconds: float, done_marker=None) -> Lease:
        now = time.time()
        acquired = self.lease.acquired if self.lease else now
        return Lease(self.holder, run_id, acquired, now + seconds, done_marker)

    def acquire(self, run_id: str) -> 'Lock':
        """Takes the lock (or a stale one over); raises LockBusy if a live run holds it."""
        for _ in range(5):
            lease = self._new_lease(run_id, self.lease_seconds)
            token = self.store.create(self.path, lease.to_bytes())
            if token is not None:
                self.token, self.lease = token, lease
                return self
            current = self.store.read(self.path)
            if current is None:
                continue   # released in between: try to create again
            body, their_token = current
            theirs = Lease.from_bytes(body)
            if theirs is not None and not self._is_free(theirs):
                raise LockBusy(self.path, theirs)
            token = self.store.replace(self.path, lease.to_bytes(), their_token)
            if token is not None:
                self.token, self.lease, self.taken_over = token, lease, theirs
                return self
            # someone else replaced it first: look again
        raise LockBusy(self.path, None)

    @staticmethod
    def _is_free(lease: Lease) -> bool:
        if lease.expires <= time.time():
            return True
        if lease.done_marker:
            try:
                return object_exists(lease.done_marker)
            except Exception:   # cannot tell: the lease decides
                return False
        return False

    def renew(self) -> bool:
        if self.token is None or self.lost:
            return False
        lease = self._new_lease(self.lease.run_id, self.lease_seconds)
        token = self.store.replace(self.path, lease.to_bytes(), self.token)
        if token is None:
            self.lost = True
            log.warning('lost the lock %s (another run took it over after the lease lapsed); '
                        'files may be sent twice, which Segment de-duplicates', self.path)
            return False
        self.token, self.lease = token, lease
        return True

    def start_renewing(self) -> None:
        """Renews the lease every third of its length, in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop():
            while not self._stop.wait(self.lease_seconds / 3):
                try:
                    if not self.renew():
                        return
                except Exception:   # a store hiccup: try again at the next tick
                    log.warning('could not renew the lock %s', self.path, exc_info=True)
        self._thread = threading.Thread(target=loop, name='lock-renewal', daemon=True)
        self._thread.start()

    def stop_renewing(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def hand_over(self, done_marker: str, seconds: float) -> bool:
        """Leaves the lock to a submitted job: held until `done_marker` exists or `seconds`."""
        self.stop_renewing()
        lease = self._new_lease(self.lease.run_id, seconds, done_marker)
        token = self.store.replace(self.path, lease.to_bytes(), self.token)
        self.token = None
        return token is not None

    def release(self) -> None:
        self.stop_renewing()
        if self.token is not None and not self.lost:
            self.store.delete(self.path, self.token)
        self.token = None
