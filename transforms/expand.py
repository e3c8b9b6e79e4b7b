"""Expand: the units of a large range, listed on the workers into the files to read.

The launcher of a large run (or of any run on a runner whose workers are other machines) plans
units, not files (pipeline/listing.py): a type folder's hours, a month at most each, or a
folder listed whole. Each worker lists its units with the store's own client
(transforms/listing.py), so neither the launcher's memory nor the job graph grows with the
file count. Files are decided as the launcher would decide them: by their path (type, range,
name), and against the per-file record of earlier runs when the run skips what they did.
"""
import collections
import datetime
from typing import Dict, Iterator, NamedTuple, Optional, Tuple

import apache_beam as beam

from transforms import counts, progress
from transforms.credentials import StoreCredentials
from transforms.layout import DAY, FileSelector, hour_from_path
from transforms.listing import Counter, Store, Unit, list_unit, store_for
from transforms.progress import LiveChannel
from transforms.records import Records, load_records

ListedFile = Tuple[str, Optional[str], int, float]   # path, type if the path says, bytes, stamp
RECORD_DAYS_KEPT = 8   # days of the per-file record a worker keeps in memory at once


class SkipRecorded(NamedTuple):
    """Files the per-file record under `rejects` holds are skipped, counted as `reason`."""
    rejects: str
    reason: str


class ListUnitsFn(beam.DoFn):
    """A unit → the files a run reads in it; skipped ones counted by reason."""

    reporter = progress.NO_REPORTER   # until setup()

    def __init__(self, selector: FileSelector, skip_recorded: Optional[SkipRecorded] = None,
                 credentials: StoreCredentials = StoreCredentials(),
                 live: LiveChannel = LiveChannel()):
        self.selector = selector
        self.skip_recorded = skip_recorded
        self.credentials = credentials
        self.live = live

    def setup(self):
        self.credentials.install()
        self.reporter = self.live.reporter()
        self.stores: Dict[str, Store] = {}
        self.records: 'collections.OrderedDict[Optional[datetime.datetime], Records]' = \
            collections.OrderedDict()

    def _store(self, path: str) -> Store:
        scheme = path.split('://', 1)[0] if '://' in path else ''
        if scheme not in self.stores:
            self.stores[scheme] = store_for(path, Counter())
        return self.stores[scheme]

    def _recorded(self, path: str, size: int, stamp: float) -> bool:
        hour = hour_from_path(path)
        day = hour.replace(hour=0) if hour is not None else None
        found = self.records.get(day)
        if found is None:
            if day is None:
                found = _undated_records(self.skip_recorded.rejects)
            else:
                found = load_records(self.skip_recorded.rejects, day, day + DAY, pieces=False)
            self.records[day] = found
            while len(self.records) > RECORD_DAYS_KEPT:
                self.records.popitem(last=False)
        else:
            self.records.move_to_end(day)
        return found.recorded(path, size, stamp)

    def process(self, unit: Unit) -> Iterator[ListedFile]:
        store = self._store(unit.path)
        before = (store.counter.requests, store.counter.objects)
        for path, size, stamp in list_unit(store, unit):
            if path.endswith('/'):
                continue
            decision = self.selector.decide(path)
            if decision.action.startswith('skip_'):
                counts.counter(counts.FILES_SKIPPED, decision.action).inc()
            elif self.skip_recorded and self._recorded(path, size, stamp):
                counts.counter(counts.FILES_SKIPPED, self.skip_recorded.reason).inc()
            else:
                yield path, decision.event_type, size, stamp
        requests, objects = (store.counter.requests - before[0],
                             store.counter.objects - before[1])
        counts.counter(counts.LIST_REQUESTS).inc(requests)
        counts.counter(counts.OBJECTS_LISTED).inc(objects)
        self.reporter.add(progress.LIST_REQUESTS, requests)
        self.reporter.add(progress.LISTED, objects)


def _undated_records(rejects: str) -> Records:
    """The record of files without a date= hour only."""
    from transforms.records import UNDATED, hours_dir
    store = store_for(rejects)
    records = Records()
    for path, _, _ in store.under(f'{hours_dir(rejects)}/{UNDATED}/'):
        records.add_object(path)
    return records


class ListOnWorkers(beam.PTransform):
    """Units → the files to read, listed and decided on the workers, spread for reading."""

    def __init__(self, units, selector: FileSelector,
                 skip_recorded: Optional[SkipRecorded] = None,
                 credentials: StoreCredentials = StoreCredentials(),
                 live: LiveChannel = LiveChannel()):
        super().__init__()
        from transforms.packing import PackedList
        self.units = PackedList(units)
        self.selector = selector
        self.skip_recorded = skip_recorded
        self.credentials = credentials
        self.live = live

    def expand(self, pbegin):
        return (pbegin
                | 'Start' >> beam.Impulse()
                | 'Units' >> beam.FlatMap(_all_of, self.units)
                | 'SpreadUnits' >> beam.Reshuffle()
                | 'ListUnits' >> beam.ParDo(ListUnitsFn(self.selector, self.skip_recorded,
                                                         self.credentials, self.live))
                | 'SpreadFiles' >> beam.Reshuffle())


def _all_of(_, units):
    return list(units)
