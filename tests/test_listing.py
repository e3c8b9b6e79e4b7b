"""List this range on this store (transforms/listing.py): which requests each store gets for a
range, and which objects a run lists, decided without the store's history.

Fast tests: a local tree, and fake S3 / Cloud Storage / Azure clients that record what they are
asked. The real stores are listed in test_history_scaling.py (emulators) and test_s3/gcs/azure.
"""
import datetime

import pytest

from transforms import listing as stores
from transforms.layout import FileSelector, name_prefixes, range_cap
from transforms.listing import Unit
from tests.helpers import write_file

H = datetime.datetime
SEND, OPEN = 'users.messages.email.Send', 'users.messages.email.Open'
ALL = frozenset({SEND, OPEN})


# ------------------------------------------------------------------------- name prefixes
@pytest.mark.parametrize('start, end, prefixes', [
    (H(2024, 5, 1, 2), H(2024, 5, 1, 3), ['2024-05-01']),
    (H(2024, 5, 1), H(2024, 5, 2), ['2024-05-01']),
    (H(2024, 5, 1), H(2024, 6, 1), ['2024-05']),
    (H(2024, 5, 1), H(2024, 5, 31, 23), ['2024-05-%02d' % d for d in range(1, 32)]),
    (H(2024, 1, 1), H(2025, 1, 1), ['2024']),
    (H(2024, 1, 1), H(2024, 12, 31, 23), ['2024-%02d' % m for m in range(1, 12)]
     + ['2024-12-%02d' % d for d in range(1, 32)]),
    (H(2023, 12, 31, 5), H(2025, 1, 2), ['2023-12-31', '2024', '2025-01-01']),
    (H(2024, 12, 1), H(2025, 1, 1), ['2024-12']),     # December: the next month is next year's
    (H(2024, 5, 1, 2), H(2024, 5, 1, 2), []),
])
def test_name_prefixes_cover_the_range_with_the_fewest_prefixes(start, end, prefixes):
    assert name_prefixes(start, end) == prefixes


def test_the_range_without_an_end_stops_at_the_end_of_tomorrow():
    assert range_cap(H(2026, 12, 6, 19, 41)) == H(2026, 12, 8)
    assert range_cap(H(2026, 12, 31, 0, 0)) == H(2027, 1, 2)


# ------------------------------------------------------------------------- a local tree
def tree(root):
    """Two types over hours of 2024-05-01, a third type, a day-only folder, a file outside
    any date= folder, and loose files above the type folders."""
    for hour in range(0, 24, 6):
        write_file(root, SEND, [], date=f'2024-05-01-{hour:02d}', n=hour, raw=b's')
        write_file(root, OPEN, [], date=f'2024-05-01-{hour:02d}', n=hour, raw=b'o')
    write_file(root, 'users.behaviors.CustomEvent', [], date='2024-05-01-06', raw=b'c')
    day_only = write_file(root, SEND, [], date='2024-05-02', n=99, raw=b'd')
    integration = day_only.split('/event_type=')[0]
    loose = root / 'loose.avro'
    loose.write_bytes(b'l')
    (root.joinpath(integration) / f'event_type={SEND}' / 'odd.avro').write_bytes(b'x')
    return integration


def listed(root, selector):
    store = stores.LocalStore()
    layout, units = stores.plan_units(store, str(root) + '/', selector)
    found = sorted(p for u in units for p, _, _ in stores.list_unit(store, u))
    return layout, units, found, [p for p, _, _ in layout.files]


def test_a_run_without_a_range_lists_its_type_folders_whole(tmp_path):
    tree(tmp_path)
    layout, units, found, loose = listed(tmp_path, FileSelector(ALL))
    assert layout.types_skipped == ['users.behaviors.CustomEvent']   # never listed below
    assert sorted(u.kind for u in units) == ['all', 'all']
    assert len(found) == 4 + 4 + 1 + 1          # the odd file too: no range to prune on
    assert loose == [str(tmp_path / 'loose.avro')]


