"""Property tests (hypothesis) over the read and map path: no file or record content crashes it.

1. Arbitrary byte-level mutations of valid Currents files (flips, truncation, insertion, deletion,
   block counts and sizes overwritten) fed to the real read DoFn (`ReadCurrentsFileFn` on a local
   file) and then the real map DoFn (`MapToSegmentFn`): never an exception; the decoded records
   come first, then at most one `unreadable_file` reject naming how many decoded; every record
   becomes a serialized message or a JSON-safe reject.
2. Arbitrary records (None, unicode incl. control characters and astral code points, huge ints,
   bools, floats, bytes, lists, maps) through `MessageMapper.to_message`: nothing but `Invalid`
   is raised, and a message serializes to JSON that round-trips.

Deterministic (derandomized, no example database) and bounded: FUZZ_EXAMPLES multiplies the
example counts (default 1: 1,500 file mutations and 1,500 records, about 15 s); FUZZ_RANDOM=1
draws fresh random examples instead (for longer hunts). Crashes found become named regression
tests at the end of this file.
"""
import datetime
import io
import json
import os
import re
import tempfile
from pathlib import Path

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.sample import load_schema
from tests import bad_inputs
from transforms.events import BY_CURRENTS_TYPE, COMMON_PROPERTIES, EVENTS
from transforms.map import MapToSegmentFn
from transforms.mapping import DROPPED, Invalid, MessageMapper, serialize
from transforms.model import (INVALID_RECORD, MESSAGE_ID_TOO_LONG, REASONS, UNREADABLE_FILE,
                              CurrentsEvent, SegmentMessage)
from transforms.read import ReadCurrentsFileFn

SCALE = float(os.environ.get('FUZZ_EXAMPLES', '1'))
TYPES = frozenset(BY_CURRENTS_TYPE)
ISO_MS = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$')
YEAR_1000, YEAR_10000 = -30610224000, 253402300800   # Unix seconds of 1000-01-01, 10000-01-01


