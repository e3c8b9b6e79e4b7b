"""The three secret stores a secret option may name, told apart by the form of the name.

Only names travel in a pipeline; each process (launcher, worker) reads the value itself, with
the credentials its machine already has in that cloud: Google's application default credentials
for Secret Manager, boto3's default chain for AWS Secrets Manager (an instance, container or
pod role on EMR, EKS, Managed Flink), Azure's DefaultAzureCredential for Key Vault (a managed or
workload identity on HDInsight, AKS, Databricks). Errors name the secret (a name is not secret)
and the exception type, never a value nor the client's own text.
"""
import os
import re
from typing import Callable, Dict, Mapping, Optional

GCP, AWS, AZURE = 'gcp', 'aws', 'azure'
# One pattern per store, in the syntax metadata.json's regexes also take (no named groups).
FORMS = {
    GCP: r'projects/[^/]+/secrets/[^/]+/versions/[^/]+',
    # The 6 characters AWS appends to a secret's name are part of the name's character set, so
    # a full and a partial ARN (without them) both match; AWS accepts both.
    AWS: r'arn:aws(-cn|-us-gov)?:secretsmanager:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:secret:'
         r'[A-Za-z0-9/_+=.@-]+',
    AZURE: r'https://[A-Za-z0-9-]{3,24}\.vault\.(azure\.net|azure\.cn|usgovcloudapi\.net|'
           r'microsoftazure\.de)/secrets/[A-Za-z0-9-]{1,127}(/[0-9A-Fa-f]{32})?',
}
SECRET_NAME = re.compile('^(' + '|'.join(FORMS.values()) + ')$')
_MATCHERS = {store: re.compile(form) for store, form in FORMS.items()}
ACCEPTED_FORMS = ('a Secret Manager version projects/P/secrets/S/versions/V, an AWS Secrets '
                  'Manager ARN arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME or an Azure Key '
                  'Vault secret URL https://VAULT.vault.azure.net/secrets/NAME[/VERSION]')
STORE_LABELS = {GCP: 'Secret Manager', AWS: 'Secrets Manager', AZURE: 'Key Vault'}

AWS_CREDENTIAL_VARS = ('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN')
# What the AWS variables held before a store key pair from a secret replaced them (None: never
# replaced in this process); see secrets_manager_client.
_aws_chain_env: Optional[Dict[str, str]] = None


class SecretUnreadable(RuntimeError):
    """A secret that could not be read; the text names it and the error's type only."""

    def __init__(self, name: str, reason: str):
        super().__init__(f'cannot read the secret {name}: {reason}')
        self.name, self.reason = name, reason

    def described_as(self, what: str) -> str:
        return f'cannot read {what} {self.name}: {self.reason}'


def store_of(name: str) -> Optional[str]:
    """GCP, AWS or AZURE for a name of one of the accepted forms, else None."""
    return next((store for store, form in _MATCHERS.items() if form.fullmatch(name or '')), None)


def label(name: str) -> str:
    """'Secrets Manager arn:aws:...': where a value came from, for messages."""
    return f'{STORE_LABELS.get(store_of(name), "secret")} {name}'


# ----------------------------------------------------------------- clients (tests replace them)
def secret_manager_client():
    from google.cloud import secretmanager
    return secretmanager.SecretManagerServiceClient()


def secrets_manager_client(region: str):
    """boto3's Secrets Manager client for the ARN's region, through the default chain.

    boto3 itself honours AWS_ENDPOINT_URL_SECRETS_MANAGER (and AWS_ENDPOINT_URL). A store key
    pair read from --aws_credentials_secret replaces the AWS variables of this process (Beam's
    S3 filesystem reads them there); secrets are still read with the chain as it was before.
    """
    import boto3
    import botocore.session
    core = botocore.session.Session()
    before = _aws_chain_env
    if before is not None:
        if before.get('AWS_ACCESS_KEY_ID'):
            return boto3.session.Session(
                aws_access_key_id=before['AWS_ACCESS_KEY_ID'],
                aws_secret_access_key=before.get('AWS_SECRET_ACCESS_KEY'),
                aws_session_token=before.get('AWS_SESSION_TOKEN'),
                region_name=region).client('secretsmanager')
        core.get_component('credential_provider').remove('env')
    return boto3.session.Session(botocore_session=core, region_name=region).client(
        'secretsmanager')


def key_vault_client(vault_url: str):
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient
    return SecretClient(vault_url, DefaultAzureCredential())


def remember_aws_chain_env() -> None:
    """Called before the AWS variables are replaced by a store key pair (once per process)."""
    global _aws_chain_env
    if _aws_chain_env is None:
        _aws_chain_env = {var: os.environ[var] for var in AWS_CREDENTIAL_VARS
                          if os.environ.get(var)}


def forget_aws_chain_env() -> None:
    """For tests: as if no store key pair had replaced the AWS variables."""
    global _aws_chain_env
    _aws_chain_env = None


# --------------------------------------------------------------------------------- reading
def _read_gcp(name: str, factories: Mapping[str, Callable]) -> str:
    client = (factories.get(GCP) or secret_manager_client)()
    return client.access_secret_version(request={'name': name}).payload.data.decode('utf-8')


def _read_aws(name: str, factories: Mapping[str, Callable]) -> str:
    region = name.split(':')[3]
    answer = (factories.get(AWS) or secrets_manager_client)(region).get_secret_value(
        SecretId=name)
    if answer.get('SecretString') is not None:
        return answer['SecretString']
    return bytes(answer['SecretBinary']).decode('utf-8')


def _read_azure(name: str, factories: Mapping[str, Callable]) -> str:
    vault_url, _, path = name.partition('/secrets/')
    secret, _, version = path.partition('/')
    client = (factories.get(AZURE) or key_vault_client)(vault_url)
    return client.get_secret(secret, version or None).value or ''


_READERS = {GCP: _read_gcp, AWS: _read_aws, AZURE: _read_azure}


def read_secret(name: str, client_factories: Optional[Mapping[str, Callable]] = None) -> str:
    """The value of the secret `name` (any accepted form), stripped.

    `client_factories` ({GCP: () -> client, AWS: (region) -> client, AZURE: (vault URL) ->
    client}) replaces the real clients in tests. Raises SecretUnreadable.
    """
    store = store_of(name)
    if store is None:
        raise SecretUnreadable(name, f'not {ACCEPTED_FORMS}')
    try:
        return _READERS[store](name, client_factories or {}).strip()
    except Exception as exc:   # the client's text may quote what it read: only its type
        raise SecretUnreadable(name, _reason(exc)) from None


_ERROR_CODE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.]{0,63}')


def _reason(exc: Exception) -> str:
    """The error's type, and the service's error code when it has one (AccessDenied,
    SecretNotFound: an identifier, never text that could quote a value)."""
    response = getattr(exc, 'response', None)
    if isinstance(response, dict):   # botocore's ClientError
        code = response.get('Error', {}).get('Code')
    else:                             # azure.core's HttpResponseError (Key Vault: .error)
        code = getattr(exc, 'error_code', None) or getattr(getattr(exc, 'error', None), 'code',
                                                           None)
    code = str(getattr(code, 'value', code) or '')
    if code and code != type(exc).__name__ and _ERROR_CODE.fullmatch(code):
        return f'{type(exc).__name__} ({code})'
    return type(exc).__name__