def test_a_ranged_run_lists_only_the_date_hours_in_range(tmp_path):
    tree(tmp_path)
    _, units, found, _ = listed(tmp_path, FileSelector(ALL, H(2024, 5, 1, 6), H(2024, 5, 1, 13)))
    assert all(u.kind == 'hours' for u in units)
    assert sorted(p.split('date=')[1][:13] for p in found) == [
        '2024-05-01-06', '2024-05-01-06', '2024-05-01-12', '2024-05-01-12']
    _, _, found, _ = listed(tmp_path, FileSelector(ALL, H(2024, 5, 2), H(2024, 5, 2, 1)))
    assert [p.split('date=')[1][:10] for p in found] == ['2024-05-02']   # day = its hour 00
    _, _, found, _ = listed(tmp_path, FileSelector(ALL, H(2024, 5, 2, 1)))
    assert found == []                          # the odd file: only for runs without a range


def test_an_input_inside_a_type_or_hour_folder_is_its_own_unit(tmp_path):
    integration = tree(tmp_path)
    folder = f'{integration}/event_type={SEND}'
    assert stores.top_unit(folder, FileSelector(ALL)) == Unit('all', folder + '/', event_type=SEND)
    ranged = stores.top_unit(folder, FileSelector(ALL, H(2024, 5, 1)))
    assert ranged == Unit('hours', folder + '/', H(2024, 5, 1), None, SEND)
    assert stores.top_unit(folder, FileSelector(frozenset({OPEN}))) is None
    hour = f'{folder}/date=2024-05-01-06'
    assert stores.top_unit(hour, FileSelector(ALL)).path == hour + '/'
    assert stores.top_unit(hour, FileSelector(ALL, H(2024, 5, 1, 7))).path == ''
    layout = stores.find_units(stores.LocalStore(), folder + '/', FileSelector(frozenset({OPEN})))
    assert layout.units == [] and layout.types_skipped == [SEND]


def test_folders_past_the_depth_are_listed_whole(tmp_path):
    deep = tmp_path / 'a' / 'b' / 'c' / 'd' / 'e'
    deep.mkdir(parents=True)
    (deep / 'x.avro').write_bytes(b'x')
    store = stores.LocalStore()
    layout = stores.find_units(store, str(tmp_path) + '/', FileSelector(ALL), max_depth=3)
    assert [u.path for u in layout.units] == [str(tmp_path / 'a' / 'b' / 'c') + '/']
    assert [p for p, _, _ in stores.list_unit(store, layout.units[0])] == [str(deep / 'x.avro')]


def test_a_type_folder_without_start_begins_at_its_first_hour(tmp_path):
    integration = tree(tmp_path)
    store = stores.LocalStore()
    unit = Unit('hours', f'{integration}/event_type={SEND}/', None, H(2024, 5, 3), SEND)
    assert stores.bounded(unit, store).start == H(2024, 5, 1)
    assert stores.bounded(unit._replace(path=str(tmp_path / 'none') + '/'), store).start == \
        H(2024, 5, 3)                           # no hour at all: an empty range
    assert stores.hours_present(store, unit) == [H(2024, 5, 1, h) for h in (0, 6, 12, 18)] + [
        H(2024, 5, 2)]


@pytest.mark.parametrize('days, pieces', [(1, 3), (2, 2), (31, 1)])
def test_units_are_cut_at_midnight_into_pieces_of_at_most_n_days(days, pieces):
    unit = Unit('hours', 'x/', H(2024, 5, 1, 5), H(2024, 5, 3, 7), SEND)
    cut = stores.split_unit(unit, days)
    assert len(cut) == pieces and cut[0].start == unit.start and cut[-1].end == unit.end
    assert all(a.end == b.start and b.start.hour == 0 for a, b in zip(cut, cut[1:]))
    assert stores.split_unit(Unit('all', 'x/'), 1) == [Unit('all', 'x/')]


# ---------------------------------------------------------------- the object stores' requests
class FakeS3:
    """A boto3 S3 client over a sorted key list: pages of `page` keys after StartAfter."""

    def __init__(self, keys, page=2):
        self.keys, self.page, self.calls = sorted(keys), page, []

    def get_paginator(self, _):
        return self

    def paginate(self, Bucket, Prefix, StartAfter='', Delimiter=None):
        self.calls.append((Prefix, StartAfter))
        keys = [k for k in self.keys if k.startswith(Prefix) and k > StartAfter]
        for i in range(0, max(len(keys), 1), self.page):
            chunk = keys[i:i + self.page]
            yield {'KeyCount': len(chunk), 'Contents': [
                {'Key': k, 'Size': 1, 'LastModified': H(2024, 1, 1)} for k in chunk]}


