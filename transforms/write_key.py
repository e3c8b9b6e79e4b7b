"""Where the sending workers get the Segment write key: never a pipeline option (CONTRACT §6).

Only the *name* of the source travels in the pipeline; the key is read in the worker's
`setup()` — from Secret Manager on Dataflow, from SEGMENT_WRITE_KEY locally.
"""
import os
from typing import Callable, NamedTuple, Optional

ENV_VAR = 'SEGMENT_WRITE_KEY'


class WriteKeyMissing(RuntimeError):
    pass


class WriteKeySource(NamedTuple):
    secret_name: Optional[str] = None   # projects/P/secrets/S/versions/V
    env_var: str = ENV_VAR

    def resolve(self, secret_client_factory: Optional[Callable] = None) -> str:
        if self.secret_name:
            if secret_client_factory is None:
                from google.cloud import secretmanager
                secret_client_factory = secretmanager.SecretManagerServiceClient
            try:
                response = secret_client_factory().access_secret_version(
                    request={'name': self.secret_name})
            except Exception as exc:
                raise WriteKeyMissing(f'cannot read the write key secret {self.secret_name}: '
                                      f'{type(exc).__name__}') from None
            key = response.payload.data.decode('utf-8').strip()
        else:
            key = os.environ.get(self.env_var, '').strip()
        if not key:
            where = self.secret_name or f'the environment variable {self.env_var}'
            raise WriteKeyMissing(f'no Segment write key in {where}')
        return key
