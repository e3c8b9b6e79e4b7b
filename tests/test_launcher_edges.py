"""The launcher's path and endpoint decisions at their edges: --start/--end over files with and
without a date= hour, glob detection, partitions, and which endpoints a run may send to."""
import datetime

import pytest

from pipeline.endpoint import endpoint_for
from pipeline.paths import (FileSelector, UsageError, event_type_from_path, hour_from_path,
                            is_glob, parse_hour, partition_of)

TYPES = frozenset({'users.canvas.Entry'})
HOUR_17 = 'in/event_type=users.canvas.Entry/date=2025-04-01-17/part+0+1.avro'
DAY_ONLY = 'in/event_type=users.canvas.Entry/date=2025-04-01/part+0+1.avro'
NO_DATE = 'in/event_type=users.canvas.Entry/part+0+1.avro'
NO_DATE_NO_TYPE = 'exports/2025/april/part+0+1.avro'
H = datetime.datetime


# -- --start / --end -----------------------------------------------------------------------------
@pytest.mark.parametrize('start,end', [
    (H(2025, 4, 2), None), (None, H(2025, 3, 1)), (H(2030, 1, 1), H(2030, 1, 2)),
])
def test_files_without_a_date_hour_are_read_whatever_the_range(start, end):
    selector = FileSelector(TYPES, start, end)
    assert selector.in_range(NO_DATE) is True
    assert selector.in_range(NO_DATE_NO_TYPE) is True
    assert selector.decide(NO_DATE) == ('read', 'users.canvas.Entry')
    assert selector.decide(NO_DATE_NO_TYPE) == ('needs_header', None)


@pytest.mark.parametrize('start,end,inside', [
    (H(2025, 4, 1, 17), None, True),             # start is inclusive
    (H(2025, 4, 1, 18), None, False),
    (None, H(2025, 4, 1, 18), True),
    (None, H(2025, 4, 1, 17), False),            # end is exclusive
    (H(2025, 4, 1, 17), H(2025, 4, 1, 18), True),
    (H(2025, 4, 1, 16), H(2025, 4, 1, 17), False),
    (H(2025, 4, 1, 18), H(2025, 4, 1, 19), False),
    (None, None, True),
])
def test_range_edges_for_an_hourly_file(start, end, inside):
    selector = FileSelector(TYPES, start, end)
    assert selector.in_range(HOUR_17) is inside
    assert selector.decide(HOUR_17).action == ('read' if inside else 'skip_range')


def test_a_day_folder_counts_as_its_first_hour():
    assert hour_from_path(DAY_ONLY) == H(2025, 4, 1, 0)
    assert FileSelector(TYPES, start=H(2025, 4, 1, 0)).in_range(DAY_ONLY) is True
    assert FileSelector(TYPES, start=H(2025, 4, 1, 1)).in_range(DAY_ONLY) is False
    assert partition_of(DAY_ONLY) == 'users.canvas.Entry/2025-04-01-00'
    assert partition_of(HOUR_17) == 'users.canvas.Entry/2025-04-01-17'


def test_an_impossible_date_is_no_hour():
    path = 'in/event_type=users.canvas.Entry/date=2025-13-01-00/part.avro'
    assert hour_from_path(path) is None
    assert FileSelector(TYPES, start=H(2030, 1, 1)).in_range(path) is True


@pytest.mark.parametrize('folder, hour', [
    ('date=2025-04-01-23', H(2025, 4, 1, 23)), ('date=2025-04-01-24', None),
    ('date=2024-02-29-00', H(2024, 2, 29, 0)), ('date=2025-02-29-00', None),
    ('date=2025-12-31', H(2025, 12, 31, 0)), ('date=2025-00-10-01', None),
    ('date=2025-04-00-01', None), ('date=0000-04-01-01', None),
])
def test_a_date_hour_is_read_only_when_it_is_a_real_hour(folder, hour):
    assert hour_from_path(f'in/event_type=users.canvas.Entry/{folder}/part.avro') == hour


def test_only_whole_path_segments_count():
    assert event_type_from_path('in/myevent_type=users.canvas.Entry/x.avro') is None
    assert event_type_from_path('event_type=users.canvas.Entry/x.avro') == 'users.canvas.Entry'
    assert hour_from_path('in/update=2025-04-01-17/x.avro') is None
    assert hour_from_path('date=2025-04-01-17/x.avro') == H(2025, 4, 1, 17)
    assert partition_of('event_type=t/date=2025-04-01-17/x.avro') == 't/2025-04-01-17'
    assert partition_of('date=2025-04-01-17/event_type=t/x.avro') == 't/2025-04-01-17'
    assert partition_of('in/event_type=t/update=2025-04-01-17/x.avro') is None
    assert partition_of('in/event_type=t/a/date=2025-04-01/x.avro') == 't/2025-04-01-00'


def test_a_partition_needs_both_type_and_date():
    assert partition_of(NO_DATE) is None
    assert partition_of('in/date=2025-04-01-17/part.avro') is None
    assert partition_of(NO_DATE_NO_TYPE) is None


def test_upper_case_avro_extension_is_read():
    assert FileSelector(TYPES).decide(HOUR_17.replace('.avro', '.AVRO')).action == 'read'


def test_parse_hour_forms_and_error():
    assert parse_hour('2025-04-01', '--start') == H(2025, 4, 1, 0)
    assert parse_hour('2025-04-01-23', '--end') == H(2025, 4, 1, 23)
    with pytest.raises(UsageError) as caught:
        parse_hour('2025-04-01-24', '--end')
    assert str(caught.value) == "--end must be YYYY-MM-DD or YYYY-MM-DD-HH, got '2025-04-01-24'"


@pytest.mark.parametrize('path,glob', [
    ('gs://b/in/*.avro', True), ('in/part?.avro', True), ('in/part[01].avro', True),
    ('gs://b/in/event_type=users.canvas.Entry/', False), ('in/part-1.avro', False),
])
def test_is_glob(path, glob):
    assert is_glob(path) is glob


# -- the endpoint --------------------------------------------------------------------------------
def test_region_endpoints():
    assert endpoint_for() == 'https://api.segment.io/v1/batch'
    assert endpoint_for('eu') == 'https://events.eu1.segmentapis.com/v1/batch'
    assert endpoint_for('eu', '') == 'https://events.eu1.segmentapis.com/v1/batch'


@pytest.mark.parametrize('url', [
    'https://proxy.example.com/v1/batch', 'http://127.0.0.1:8080/v1/batch',
    'http://127.1.2.3/v1/batch', 'http://localhost/v1/batch', 'http://[::1]:9/v1/batch',
])
def test_accepted_overrides_are_used_as_given(url):
    assert endpoint_for('eu', url) == url


@pytest.mark.parametrize('url, why', [
    ('ftp://host/v1/batch', 'must be an http(s) URL'),
    ('https:///v1/batch', 'must name a host and carry no credentials'),
    ('127.0.0.1:9', 'must be an http(s) URL')])
def test_an_override_must_be_an_http_url(url, why):
    with pytest.raises(ValueError) as caught:
        endpoint_for('us', url)
    assert str(caught.value) == f'--segment_endpoint {why}'   # the URL itself is never echoed


@pytest.mark.parametrize('url', ['http://example.com/v1/batch', 'http://localhost.example.com/x',
                                 'http://192.168.1.1/v1/batch'])
def test_plain_http_only_to_loopback(url):
    with pytest.raises(ValueError) as caught:
        endpoint_for('us', url)
    assert str(caught.value) == ('--segment_endpoint: plain http:// is only allowed for loopback '
                                 'hosts (127.0.0.1, ::1, localhost); use https://')
