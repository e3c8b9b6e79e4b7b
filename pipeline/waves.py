"""Splitting a listed input into waves of date= hours, each one pipeline run (for --resume)."""
import datetime
from typing import List, Optional, Tuple

from pipeline.paths import hour_from_path
from pipeline.listing import partition_key

EPOCH = datetime.datetime(1970, 1, 1)
DEFAULT_WAVE_HOURS = 24   # a local run's waves when --wave_hours is not given


def make_waves(files: List[Tuple[str, Optional[str], int]], wave_hours: int):
    """Files grouped by `wave_hours`-long spans of their date= hour, in time order.

    A partition (event type × hour) never spans two waves. Files without a date= segment form
    the first wave.
    """
    if not wave_hours:
        return [files] if files else []
    buckets = {}
    for entry in files:
        hour = hour_from_path(entry[0])
        key = -1 if hour is None else int((hour - EPOCH).total_seconds() // 3600) // wave_hours
        buckets.setdefault(key, []).append(entry)
    return [buckets[k] for k in sorted(buckets)]


def partitions_of(files) -> List[str]:
    return sorted({partition_key(entry[0]) for entry in files})
