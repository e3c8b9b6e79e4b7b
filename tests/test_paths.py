"""Listing decisions made from the path alone: event type, date= pruning, skipping."""
import datetime

import pytest

from transforms.events import EVENTS, event_type_from_schema_name
from pipeline.paths import (FileSelector, UsageError, event_type_from_path, hour_from_path,
                              parse_hour, partition_of)

ALL = frozenset(e.currents_type for e in EVENTS)
NEW = ('currents/dataexport.prod-01.GCS.integration.69cadaaed2d51b7c75b1a3e5/'
       'event_type=users.messages.pushnotification.Send/date=2025-04-01-17/version=6/us-01/'
       'dataexport.prod-01.GCS.integration.69cadaaed2d51b7c75b1a3e5+0+123456.avro')
OLD = ('gs://b/p/dataexport.prod-03.S3.integration.5a/event_type=users.messages.email.Open/'
       'date=2021-02-03-04/7/zone-a/dataexport.prod-03.S3.integration.5a+1+0000000001.avro')


def test_both_layouts():
    assert event_type_from_path(NEW) == 'users.messages.pushnotification.Send'
    assert hour_from_path(NEW) == datetime.datetime(2025, 4, 1, 17)
    assert event_type_from_path(OLD) == 'users.messages.email.Open'
    assert hour_from_path(OLD) == datetime.datetime(2021, 2, 3, 4)
    assert partition_of(OLD) == 'users.messages.email.Open/2021-02-03-04'
    assert event_type_from_path('/data/x.avro') is None and hour_from_path('/data/x.avro') is None


def test_pruning_start_inclusive_end_exclusive():
    selector = FileSelector(ALL, parse_hour('2025-04-01-17', '--start'),
                            parse_hour('2025-04-01-18', '--end'))
    assert selector.decide(NEW).action == 'read'
    selector = FileSelector(ALL, parse_hour('2025-04-01', '--start'),
                            parse_hour('2025-04-01-17', '--end'))
    assert selector.decide(NEW).action == 'skip_range'
    assert FileSelector(ALL, end=parse_hour('2025-04-02', '--end')).decide(NEW).action == 'read'
    assert FileSelector(ALL, start=parse_hour('2025-04-02', 's')).decide(NEW).action == 'skip_range'


def test_other_types_and_non_avro_names_are_skipped():
    other = NEW.replace('pushnotification.Send', 'pushnotification.Abort')
    assert FileSelector(ALL).decide(other) == ('skip_type', 'users.messages.pushnotification.Abort')
    narrowed = FileSelector(frozenset({'users.messages.email.Open'}))
    assert narrowed.decide(NEW).action == 'skip_type'
    assert narrowed.decide(OLD).action == 'read'
    assert FileSelector(ALL).decide('/x/event_type=users.canvas.Entry/README.md').action == \
        'skip_not_avro'
    assert FileSelector(ALL).decide('/x/file.avro') == ('needs_header', None)


def test_parse_hour_errors_are_one_line():
    with pytest.raises(UsageError, match='--start must be YYYY-MM-DD'):
        parse_hour('2024/01/01', '--start')


@pytest.mark.parametrize('fullname,expected', [
    ('dataexport.S3.inner.users.messages.email.Send', 'users.messages.email.Send'),
    ('users.messages.email.Send', 'users.messages.email.Send'),
    ('dataexport.GCS.inner.users.canvas.Conversion', 'users.canvas.Conversion'),
    ('dataexport.S3.inner.users.canvas.experimentstep.Conversion', None),
    ('Send', None),
    ('dataexport.S3.inner.users.messages.email.Abort', None),
])
def test_schema_name_fallback(fullname, expected):
    assert event_type_from_schema_name(fullname) == expected
