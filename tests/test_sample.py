"""The sample generator must write what Braze writes, and report exactly what it wrote.

End-to-end tests trust SampleReport as ground truth, so these tests re-read every file independently.
"""
import collections
import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import fastavro
import pytest

from devtools import sample
from transforms.events import EVENTS

REPO = Path(__file__).resolve().parents[1]
TYPES = [e.currents_type for e in EVENTS]

NEW_LAYOUT = re.compile(
    r'currents/(dataexport\.prod-01\.GCS\.integration\.[0-9a-f]{24})/event_type=([\w.]+)/'
    r'date=(\d{4}-\d\d-\d\d-\d\d)/version=10/us-01/\1\+\d+\+\d+\.avro$')
OLD_LAYOUT = re.compile(
    r'currents/(dataexport\.prod-01\.GCS\.integration\.[0-9a-f]{24})/event_type=([\w.]+)/'
    r'date=(\d{4}-\d\d-\d\d-\d\d)/\d+/us-01/\1\+\d+\+\d+\.avro$')


def read(path):
    with open(path, 'rb') as fh:
        r = fastavro.reader(fh)
        return r, list(r)


def path_parts(path):
    rel = Path(path).as_posix()
    m = NEW_LAYOUT.search(rel) or OLD_LAYOUT.search(rel)
    assert m, path
    return m.group(2), m.group(3), bool(OLD_LAYOUT.search(rel))


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp('corpus')
    report = sample.generate(out, events=3000, seed=7, hours=3, events_per_file=400,
                             start_hour='2024-05-01-22')
    return out, report


# --- schemas -----------------------------------------------------------------------------------

def test_one_schema_per_event_type():
    files = sorted(p.name for p in sample.SCHEMA_DIR.glob('*.avsc'))
    assert len(files) == 34
    assert files == sorted(f'{t}.avsc' for t in TYPES)


@pytest.mark.parametrize('currents_type', TYPES)
def test_schema_parses_and_has_identity_fields(currents_type):
    schema = sample.load_schema(currents_type)
    fastavro.parse_schema(schema)
    ns, name = currents_type.rsplit('.', 1)
    assert (schema['namespace'], schema['name']) == (f'dataexport.S3.inner.{ns}', name)
    types = {f['name']: f['type'] for f in schema['fields']}
    assert types['id'] == 'string'
    assert types['time'] == 'int'
    assert types['external_user_id'] == ['null', 'string']
    # user_id is required everywhere except inbound SMS (Braze's writer schemas)
    expected_user = ['null', 'string'] if currents_type == 'users.messages.sms.InboundReceive' else 'string'
    assert types['user_id'] == expected_user
    for f in schema['fields']:
        if isinstance(f['type'], list):
            assert f['type'][0] == 'null' and f.get('default', 'missing') is None, f
        else:
            assert 'default' not in f, f
    # every field an event forwards exists in its schema (card_id <- content_card_id, link_url <- url)
    spec = next(e for e in EVENTS if e.currents_type == currents_type)
    for _, avro_field in spec.properties:
        assert avro_field in types, avro_field


def test_schema_spot_checks():
    """A few types in Braze's writer schemas that are easy to get wrong."""
    def fields(t):
        return {f['name']: f['type'] for f in sample.load_schema(t)['fields']}
    click = fields('users.messages.email.Click')
    assert len(click) == 34 and click['email_address'] == 'string'
    assert click['suspected_bot_click_reason'] == ['null', {'type': 'array', 'items': 'string'}]
    inbound = fields('users.messages.sms.InboundReceive')
    assert inbound['media_urls'] == ['null', {'type': 'array', 'items': ['null', 'string']}]
    assert inbound['app_group_id'] == 'string'
    assert fields('users.canvas.Entry')['in_control_group'] == 'boolean'
    assert fields('users.campaigns.Conversion')['conversion_behavior_index'] == ['null', 'int']
    assert fields('users.messages.contentcard.Send')['content_card_id'] == 'string'
    assert len(fields('users.behaviors.Uninstall')) == 7
    assert sample.TYPE_WEIGHTS.keys() == set(TYPES)


# --- corpus content ----------------------------------------------------------------------------

def test_counts_match_report(corpus):
    out, report = corpus
    on_disk = sorted(str(p) for p in Path(out).rglob('*.avro'))
    assert on_disk == sorted(report.files + report.other_files)
    by_type = collections.defaultdict(lambda: {'events': 0, 'eligible': 0})
    ids, eligible_ids, partitions = set(), set(), set()
    for path in report.files:
        t, hour, _ = path_parts(path)
        r, recs = read(path)
        assert recs, 'Braze never writes empty files'
        assert len(recs) <= 400
        assert r.writer_schema['name'] == f'dataexport.S3.inner.{t}'
        partitions.add((t, hour))
        for rec in recs:
            ids.add(rec['id'])
            by_type[t]['events'] += 1
            ext = rec['external_user_id']
            if ext is not None and ext.strip():
                by_type[t]['eligible'] += 1
                eligible_ids.add(rec['id'])
    assert report.events == 3000 == sum(v['events'] for v in by_type.values()) == len(ids)
    assert report.eligible == len(eligible_ids) == len(report.eligible_ids)
    assert eligible_ids == report.eligible_ids
    assert {t: v for t, v in report.by_type.items()} == dict(by_type)
    assert report.partitions == partitions
    assert report.root and all(p.startswith(report.root) for p in report.files)