def _keys(type_folder, hours):
    return [f'{type_folder}date={h}/version=10/us-01/f.avro' for h in hours]


def test_s3_lists_from_the_first_key_of_the_range_and_stops_at_its_end():
    folder = 'in/event_type=t/'
    hours = ['2024-05-01-%02d' % h for h in range(24)] + ['2024-05-02-00', '2024-05-01']
    client = FakeS3(_keys(folder, hours))
    store = stores.S3Store(client)
    found = list(store.hours(f's3://b/{folder}', H(2024, 5, 1, 3), H(2024, 5, 1, 5)))
    assert [p.split('date=')[1][:13] for p, _, _ in found] == ['2024-05-01-03', '2024-05-01-04']
    assert client.calls == [(f'{folder}date=', f'{folder}date=2024-05-01-03')]
    assert store.counter.requests == 2   # the 3rd page (after the end key) is never asked for


def test_s3_lists_a_day_only_folder_when_the_range_takes_its_hour_00_and_ends_that_day():
    folder = 'in/event_type=t/'
    client = FakeS3(_keys(folder, ['2024-05-01', '2024-05-01-00', '2024-05-01-07']))
    store = stores.S3Store(client)
    found = [p for p, _, _ in store.hours(f's3://b/{folder}', H(2024, 5, 1), H(2024, 5, 1, 6))]
    assert [p.split('date=')[1][:13] for p in found] == ['2024-05-01-00', '2024-05-01/ve']
    assert client.calls[-1] == (f'{folder}date=2024-05-01/', '')
    client.calls.clear()
    list(store.hours(f's3://b/{folder}', H(2024, 5, 1), H(2024, 5, 2)))   # a whole day
    assert len(client.calls) == 1 and client.calls[0][1] == f'{folder}date=2024-05-01-00'
    client.calls.clear()
    list(store.hours(f's3://b/{folder}', H(2024, 5, 1, 1), H(2024, 5, 1, 6)))  # no hour 00
    assert len(client.calls) == 1


class FakeGcs:
    def __init__(self):
        self.calls = []

    def list_blobs(self, bucket, prefix, **kwargs):
        self.calls.append((bucket, prefix, kwargs))

        class Pages:
            pages = []
        return Pages()


def test_cloud_storage_lists_between_start_and_end_offsets():
    client = FakeGcs()
    store = stores.GcsStore(client)
    list(store.hours('gs://b/in/event_type=t/', H(2024, 5, 1, 3), H(2024, 5, 2, 5)))
    assert client.calls == [('b', 'in/event_type=t/date=', {
        'start_offset': 'in/event_type=t/date=2024-05-01-03',
        'end_offset': 'in/event_type=t/date=2024-05-02-05'}),
        ('b', 'in/event_type=t/date=2024-05-02/', {})]


class FakeAzure:
    def __init__(self):
        self.prefixes = []

    def get_container_client(self, container):
        return self

    def list_blobs(self, name_starts_with=None, **kwargs):
        self.prefixes.append(name_starts_with)

        class Pages:
            @staticmethod
            def by_page():
                return iter([])
        return Pages()


def test_azure_lists_by_the_fewest_name_prefixes():
    client = FakeAzure()
    store = stores.AzureStore(client)
    list(store.hours('azfs://acct/cont/in/event_type=t/', H(2024, 4, 30, 22), H(2024, 6, 2)))
    assert client.prefixes == ['in/event_type=t/date=2024-04-30', 'in/event_type=t/date=2024-05',
                               'in/event_type=t/date=2024-06-01']


def test_paths_split_into_bucket_and_key():
    assert stores.S3Store._split('s3://b/k/x') == ('b', 'k/x')
    assert stores.GcsStore._split('gs://b/k/') == ('b', 'k/')
    assert stores.AzureStore._split('azfs://a/c/k/x') == ('a', 'c', 'k/x')
    assert stores.AzureStore._split('azfs://a/c') == ('a', 'c', '')