def _settings(n):
    return settings(max_examples=max(10, int(n * SCALE)), deadline=None,
                    derandomize=not os.environ.get('FUZZ_RANDOM'),
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _base_files():
    """Small valid files of a few types, codecs and schema variants, several blocks each."""
    out = []
    specs = (('users.messages.email.Click', 'null', None),
             ('users.canvas.Entry', 'deflate', None),
             ('users.messages.sms.InboundReceive', 'snappy', None),
             ('users.messages.sms.Send', 'null', ('id', 'time', 'user_id')))
    for k, (t, codec, nullable) in enumerate(specs):
        schema = load_schema(t)
        if nullable:
            schema = bad_inputs.nullable_variant(schema, *nullable)
        rows = [bad_inputs.fit(schema, bad_inputs.plain_record(
            f'f{k}', i, bad_inputs.external_for(i),
            campaign_name=bad_inputs.nasty('c', i))) for i in range(30)]
        out.append((t, bad_inputs.avro(schema, rows, codec=codec, sync_interval=600)))
    return out


BASES = _base_files()


def _mutate(data: bytes, ops) -> bytes:
    d = bytearray(data)
    layout = bad_inputs.block_layout(data)
    for op in ops:
        kind, a, b = op
        if not d and kind != 'insert':
            continue
        pos = a % max(1, len(d))
        if kind == 'flip':
            d[pos] ^= (b % 255) + 1
        elif kind == 'set':
            d[pos] = b % 256
        elif kind == 'truncate':
            del d[pos:]
        elif kind == 'insert':
            d[pos:pos] = b
        elif kind == 'delete':
            del d[pos:pos + b]
        elif kind in ('block_count', 'block_size'):
            # Overwrite a block header varint of the original layout (if still in range).
            start = layout[a % len(layout)][0]
            if start + 20 > len(d):
                continue
            try:   # earlier ops may have shifted or damaged the varints: then skip this op
                n_count = bad_inputs._varint_len(bytes(d[start:start + 10]))
                n_size = bad_inputs._varint_len(bytes(d[start + n_count:start + n_count + 10]))
            except ValueError:
                continue
            if kind == 'block_count':
                d[start:start + n_count] = bad_inputs._zigzag(b)
            else:
                d[start + n_count:start + n_count + n_size] = bad_inputs._zigzag(b)
    return bytes(d)


position = st.integers(0, 2 ** 20)
any_long = st.one_of(st.integers(-2 ** 63, 2 ** 63 - 1), st.integers(-3, 300))
mutation = st.one_of(
    st.tuples(st.just('flip'), position, st.integers(0, 254)),
    st.tuples(st.just('set'), position, st.integers(0, 255)),
    st.tuples(st.just('truncate'), position, st.just(0)),
    st.tuples(st.just('insert'), position, st.binary(min_size=1, max_size=24)),
    st.tuples(st.just('delete'), position, st.integers(1, 200)),
    st.tuples(st.just('block_count'), st.integers(0, 50), any_long),
    st.tuples(st.just('block_size'), st.integers(0, 50), any_long),
)


@pytest.fixture(scope='module')
def workdir():
    with tempfile.TemporaryDirectory(prefix='fuzz-') as d:
        yield Path(d)


def read_then_map(path: str, event_type):
    """The real read DoFn, then the real map DoFn, outside a runner. Returns (events, reject,
    mapped outputs). Raises if the read yields anything but events then one file reject."""
    reader = ReadCurrentsFileFn(TYPES)
    mapper = MapToSegmentFn('', 'fuzz')
    mapper.setup()
    out = list(reader.process((path, event_type)))
    events = [o for o in out if isinstance(o, CurrentsEvent)]
    tagged = [o for o in out if not isinstance(o, CurrentsEvent)]
    assert len(events) + len(tagged) == len(out)
    assert len(tagged) <= 1, 'more than one reject for one file'
    if tagged:
        assert out[-1] is tagged[0], 'a record came after the file reject'
    mapped = []
    for event in events:
        mapped += list(mapper.process(event))
    return events, (tagged[0] if tagged else None), mapped


@_settings(1500)
@given(base=st.integers(0, len(BASES) - 1), ops=st.lists(mutation, min_size=1, max_size=4),
       typed=st.booleans())
def test_mutated_avro_files_never_crash_read_or_map(workdir, base, ops, typed):
    event_type, data = BASES[base]
    path = workdir / 'mutated.avro'
    path.write_bytes(_mutate(data, ops))
    events, reject, mapped = read_then_map(str(path), event_type if typed else None)
    if reject is not None:
        assert reject.tag == 'rejects'
        r = reject.value
        assert r.reason == UNREADABLE_FILE and r.source == str(path) and r.is_file
        where = 'no records decoded' if not events else f'{len(events)} records decoded before'
        assert r.detail.endswith(f'({where})'), r.detail
        json.loads(r.to_json())
    for event in events:
        assert event.event_type in TYPES and event.source == str(path)
    for o in mapped:
        if isinstance(o, SegmentMessage):
            message = json.loads(o.payload)
            assert message['messageId'] == o.message_id and message['type'] == 'track'
        else:
            assert o.tag == 'rejects' and o.value.reason in REASONS
            row = json.loads(o.value.to_json())
            assert row['reason'] in (INVALID_RECORD, MESSAGE_ID_TOO_LONG)


# -- arbitrary records through the mapper ----------------------------------------------------------
ALL_FIELDS = sorted({f['name'] for e in EVENTS for f in load_schema(e.currents_type)['fields']})
text = st.text(st.characters(codec='utf-8'), max_size=40)
scalar = st.one_of(st.none(), st.booleans(), st.integers(),
                   st.integers(-2 ** 70, 2 ** 70), st.floats(), text,
                   st.sampled_from(['', ' ', '\t\n', '\u3000', '\x00', '\u200b', '\ufeff', 'é']))
value = st.one_of(scalar, st.binary(max_size=12), st.lists(text, max_size=3),
                  st.dictionaries(text, st.one_of(text, st.integers(), st.none()), max_size=2))
times = st.one_of(value, st.integers(-2 ** 40, 2 ** 40),
                  st.sampled_from([0, -1, 1714564800, 2 ** 31 - 1, -2 ** 31, YEAR_10000 - 1,
                                   YEAR_1000, 2 ** 62, -2 ** 63, 2 ** 63 - 1]))
ids = st.one_of(value, st.text(st.characters(codec='utf-8'), min_size=95, max_size=105))
record_strategy = st.fixed_dictionaries(
    {}, optional={**{name: value for name in ALL_FIELDS},
                  'id': ids, 'time': times, 'external_user_id': value, 'user_id': value})


def _blank(v):
    return v is None or (isinstance(v, str) and not v.strip())


@_settings(1500)
@given(event_type=st.sampled_from(sorted(TYPES)), record=record_strategy,
       prefix=st.sampled_from(['', 'dev-', 'p' * 90]))
def test_arbitrary_records_map_or_raise_invalid_and_round_trip(event_type, record, prefix):
    spec = BY_CURRENTS_TYPE[event_type]
    try:
        message = MessageMapper(prefix, '1.0').to_message(event_type, record)
    except Invalid as exc:
        assert exc.reason in (INVALID_RECORD, MESSAGE_ID_TOO_LONG)
        assert not _blank(record.get('external_user_id'))
        return
    if message is DROPPED:
        assert _blank(record.get('external_user_id'))
        return
    payload = serialize(message)
    assert json.loads(payload) == message                      # JSON round-trips
    assert json.loads(json.dumps(message)) == message
    assert message['type'] == 'track' and message['event'] == spec.segment_event
    assert isinstance(message['messageId'], str) and 0 < len(message['messageId']) <= 100
    assert message['messageId'].startswith(prefix)
    assert isinstance(message['userId'], str) and message['userId'].strip()
    if 'anonymousId' in message:
        assert isinstance(message['anonymousId'], str) and message['anonymousId'].strip()
    allowed = set(COMMON_PROPERTIES) | {name for name, _ in spec.properties}
    assert set(message['properties']) <= allowed
    assert all(isinstance(v, str) for v in message['properties'].values())
    t = record['time']
    assert isinstance(t, int) and not isinstance(t, bool)
    if YEAR_1000 <= t < YEAR_10000:   # outside: see test_regression_time_outside_iso_years
        assert ISO_MS.match(message['timestamp'])
        parsed = datetime.datetime.fromisoformat(message['timestamp'].replace('Z', '+00:00'))
        assert int(parsed.timestamp()) == t
    if spec.is_email and record.get('email_address') is not None:
        assert isinstance(message['context']['traits']['email'], str)
    else:
        assert 'traits' not in message['context']


# -- named regression tests for what fuzzing found ------------------------------------------------
@pytest.mark.parametrize('seconds', [YEAR_10000, 10 ** 12, YEAR_1000 - 1, -62135596801])
def test_regression_time_outside_iso_years_is_an_invalid_record(seconds):
    rec = bad_inputs.plain_record('t', 1, time=seconds)
    try:
        message = MessageMapper().to_message('users.canvas.Entry', rec)
    except Invalid as exc:
        assert exc.reason == INVALID_RECORD
        return
    assert ISO_MS.match(message['timestamp']), message['timestamp']


def test_regression_long_time_within_range_is_exact():
    """Companion of the regression above: a `long` time maps exactly at the edges of the valid
    range, and times gmtime cannot represent are already invalid_record."""
    mapper = MessageMapper()
    for seconds, expected in ((YEAR_10000 - 1, '9999-12-31T23:59:59.000Z'),
                              (YEAR_1000, '1000-01-01T00:00:00.000Z'),
                              (-1, '1969-12-31T23:59:59.000Z'),
                              (2 ** 31, '2038-01-19T03:14:08.000Z')):
        rec = bad_inputs.plain_record('t', 1, time=seconds)
        assert mapper.to_message('users.canvas.Entry', rec)['timestamp'] == expected
    for absurd in (2 ** 62, -2 ** 62, 2 ** 63 - 1):
        with pytest.raises(Invalid) as info:
            mapper.to_message('users.canvas.Entry', bad_inputs.plain_record('t', 1, time=absurd))
        assert info.value.reason == INVALID_RECORD


def test_fuzz_bases_are_valid_multi_block_files():
    for event_type, data in BASES:
        assert len(bad_inputs.block_layout(data)) >= 3
        assert len(list(fastavro.reader(io.BytesIO(data)))) == 30