def test_every_type_present_and_weighted(corpus):
    _, report = corpus
    assert set(report.by_type) == set(TYPES)
    counts = {t: v['events'] for t, v in report.by_type.items()}
    assert all(n >= 1 for n in counts.values())
    assert counts['users.messages.email.Send'] > 10 * counts['users.behaviors.Uninstall']
    assert counts['users.messages.pushnotification.Send'] > 10 * counts['users.messages.newsfeedcard.Click']


def test_both_layouts_and_hours(corpus):
    _, report = corpus
    layouts = collections.Counter(path_parts(p)[2] for p in report.files)
    assert layouts[True] and layouts[False]
    assert 0.1 < layouts[True] / len(report.files) < 0.4
    hours = {path_parts(p)[1] for p in report.files}
    assert hours == {'2024-05-01-22', '2024-05-01-23', '2024-05-02-00'}


def test_time_within_queue_hour(corpus):
    _, report = corpus
    early = 0
    for path in report.files:
        _, hour, _ = path_parts(path)
        start = int(dt.datetime.strptime(hour, '%Y-%m-%d-%H').replace(tzinfo=dt.timezone.utc).timestamp())
        for rec in read(path)[1]:
            assert isinstance(rec['time'], int)
            assert start - 600 <= rec['time'] < start + 3600
            early += rec['time'] < start
    assert 0 < early < 300


def test_identity_fields(corpus):
    _, report = corpus
    n = none = blank = 0
    for path in report.files:
        for rec in read(path)[1]:
            n += 1
            assert re.fullmatch(r'[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}', rec['id'])
            if rec['user_id'] is not None:
                assert re.fullmatch(r'[0-9a-f]{24}', rec['user_id'])
            none += rec['external_user_id'] is None
            blank += rec['external_user_id'] == ''
    assert 0.06 < (none + blank) / n < 0.16
    assert blank > 0 and none > blank
    assert report.eligible == n - none - blank


def test_values_look_real(corpus):
    _, report = corpus
    seen = collections.defaultdict(list)
    for path in report.files:
        for rec in read(path)[1]:
            for k, v in rec.items():
                seen[k].append(v)
    for k in ('campaign_name', 'canvas_name'):
        names = [v for v in seen[k] if v is not None]
        assert names and all(20 <= len(v) <= 60 for v in names)
    urls = [v for v in seen['url'] if v is not None]
    assert urls and all(80 <= len(u) <= 200 and u.startswith('https://') for u in urls)
    uas = [v for v in seen['user_agent'] if v is not None]
    assert uas and 100 <= sum(map(len, uas)) / len(uas) <= 150
    assert all(re.fullmatch(r'[^@\s]+@[\w.-]+\.\w+', e) for e in seen['email_address'] if e is not None)
    phones = [v for k in ('to_phone_number', 'user_phone_number') for v in seen[k] if v is not None]
    assert phones and all(re.fullmatch(r'\+[1-9]\d{7,14}', p) for p in phones)
    for k in ('campaign_id', 'canvas_id', 'send_id', 'content_card_id'):
        assert all(re.fullmatch(r'[0-9a-f-]{36}', v) for v in seen[k] if v is not None), k
    assert set(seen['in_control_group']) == {True, False}
    timezones = seen['timezone']
    assert 0.1 < timezones.count(None) / len(timezones) < 0.3


def test_other_type_files(corpus):
    _, report = corpus
    assert len(report.other_files) == 2
    for path in report.other_files:
        t, _, _ = path_parts(path)
        assert t in sample.OTHER_TYPES and t not in TYPES
        assert f'/event_type={t}/' in Path(path).as_posix()
        r, recs = read(path)
        assert recs and r.writer_schema['name'] == f'dataexport.S3.inner.{t}'
        assert {'id', 'user_id', 'external_user_id', 'time'} <= set(recs[0])
        assert not {rec['id'] for rec in recs} & report.eligible_ids
    assert report.other_events == sum(len(read(p)[1]) for p in report.other_files)


# --- determinism, codecs, edge cases -----------------------------------------------------------

def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in Path(root).rglob('*.avro')}


