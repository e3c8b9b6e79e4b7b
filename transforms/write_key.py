"""Where the sending workers get the Segment write key: never a pipeline option (CONTRACT §6).

Only the *name* of the source travels in the pipeline; the key is read in the worker's
`setup()`: from the secret named by --segment_write_key_secret (Secret Manager, Secrets
Manager or Key Vault, see transforms/secrets.py), else from SEGMENT_WRITE_KEY.
"""
import os
from typing import Callable, Mapping, NamedTuple, Optional

from transforms.secrets import SecretUnreadable, read_secret

ENV_VAR = 'SEGMENT_WRITE_KEY'


class WriteKeyMissing(RuntimeError):
    pass


class WriteKeySource(NamedTuple):
    secret_name: Optional[str] = None   # any form transforms/secrets.py accepts
    env_var: str = ENV_VAR

    def resolve(self, client_factories: Optional[Mapping[str, Callable]] = None) -> str:
        if self.secret_name:
            try:
                key = read_secret(self.secret_name, client_factories)
            except SecretUnreadable as exc:
                raise WriteKeyMissing(exc.described_as('the write key secret')) from None
        else:
            key = os.environ.get(self.env_var, '').strip()
        if not key:
            where = self.secret_name or f'the environment variable {self.env_var}'
            raise WriteKeyMissing(f'no Segment write key in {where}')
        return key
