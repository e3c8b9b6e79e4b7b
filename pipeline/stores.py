"""S3 and Azure Blob in the launcher: credentials set up, buckets and containers checked.

Beam's S3 and Azure filesystems match nothing, without an error, under a bucket or container
that does not exist, and report credential problems as multi-line tracebacks deep in a run. So
before listing, the launcher lists one key of every s3:// / azfs:// location the run uses, with
the same client settings Beam will use, and turns each failure into one line that names the
credentials source that was tried (never a secret).
"""
import os
from typing import Callable, Optional, Tuple

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import AzureOptions, PipelineOptions, S3Options

from pipeline.paths import UsageError, is_glob
from transforms.credentials import (AZURE_ENV, StoreCredentials, StoreCredentialsError)
from transforms.secrets import label

AWS_CHAIN = ("boto3's default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and "
             "~/.aws/credentials, ~/.aws/config, SSO, container and instance roles")
AZURE_CHAIN = ("Azure's default credential chain (AZURE_CLIENT_ID/... environment, workload "
               "identity, managed identity, Azure CLI)")
_AWS_METHODS = {
    'env': 'the environment (AWS_ACCESS_KEY_ID)',
    'shared-credentials-file': 'the shared credentials file (~/.aws/credentials)',
    'config-file': 'the AWS config file (~/.aws/config)',
    'iam-role': 'the instance role',
    'container-role': 'the container role',
    'assume-role': 'an assumed role (~/.aws/config)',
    'assume-role-with-web-identity': 'a web identity role (AWS_WEB_IDENTITY_TOKEN_FILE)',
    'sso': 'AWS SSO (~/.aws/config)',
}
_BAD_AWS_CREDENTIALS = ('InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken',
                        'InvalidToken', 'TokenRefreshRequired', 'AuthFailure',
                        'UnrecognizedClientException')


def scheme_of(path: Optional[str]) -> str:
    """'s3', 'azfs', 'gs' or '' (a local path)."""
    if path and '://' in path:
        return path.split('://', 1)[0].lower()
    return ''


def split_s3(path: str) -> Tuple[str, str]:
    bucket, _, key = path[len('s3://'):].partition('/')
    return bucket, key


def _listing_prefix(key: str) -> str:
    """The literal part of a key or glob: what a store can list by prefix."""
    for i, char in enumerate(key):
        if char in '*?[':
            return key[:i]
    return key


def prepare_stores(settings, options: PipelineOptions, dataflow: bool = False,
                   secret_client_factory: Optional[Callable] = None) -> None:
    """Sets up S3/Azure credentials for this process and checks every store location used.

    Raises UsageError with one line; does nothing for runs on local folders and gs:// only.
    """
    locations = [(flag, path) for flag, path in (
        ('--input', settings.input), ('--rejects', settings.rejects),
        ('--summary_output', settings.summary_output), ('--report', settings.report),
        ('--dry_run_output', settings.dry_run_output)) if scheme_of(path) in ('s3', 'azfs')]
    if not locations:
        return
    # Beam's S3 and Azure filesystems take their settings (endpoint, region, connection
    # string) from these options; the launcher lists before any Pipeline() sets them.
    FileSystems.set_options(options)
    if not dataflow:
        share_with_local_workers(options)
    schemes = {scheme_of(path) for _, path in locations}
    credentials: StoreCredentials = settings.store_credentials
    if dataflow:
        _check_dataflow_credentials(schemes, credentials, options)
    try:
        installed = credentials.install(secret_client_factory)
    except StoreCredentialsError as exc:
        raise UsageError(str(exc)) from None
    for flag, path in locations:
        if scheme_of(path) == 's3':
            check_s3(flag, path, options, credentials.aws_secret if installed else None)
        else:
            check_azure(flag, path, options, credentials.azure_secret if installed else None)


