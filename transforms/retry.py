"""How to react to each Segment answer (CONTRACT §4): pure decisions, tested without a network."""
import email.utils
import random
import time
from typing import Optional

OK, RETRY, SPLIT, CONFIG, REJECT = 'ok', 'retry', 'split', 'config', 'reject'
RETRYABLE_4XX = frozenset({408, 410, 429, 460})
NOT_RETRYABLE_5XX = frozenset({501, 505})
SPLIT_4XX = frozenset({400, 413, 422})
CONFIG_4XX = frozenset({401, 403, 404})
MAX_RETRY_AFTER_SECONDS = 300.0


def classify(status: int) -> str:
    """ok / retry / split (isolate the bad message) / config (stop the run) / reject."""
    if 200 <= status < 300:
        return OK
    if status in RETRYABLE_4XX or (500 <= status < 600 and status not in NOT_RETRYABLE_5XX):
        return RETRY
    if status in SPLIT_4XX:
        return SPLIT
    if status in CONFIG_4XX:
        return CONFIG
    return REJECT


def retry_after_seconds(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def backoff_seconds(attempt: int, rng: random.Random, base: float = 0.5,
                    cap: float = 60.0) -> float:
    """Exponential backoff with jitter: attempt 0 → 0.25–0.5 s, doubling, capped at `cap`."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return ceiling / 2 + rng.random() * ceiling / 2
