"""S3 and Azure Blob credentials for Beam's filesystems, never carried as pipeline options.

Beam's S3 filesystem makes a new boto3 session for every operation, and its Azure filesystem
a new BlobServiceClient, so both pick up credentials from the process environment at the time
of use: boto3's default chain reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, and Beam's Azure IO reads AZURE_STORAGE_CONNECTION_STRING when
--azure_connection_string is not set. Only the *names* of the secrets holding them travel in
the pipeline (Secret Manager, Secrets Manager or Key Vault: transforms/secrets.py); each process
(launcher, worker) reads the secrets once and puts them into its own environment: in the read
step's `setup()`, and at worker start through a Beam plugin so that Beam's own write steps
(rejects, their finalisation) have them too.
"""
import csv
import functools
import io
import json
import logging
import os
import threading
from typing import Callable, Dict, Mapping, NamedTuple, Optional

from apache_beam.transforms.core import DoFn
from apache_beam.utils.plugin import BeamPlugin

from transforms.secrets import (AWS_CREDENTIAL_VARS, SecretUnreadable, forget_aws_chain_env,
                               read_secret, remember_aws_chain_env)

AWS_ENV = AWS_CREDENTIAL_VARS
AZURE_ENV = 'AZURE_STORAGE_CONNECTION_STRING'
AWS_SECRET_FORMAT = ('a JSON object {"aws_access_key_id": ..., "aws_secret_access_key": ..., '
                     '"aws_session_token": optional} or the access-key CSV the AWS console '
                     'downloads')

_lock = threading.Lock()
_installed: Dict[str, str] = {}   # secret name -> what it was installed as (no secret values)


class StoreCredentialsError(RuntimeError):
    """S3/Azure credentials that cannot be read or understood; the text never holds a secret."""


def read_store_secret(name: str, client_factories: Optional[Mapping[str, Callable]] = None
                      ) -> str:
    try:
        return read_secret(name, client_factories)
    except SecretUnreadable as exc:
        raise StoreCredentialsError(str(exc)) from None


def parse_aws_secret(text: str, name: str = 'the AWS credentials secret') -> Dict[str, str]:
    """The access key pair (and optional session token) as boto3's environment variables."""
    values: Dict[str, str] = {}
    if text.startswith('{'):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            values = {k.lower(): str(v).strip() for k, v in data.items()
                      if isinstance(v, str) and v.strip()}
    else:
        rows = list(csv.reader(io.StringIO(text.lstrip('\ufeff'))))
        if len(rows) >= 2:
            header = [h.strip().lower() for h in rows[0]]
            row = dict(zip(header, (v.strip() for v in rows[1])))
            values = {'aws_access_key_id': row.get('access key id', ''),
                      'aws_secret_access_key': row.get('secret access key', '')}
    key_id = values.get('aws_access_key_id', '')
    secret = values.get('aws_secret_access_key', '')
    if not key_id or not secret:
        raise StoreCredentialsError(f'{name} must hold {AWS_SECRET_FORMAT}')
    env = {'AWS_ACCESS_KEY_ID': key_id, 'AWS_SECRET_ACCESS_KEY': secret}
    if values.get('aws_session_token'):
        env['AWS_SESSION_TOKEN'] = values['aws_session_token']
    return env


def parse_azure_secret(text: str, name: str = 'the Azure connection string secret') -> str:
    if 'BlobEndpoint=' not in text and 'AccountName=' not in text:
        raise StoreCredentialsError(f'{name} must hold an Azure Storage connection string '
                                    f'(AccountName=...;AccountKey=... or BlobEndpoint=...;'
                                    f'SharedAccessSignature=...)')
    return text


def share_botocore_loader() -> None:
    """One botocore data loader per process instead of one per boto3 session.

    Beam's S3 filesystem makes a new boto3 session and client for every operation (each file
    opened), and each new session parses botocore's S3 service model again: ~0.2 s of CPU per
    file here, most of an S3 run's time. A session already shares its loader between its
    clients; this shares it between sessions (the loaded models are read-only).
    """
    try:
        import botocore.session
    except ImportError:
        return
    if not getattr(botocore.session.create_loader, 'shared_by_c2s', False):
        shared = functools.lru_cache(maxsize=8)(botocore.session.create_loader)
        shared.shared_by_c2s = True
        botocore.session.create_loader = shared


class StoreCredentials(NamedTuple):
    """Which secrets hold the S3 / Azure credentials (names only, no secrets)."""
    aws_secret: Optional[str] = None      # any form transforms/secrets.py accepts
    azure_secret: Optional[str] = None

    def install(self, client_factories: Optional[Mapping[str, Callable]] = None
                ) -> Dict[str, str]:
        """Reads the secrets once per process into the environment Beam's filesystems read
        (and shares botocore's loader, see above).

        Returns {secret name: what it now provides} (no secret values).
        """
        share_botocore_loader()
        bare_worker_filesystems()
        with _lock:
            if self.aws_secret and self.aws_secret not in _installed:
                env = parse_aws_secret(read_store_secret(self.aws_secret, client_factories),
                                       self.aws_secret)
                remember_aws_chain_env()
                for var in AWS_ENV:
                    os.environ.pop(var, None)
                os.environ.update(env)
                _installed[self.aws_secret] = 'the AWS access key pair'
            if self.azure_secret and self.azure_secret not in _installed:
                os.environ[AZURE_ENV] = parse_azure_secret(
                    read_store_secret(self.azure_secret, client_factories), self.azure_secret)
                _installed[self.azure_secret] = 'the Azure connection string'
            return {name: _installed[name] for name in self if name}

    def __bool__(self) -> bool:
        return bool(self.aws_secret or self.azure_secret)


def bare_worker_filesystems() -> None:
    """Beam's default settings for its filesystems in a worker started without the job's
    pipeline options, as Beam's plain worker pool (worker_pool_main) starts them: its S3 and
    Azure filesystems refuse to work with none. They then take the endpoint, region and
    credentials from the worker's own environment and config files (boto3's and Azure's
    chains). A no-op wherever options were given (the launcher, Dataflow, SDK containers)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.options.value_provider import RuntimeValueProvider
    if FileSystems._pipeline_options is None and RuntimeValueProvider.runtime_options is None:
        FileSystems.set_options(PipelineOptions([]))


class BareWorkerFilesystemsFn(DoFn):
    """Passes elements through; its setup() runs `bare_worker_filesystems` first, for a stage
    whose other steps are Beam's own file reads."""

    def setup(self):
        bare_worker_filesystems()

    def process(self, element):
        yield element


def forget_installed() -> None:
    """For tests: the next install() reads the secrets again."""
    with _lock:
        _installed.clear()
        forget_aws_chain_env()


def from_worker_options() -> StoreCredentials:
    """The secret names in the options a Beam worker was started with (empty elsewhere)."""
    from apache_beam.options.value_provider import RuntimeValueProvider
    options = RuntimeValueProvider.runtime_options or {}
    return StoreCredentials(options.get('aws_credentials_secret') or None,
                            options.get('azure_connection_string_secret') or None)


class StoreCredentialsAtWorkerStart(BeamPlugin):
    """Beam imports the modules of BeamPlugin subclasses on every worker before its first
    bundle (--beam_plugins, filled in by DataflowRunner): importing this module there installs
    the credentials for every step, Beam's own file writers included."""


def _install_at_worker_start() -> None:
    credentials = from_worker_options()
    if not credentials:
        return
    try:
        credentials.install()
    except StoreCredentialsError as exc:  # the read step's setup() raises it again, visibly
        logging.getLogger(__name__).error('%s', exc)


_install_at_worker_start()