def share_with_local_workers(options: PipelineOptions) -> None:
    """Puts the store settings where local worker processes find them: their environment.

    Beam 2.77's local FnApiRunner starts its worker processes with no pipeline options (an
    empty ProvisionInfo), so Beam's S3 and Azure filesystems there would not see
    --s3_endpoint_url, --s3_region_name or --azure_connection_string; boto3 and Beam's Azure IO
    read the same settings from these variables. Dataflow workers get the options themselves.
    """
    s3 = options.view_as(S3Options)
    if s3.s3_endpoint_url:
        os.environ['AWS_ENDPOINT_URL_S3'] = s3.s3_endpoint_url
    if s3.s3_region_name:
        os.environ['AWS_DEFAULT_REGION'] = s3.s3_region_name
    azure = options.view_as(AzureOptions)
    if azure.azure_connection_string:   # one without a secret (refused otherwise)
        os.environ[AZURE_ENV] = azure.azure_connection_string


def _check_dataflow_credentials(schemes, credentials: StoreCredentials, options) -> None:
    if 's3' in schemes and not credentials.aws_secret:
        raise UsageError('on Dataflow the workers read S3 credentials from Secret Manager: '
                         'pass --aws_credentials_secret projects/P/secrets/S/versions/V')
    if ('azfs' in schemes and not credentials.azure_secret
            and not options.view_as(AzureOptions).blob_service_endpoint):
        raise UsageError('on Dataflow the workers read the Azure connection string from Secret '
                         'Manager: pass --azure_connection_string_secret '
                         'projects/P/secrets/S/versions/V')


# ------------------------------------------------------------------------------------ S3
def s3_client(options: PipelineOptions):
    """A boto3 S3 client configured as Beam's (endpoint, region, TLS), failing fast."""
    import boto3
    from botocore.config import Config
    s3 = options.view_as(S3Options)
    session = boto3.session.Session()
    client = session.client(
        's3', region_name=s3.s3_region_name, api_version=s3.s3_api_version,
        use_ssl=not s3.s3_disable_ssl, verify=s3.s3_verify, endpoint_url=s3.s3_endpoint_url,
        config=Config(retries={'max_attempts': 2, 'mode': 'standard'}, connect_timeout=5,
                      read_timeout=30))
    return session, client


def aws_credentials_source(session, secret_name: Optional[str] = None) -> str:
    """Where boto3 found credentials; UsageError naming the chain when it found none."""
    credentials = session.get_credentials()
    if credentials is None:
        raise UsageError(f'no AWS credentials found; tried {AWS_CHAIN} (or pass '
                         f'--aws_credentials_secret)')
    if secret_name:
        return label(secret_name)
    method = getattr(credentials, 'method', '') or ''
    return _AWS_METHODS.get(method, f'boto3 provider {method or "unknown"}')


def check_s3(flag: str, path: str, options: PipelineOptions,
             secret_name: Optional[str] = None) -> None:
    import botocore.exceptions as errors
    bucket, key = split_s3(path)
    if not bucket or is_glob(bucket):
        raise UsageError(f'{flag} {path}: an S3 path is s3://BUCKET/PREFIX (no glob in the '
                         f'bucket name)')
    session, client = s3_client(options)
    source = aws_credentials_source(session, secret_name)
    try:
        client.list_objects_v2(Bucket=bucket, Prefix=_listing_prefix(key), MaxKeys=1)
    except errors.ClientError as exc:
        code = exc.response.get('Error', {}).get('Code', '') or str(
            exc.response.get('ResponseMetadata', {}).get('HTTPStatusCode', ''))
        if code == 'NoSuchBucket':
            raise UsageError(f'{flag} {path}: S3 bucket {bucket} does not exist') from None
        if code in _BAD_AWS_CREDENTIALS:
            raise UsageError(f'{flag} {path}: S3 refused the credentials from {source} '
                             f'({code})') from None
        if code in ('AccessDenied', '403'):
            raise UsageError(f'{flag} {path}: access denied listing bucket {bucket} with the '
                             f'credentials from {source} (needs s3:ListBucket; see docs/stores.md)'
                             ) from None
        raise UsageError(f'{flag} {path}: S3 answered {code} listing bucket {bucket}') from None
    except errors.NoCredentialsError:
        raise UsageError(f'no AWS credentials found; tried {AWS_CHAIN}') from None
    except (errors.EndpointConnectionError, errors.ConnectTimeoutError,
            errors.ReadTimeoutError) as exc:
        raise UsageError(f'{flag} {path}: cannot reach S3 ({type(exc).__name__} at '
                         f'{client.meta.endpoint_url})') from None
    except errors.BotoCoreError as exc:
        raise UsageError(f'{flag} {path}: {type(exc).__name__}: '
                         f'{str(exc).splitlines()[0][:200]}') from None


