"""Beam counters that the end-of-run summary is built from (one namespace, keyed names).

Counters are committed per successful bundle, so a retried bundle is not counted twice.
"""
from apache_beam.metrics import Metrics

NAMESPACE = 'currents_to_segment'
READ, DROPPED, SENT, REJECTED, REASON = 'read', 'dropped', 'sent', 'rejected', 'reason'
FILES_READ, FILES_SKIPPED, FILES_REJECTED = 'files_read', 'files_skipped', 'files_rejected'
# A stopped run (SIGINT/SIGTERM): events read but not sent, files not (fully) read. Neither is
# recorded as done, so --resume sends them.
UNSENT, FILES_UNREAD = 'unsent', 'files_unread'
# The per-file record (transforms/completion.py): files (and their events) recorded as done, and
# files left unfinished (their events already settled, which --resume sends again).
RECORDED_FILES, RECORDED_EVENTS = 'recorded_files', 'recorded_events'
UNFINISHED_FILES, UNFINISHED_EVENTS = 'unfinished_files', 'unfinished_events'
# Listing on the workers (large ranges): LIST requests made and objects they returned.
LIST_REQUESTS, OBJECTS_LISTED = 'list_requests', 'objects_listed'
SEP = '|'

_cache = {}


def counter(kind: str, key: str = ''):
    """The counter for e.g. ('read', 'users.messages.email.Send'); created once per process."""
    name = f'{kind}{SEP}{key}' if key else kind
    found = _cache.get(name)
    if found is None:
        found = _cache[name] = Metrics.counter(NAMESPACE, name)
    return found


def split_name(name: str):
    kind, _, key = name.partition(SEP)
    return kind, key