def test_deterministic_per_seed(tmp_path):
    a = sample.generate(tmp_path / 'a', events=500, seed=3)
    b = sample.generate(tmp_path / 'b', events=500, seed=3)
    c = sample.generate(tmp_path / 'c', events=500, seed=4)
    assert _tree(tmp_path / 'a') == _tree(tmp_path / 'b')
    assert a.eligible_ids == b.eligible_ids
    assert not set(_tree(tmp_path / 'a')) & set(_tree(tmp_path / 'c'))
    assert not a.eligible_ids & c.eligible_ids


@pytest.mark.parametrize('codec', ['deflate', 'snappy'])
def test_codecs_readable(tmp_path, codec):
    report = sample.generate(tmp_path, events=200, seed=1, codec=codec)
    total = 0
    for path in report.files + report.other_files:
        r, recs = read(path)
        assert r.codec == codec
        total += len(recs) if path in report.files else 0
    assert total == report.events == 200


def test_fewer_events_than_types(tmp_path):
    report = sample.generate(tmp_path, events=5, seed=1, other_type_files=0)
    assert report.events == 5 and len(report.files) == 5
    assert sum(v['events'] for v in report.by_type.values()) == 5
    empty = sample.generate(tmp_path / 'empty', events=0, other_type_files=1)
    assert empty.events == 0 and not empty.files and len(empty.other_files) == 1


def test_no_external_fraction_extremes(tmp_path):
    assert sample.generate(tmp_path / 'all', events=100, no_external_fraction=0).eligible == 100
    assert sample.generate(tmp_path / 'none', events=100, no_external_fraction=1).eligible == 0


