"""The launcher's reading of paths and hours on the command line (CONTRACT §1).

What a path says (event type, date= hour, whether a run reads it) is decided by
transforms/layout.py, which the workers use too; it is re-exported here for the launcher.
"""
import datetime
import re

from transforms.layout import (FileDecision, FileSelector, event_type_from_path,  # noqa: F401
                               hour_from_path, partition_of)

_GLOB_CHARS = re.compile(r'[*?\[]')


class UsageError(ValueError):
    """Bad arguments: reported as one line, exit status 2."""


def parse_hour(text: str, flag: str) -> datetime.datetime:
    """`YYYY-MM-DD` or `YYYY-MM-DD-HH` (UTC) as given to --start / --end."""
    for fmt in ('%Y-%m-%d-%H', '%Y-%m-%d'):
        try:
            return datetime.datetime.strptime(text, fmt)
        except ValueError:
            pass
    raise UsageError(f'{flag} must be YYYY-MM-DD or YYYY-MM-DD-HH, got {text!r}')


def is_glob(path: str) -> bool:
    return bool(_GLOB_CHARS.search(path))