# --------------------------------------------------------------------------------- Azure
def azure_client(options: PipelineOptions, secret_name: Optional[str] = None):
    """A BlobServiceClient made as Beam makes it (connection string first, else the endpoint
    with the default credential chain), and a description of where its credentials came from."""
    from azure.storage.blob import BlobServiceClient
    azure = options.view_as(AzureOptions)
    quick = {'retry_total': 1, 'connection_timeout': 5, 'read_timeout': 30}
    connection_string = azure.azure_connection_string or os.environ.get(AZURE_ENV)
    if connection_string:
        source = (label(secret_name) if secret_name
                  else '--azure_connection_string' if azure.azure_connection_string
                  else f'the environment ({AZURE_ENV})')
        try:
            client = BlobServiceClient.from_connection_string(connection_string, **quick)
        except ValueError:
            raise UsageError(f'the Azure connection string from {source} is not valid') from None
        return client, source
    if azure.blob_service_endpoint:
        from apache_beam.internal.azure import auth
        client = BlobServiceClient(account_url=azure.blob_service_endpoint,
                                   credential=auth.get_service_credentials(options), **quick)
        return client, f'{AZURE_CHAIN} for {azure.blob_service_endpoint}'
    raise UsageError(f'no Azure credentials: set {AZURE_ENV}, or pass --blob_service_endpoint '
                     f'https://ACCOUNT.blob.core.windows.net to use {AZURE_CHAIN} (or pass '
                     f'--azure_connection_string_secret)')


def split_azfs(flag: str, path: str) -> Tuple[str, str, str]:
    from apache_beam.io.azure.blobstorageio import parse_azfs_path
    try:
        return parse_azfs_path(path if path.count('/') > 3 else path.rstrip('/') + '/',
                               blob_optional=True, get_account=True)
    except ValueError:
        raise UsageError(f'{flag} {path}: an Azure Blob path is azfs://ACCOUNT/CONTAINER/PREFIX '
                         f'(lower-case account and container names)') from None


def check_azure(flag: str, path: str, options: PipelineOptions,
                secret_name: Optional[str] = None) -> None:
    from azure.core import exceptions as errors
    account, container, blob = split_azfs(flag, path)
    client, source = azure_client(options, secret_name)
    try:
        if client.account_name and client.account_name != account:
            raise UsageError(f'{flag} {path}: the credentials from {source} are for storage '
                             f'account {client.account_name}, not {account}')
        pages = client.get_container_client(container).list_blobs(
            name_starts_with=_listing_prefix(blob) or None, results_per_page=1).by_page()
        next(iter(pages), None)
    except errors.ResourceNotFoundError as exc:
        if getattr(exc, 'error_code', None) in (None, 'ContainerNotFound'):
            raise UsageError(f'{flag} {path}: Azure container {container} does not exist in '
                             f'account {account}') from None
        raise UsageError(f'{flag} {path}: Azure answered {exc.error_code}') from None
    except (errors.ClientAuthenticationError, errors.HttpResponseError) as exc:
        code = getattr(exc, 'error_code', None) or exc.status_code
        code = getattr(code, 'value', code)
        if exc.status_code in (401, 403) or isinstance(exc, errors.ClientAuthenticationError):
            raise UsageError(f'{flag} {path}: Azure refused access with the credentials from '
                             f'{source} ({code}): a wrong or expired key, or no permission to '
                             f'list container {container} (see docs/stores.md)') from None
        raise UsageError(f'{flag} {path}: Azure answered {code}') from None
    except errors.ServiceRequestError as exc:
        raise UsageError(f'{flag} {path}: cannot reach Azure Blob Storage at '
                         f'{client.url} ({type(exc).__name__})') from None
    except errors.AzureError as exc:
        first = (str(exc).splitlines() or [''])[0][:200]
        raise UsageError(f'{flag} {path}: {type(exc).__name__} with the credentials from '
                         f'{source}: {first}') from None
    finally:
        client.close()

