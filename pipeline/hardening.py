"""Process settings for a run that handles customer data and a write key.

Rejects, dry-run bodies and summaries hold PII (emails, phone numbers, user ids; docs/security.md, "Where
holds customer data"): everything the run creates locally is owner-only (umask 077: files 0600,
folders 0700; cloud stores have no modes, their IAM applies). A crash must not leave a core
file holding the write key and decoded events: core dumps are off for the process and the
worker processes it starts (they inherit both settings).
"""
import os

try:
    import resource
except ImportError:   # not on every platform
    resource = None


def harden_process() -> None:
    os.umask(0o077)
    if resource is not None:
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ValueError, OSError):
            pass