@pytest.mark.parametrize('kwargs', [
    {'events': -1}, {'hours': 0}, {'codec': 'zstd'}, {'events_per_file': 0},
    {'no_external_fraction': 1.5}, {'old_layout_fraction': -0.1}, {'start_hour': '2024-13-01-00'},
    {'other_type_files': -1}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        sample.generate(tmp_path, **kwargs)


# --- CLI -----------------------------------------------------------------------------------------

def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, '-m', 'devtools.sample', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli(tmp_path):
    res = _cli('--output', str(tmp_path), '--events', '300', '--seed', '5', '--start-hour', '2024-06-01-10',
               '--hours', '2', '--codec', 'deflate', '--events-per-file', '100', '--no-external-fraction', '0.2')
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    fields = dict(kv.split('=', 1) for kv in lines[0].split())
    assert fields['events'] == '300'
    expected = sample.generate(tmp_path / 'again', events=300, seed=5, start_hour='2024-06-01-10', hours=2,
                               codec='deflate', events_per_file=100, no_external_fraction=0.2)
    assert int(fields['files']) == len(expected.files)
    assert int(fields['eligible']) == expected.eligible
    assert {Path(p).name for p in tmp_path.glob('currents/*/event_type=*/date=2024-06-01-1[01]/*/*/*.avro')} \
        == {Path(p).name for p in expected.files + expected.other_files}


def test_cli_deliberate_gaps(tmp_path):
    res = _cli('--output', str(tmp_path / 'a'), '--events', '400', '--hours', '3',
               '--deliberate-gaps')
    assert res.returncode == 2 and res.stderr.strip().endswith(
        'error: deliberate gaps need at least 4 hours, got 3')
    res = _cli('--output', str(tmp_path / 'b'), '--events', '2000', '--hours', '4', '--seed', '2',
               '--deliberate-gaps')
    assert res.returncode == 0, res.stderr
    fields = dict(kv.split('=', 1) for kv in res.stdout.split())
    expected = sample.generate(tmp_path / 'c', events=2000, seed=2, hours=4,
                               gaps=sample.deliberate_gaps(4))
    assert int(fields['rejected']) == expected.rejected > 0
    assert int(fields['events']) == expected.events < 2000      # the missing hours' events
    assert int(fields['eligible']) == expected.eligible == len(expected.eligible_ids)
    hours = {(t, h) for t, h in expected.partitions}
    assert ('users.messages.email.Open', '2024-05-01-02') not in hours
    assert ('users.messages.email.Open', '2024-05-01-03') in hours
    assert ('users.messages.sms.Delivery', '2024-05-01-03') not in hours
    assert ('users.messages.sms.Delivery', '2024-05-01-02') in hours


@pytest.mark.parametrize('args', [
    ['--events', '10'],                                  # no --output
    ['--output', 'x', '--events', 'many'],
    ['--output', 'x', '--codec', 'lz4'],
    ['--output', 'x', '--start-hour', 'yesterday'],
    ['--output', 'x', '--no-external-fraction', '2'],
])
def test_cli_bad_args(tmp_path, args):
    args = [str(tmp_path / a) if a == 'x' else a for a in args]
    res = _cli(*args)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and 'error' in res.stderr
    assert not res.stdout


# --- the `current` profile: 80 types with Braze's real writer schemas ------------------------------

@pytest.fixture(scope='module')
def current_corpus(tmp_path_factory):
    from tests.conftest import SHARED
    if not (SHARED / 'currents-schemas').is_dir():
        pytest.fail(f'Braze writer schemas not found at {SHARED} (set CURRENTS_SHARED)')
    out = tmp_path_factory.mktemp('current')
    return out, sample.generate(out, events=1500, seed=5, hours=2, events_per_file=300,
                                mapping='current', other_type_files=5)


@pytest.mark.slow
def test_current_corpus_writes_all_80_types_with_their_real_schemas(current_corpus):
    import json
    from tests.conftest import SHARED
    from transforms.profiles import currents_types
    out, report = current_corpus
    types = set(currents_types('current'))
    assert len(types) == 80
    seen = set()
    for path in report.files:
        t, _, _ = path_parts(path)
        seen.add(t)
        r, recs = read(path)
        braze = json.loads((SHARED / 'currents-schemas' / f'{t}.avsc').read_text())
        parsed = fastavro.parse_schema(braze)
        assert r.writer_schema['name'] == parsed['name'] == f'dataexport.S3.inner.{t}'
        assert [(f['name'], f['type']) for f in r.writer_schema['fields']] == \
            [(f['name'], f['type']) for f in parsed['fields']]
        for rec in recs:
            assert rec['id'] in report.eligible_ids or not (rec['external_user_id'] or '').strip()
    assert seen == types == {t for t, v in report.by_type.items() if v['events']}
    assert report.events == 1500 == sum(v['events'] for v in report.by_type.values())
    # Other files are types the current profile skips.
    assert len(report.other_files) == 5
    assert not {path_parts(p)[0] for p in report.other_files} & types


@pytest.mark.slow
def test_current_corpus_is_deterministic_and_classic_unchanged(tmp_path):
    a = sample.generate(tmp_path / 'a', events=200, seed=9, mapping='current')
    b = sample.generate(tmp_path / 'b', events=200, seed=9, mapping='current')
    rel = lambda report, root: sorted(os.path.relpath(p, root) for p in report.files)  # noqa: E731
    assert rel(a, tmp_path / 'a') == rel(b, tmp_path / 'b')
    for pa in a.files:
        pb = str(tmp_path / 'b' / os.path.relpath(pa, tmp_path / 'a'))
        assert Path(pa).read_bytes() == Path(pb).read_bytes()
    classic = sample.generate(tmp_path / 'c', events=200, seed=9)
    assert {path_parts(p)[0] for p in classic.files} == set(TYPES)


def test_current_mapping_needs_the_shared_schemas_when_asked_for_braze_ones(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv('CURRENTS_SHARED', str(tmp_path / 'nowhere'))
    with pytest.raises(ValueError, match='CURRENTS_SHARED'):
        sample.generate(tmp_path / 'x', events=10, mapping='current', lookalike=False)
    with pytest.raises(ValueError, match='mapping'):
        sample.generate(tmp_path / 'x', events=10, mapping='newest')


def test_without_braze_schemas_current_types_get_lookalike_ones_from_the_repository(tmp_path,
                                                                                   monkeypatch):
    """A clone on its own (no ../shared): every `current` type is still written, with the
    project's own schema where it has one and otherwise the fields the mapping table reads,
    and every eligible record maps with the `current` mapper."""
    from transforms.mapping import mapper_for
    from transforms.profiles import CURRENT_EVENTS, currents_types
    monkeypatch.setenv('CURRENTS_SHARED', str(tmp_path / 'nowhere'))
    report = sample.generate(tmp_path / 'x', events=160, seed=2, mapping='current',
                             other_type_files=0)
    assert report.lookalike
    assert {path_parts(p)[0] for p in report.files} == set(currents_types('current'))
    mapper, mapped = mapper_for('current'), 0
    for path in report.files:
        t, _, _ = path_parts(path)
        r, recs = read(path)
        spec = next(s for s in CURRENT_EVENTS if s.currents_type == t)
        names = {f['name'] for f in r.writer_schema['fields']}
        own = Path(sample.SCHEMA_DIR / f'{t}.avsc').is_file()
        if not own:   # the project's own copies keep their fields; the others read all
            assert {f for _, f in spec.context + spec.properties} \
                - set(spec.absent_from_writer_schema) <= names
        for rec in recs:
            if rec['id'] in report.eligible_ids:
                assert mapper.to_message(t, rec)['messageId'] == rec['id']
                mapped += 1
    assert mapped == report.eligible > 0
    # The command says so, in one line on stderr.
    res = _cli('--output', str(tmp_path / 'y'), '--events', '100', '--mapping', 'current')
    assert res.returncode == 0, res.stderr
    assert res.stderr.count('\n') == 1 and 'look-alike schemas made from the repository' in \
        res.stderr
