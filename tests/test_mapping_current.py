"""The `current` mapping profile: Braze's connector as documented today, for 80 event types.

Expected messages are derived here, plainly, from the shared reference file (not from the
package's copy of it), and compared with what the whole pipeline writes, value types included.
"""
import io
import json

import fastavro
import pytest

from pipeline.main import run
from pipeline.options import settings_from
from pipeline.paths import UsageError
from pipeline.listing import Listing
from pipeline.plan import make_plan
from pipeline.summary import Summary
from devtools.sample import load_schema
from tests.conftest import SHARED
from tests.helpers import balanced, read_bodies, record, run_pipeline, write_file
from transforms import counts
from transforms.mapping import (DROPPED, CurrentMessageMapper, Invalid, MessageMapper,
                                iso_timestamp, mapper_for, serialize)
from transforms.model import INVALID_RECORD
from transforms.profiles import CURRENT_TABLE, currents_types
from apache_beam.options.pipeline_options import PipelineOptions

REFERENCE = SHARED / 'reference' / 'connector-current.json'
SCHEMAS = SHARED / 'currents-schemas'


def reference():
    if not REFERENCE.is_file():
        pytest.fail(f'reference table not found at {REFERENCE} (set CURRENTS_SHARED)')
    return json.loads(REFERENCE.read_text())


ENTRIES = {e['currents_type']: e for e in reference()['events']}
TYPES = sorted(ENTRIES)


def writer_schema(event_type):
    return json.loads((SCHEMAS / f'{event_type}.avsc').read_text())


def expected_message(entry, rec, version, prefix=''):
    """The reference written out: top level as classic, context paths and typed properties."""
    event = entry['segment_event'] if entry['segment_event'] is not None else rec['name']
    message = {'type': 'track', 'event': event}
    if rec.get('external_user_id'):
        message['userId'] = rec['external_user_id']
    if rec.get('user_id'):
        message['anonymousId'] = rec['user_id']
    message['messageId'] = prefix + rec['id']
    message['timestamp'] = iso_timestamp(rec['time'])
    message['properties'] = {name: rec[field] for name, field in entry['properties'].items()
                             if rec.get(field) is not None}
    context = {}
    for path, field in entry['context'].items():
        if rec.get(field) is not None:
            _, obj, key = path.split('.')
            context.setdefault(obj, {})[key] = rec[field]
    context['library'] = {'name': 'currents-to-segment', 'version': version}
    message['context'] = context
    return message


def assert_typed_equal(actual, expected, where='message'):
    """Equal, and of the same JSON type everywhere (True is not 1, 1 is not 1.0 or "1")."""
    assert type(actual) is type(expected), f'{where}: {actual!r} vs {expected!r}'
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f'{where}: keys {sorted(actual)} vs {sorted(expected)}'
        for key in expected:
            assert_typed_equal(actual[key], expected[key], f'{where}.{key}')
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_typed_equal(a, e, f'{where}[{i}]')
    else:
        assert actual == expected, where


def _branch(ftype):
    """The non-null branch of a field's type, and whether the field is nullable."""
    if isinstance(ftype, list):
        rest = [t for t in ftype if t != 'null']
        return rest[0], 'null' in ftype
    return ftype, False


def _value(name, ftype, index):
    """A typed, distinct, non-null value for one field (False and 0 included on purpose)."""
    if isinstance(ftype, dict) and ftype.get('type') == 'array':
        items, nullable = _branch(ftype['items'])
        return [f'{name}-a', None] if nullable else [f'{name}-a', f'{name}-b']
    if ftype == 'boolean':
        return index % 2 == 0
    if ftype in ('int', 'long'):
        return index if ftype == 'int' else 2 ** 40 + index
    if ftype in ('float', 'double'):
        return 0.1 * (index + 1)        # not exact in binary: written as Avro decodes it
    return f'{name}-value'


def full_and_sparse(event_type, schema):
    """Every field set (typed, non-null) / every nullable field null."""
    full, sparse = {}, {}
    for index, f in enumerate(schema['fields']):
        branch, nullable = _branch(f['type'])
        full[f['name']] = _value(f['name'], branch, index)
        sparse[f['name']] = None if nullable else full[f['name']]
    for rec, kind in ((full, 'full'), (sparse, 'sparse')):
        rec.update(id=f'{event_type}-{kind}', time=1714564800, external_user_id='ext-1')
        rec['user_id'] = 'user-1'
    if 'name' in full:
        full['name'] = sparse['name'] = 'Added To Cart'
    return full, sparse


def decoded(path):
    with open(path, 'rb') as f:
        return list(fastavro.reader(f))


# --- the table ----------------------------------------------------------------------------------

def test_current_table_is_the_reference_file():
    assert CURRENT_TABLE.read_bytes() == REFERENCE.read_bytes()
    assert len(TYPES) == 80 == len(set(currents_types('current')))
    assert set(currents_types('current')) == set(TYPES)


def test_every_type_has_a_real_writer_schema_and_the_table_matches_it():
    for event_type, entry in ENTRIES.items():
        fields = {f['name'] for f in writer_schema(event_type)['fields']}
        missing = {name for name, field in entry['properties'].items() if field not in fields}
        assert missing == set(entry['properties_absent_from_writer_schema']), event_type
        assert set(entry['context'].values()) <= fields, event_type


# --- all 80 types through Avro and the whole pipeline ---------------------------------------------

@pytest.fixture(scope='module')
def current_run(tmp_path_factory):
    """One dry run of a tree holding, per type, a full and a sparse record (real schemas),
    plus the edge cases below; everything mapped with --mapping current."""
    import pipeline
    tmp = tmp_path_factory.mktemp('current')
    root = tmp / 'in'
    files = {}
    for event_type in TYPES:
        schema = writer_schema(event_type)
        files[event_type] = write_file(root, event_type, list(full_and_sparse(event_type, schema)),
                                       schema=schema)
    # time is a long for WhatsApp: the year 1000-9999 range still holds, at its exact ends.
    wa = 'users.messages.whatsapp.Send'
    wa_schema = writer_schema(wa)
    base = full_and_sparse(wa, wa_schema)[1]
    edges = [dict(base, id=f'wa-{t}', time=t) for t in
             (253402300799, 253402300800, -30610224000, -30610224001, 1714564800000)]
    files['edges'] = write_file(root, wa, edges, n=1, schema=wa_schema)
    # Custom events: a name, a blank name, a null name (a drifted schema allows it).
    ce = 'users.behaviors.CustomEvent'
    ce_schema = writer_schema(ce)
    for f in ce_schema['fields']:
        if f['name'] == 'name':
            f['type'] = ['null', 'string']
    ce_base = full_and_sparse(ce, ce_schema)[1]
    files['custom'] = write_file(root, ce, [
        dict(ce_base, id='ce-named', name='Viewed Product'),
        dict(ce_base, id='ce-blank', name='  '),
        dict(ce_base, id='ce-null', name=None),
        dict(ce_base, id='ce-dropped', name=None, external_user_id=None)], n=1, schema=ce_schema)
    code, summary, rejects, bodies = run_pipeline(tmp, root, '--mapping', 'current')
    messages = {m['messageId']: m for _, body in bodies for m in body['batch']}
    raw = b''.join((tmp / 'out' / 'bodies' / p.name).read_bytes()
                   for p in sorted((tmp / 'out' / 'bodies').glob('batch-*.json')))
    return {'code': code, 'summary': summary, 'rejects': rejects, 'messages': messages,
            'files': files, 'raw': raw, 'version': pipeline.__version__}


@pytest.mark.parametrize('event_type', TYPES)
def test_each_type_written_with_its_real_schema_maps_as_the_reference_says(current_run,
                                                                          event_type):
    entry = ENTRIES[event_type]
    records = decoded(current_run['files'][event_type])
    assert [r['id'] for r in records] == [f'{event_type}-full', f'{event_type}-sparse']
    for rec in records:
        message = current_run['messages'][rec['id']]
        assert_typed_equal(message, expected_message(entry, rec, current_run['version']),
                           rec['id'])
    full = current_run['messages'][f'{event_type}-full']
    # Every documented property the writer schema has is sent; the others are simply absent.
    assert set(full['properties']) == (set(entry['properties'])
                                       - set(entry['properties_absent_from_writer_schema']))
    assert full['event'] == (entry['segment_event'] or 'Added To Cart')


def test_the_run_balances_and_rows_follow_the_profile(current_run):
    s = current_run['summary']
    assert current_run['code'] == 0
    assert balanced(s)
    assert s['files_read'] == 82 and s['files_skipped'] == 0
    # 160 records of the 80 types + 5 WhatsApp edges + 4 custom events.
    assert s['read'] == 169
    assert s['dropped_no_external_user_id'] == 1
    assert s['rejected_by_reason'] == {INVALID_RECORD: 5}
    assert s['sent'] == 163
    by_event = s['by_event']
    # LINE and RCS share Aborted, Clicked and Sent: one row each, both types counted.
    for shared in ('Aborted', 'Clicked', 'Sent'):
        assert by_event[shared]['read'] == 4 and by_event[shared]['sent'] == 4
    assert by_event['Custom Event'] == {'read': 6, 'dropped_no_external_user_id': 1,
                                        'sent': 3, 'rejected': 2}
    assert by_event['Unsubscribed']['read'] == 2 and 'Email Unsubscribed' not in by_event
    assert len(by_event) == 80 - 3   # three names are shared by two types each


def test_custom_event_is_named_by_the_record(current_run):
    messages = current_run['messages']
    assert messages['ce-named']['event'] == 'Viewed Product'
    assert messages['ce-named']['properties']['name'] == 'Viewed Product'
    rows = {r['record']['id']: r for r in current_run['rejects'] if r.get('record')}
    for rid in ('ce-blank', 'ce-null'):
        row = rows[rid]
        assert row['reason'] == INVALID_RECORD and 'no name' in row['detail']
        assert row['event_type'] == 'users.behaviors.CustomEvent'
        assert row['mapping'] == 'current' and row['include_anonymous'] is False
    assert 'ce-dropped' not in messages and 'ce-dropped' not in rows


def test_long_time_keeps_the_year_range_at_its_exact_ends(current_run):
    messages = current_run['messages']
    assert messages['wa-253402300799']['timestamp'] == '9999-12-31T23:59:59.000Z'
    assert messages['wa--30610224000']['timestamp'] == '1000-01-01T00:00:00.000Z'
    rejected = {r['record']['id']: r for r in current_run['rejects'] if r.get('record')}
    for rid in ('wa-253402300800', 'wa--30610224001', 'wa-1714564800000'):
        assert rejected[rid]['reason'] == INVALID_RECORD
        assert 'out of range' in rejected[rid]['detail']


def test_booleans_and_numbers_stay_typed_in_the_bytes_sent(current_run):
    messages = current_run['messages']
    entry = messages['users.canvas.Entry-full']['properties']
    assert entry['in_control_group'] is True or entry['in_control_group'] is False
    purchase = messages['users.behaviors.Purchase-full']['properties']
    price = [r for r in decoded(current_run['files']['users.behaviors.Purchase'])][0]['price']
    assert type(price) is float and type(purchase['price']) is float
    assert purchase['price'] == price           # float32 as Avro decodes it, e.g. 0.1 -> 0.10000000149...
    failure = messages['users.messages.webhook.Failure-full']['properties']
    assert all(type(failure[k]) is int for k in ('http_status_code', 'retry_count'))
    raw = current_run['raw']
    # JSON literals, not strings: Segment and warehouses see booleans and numbers.
    in_control = json.dumps(entry['in_control_group'])
    assert f'"in_control_group":{in_control}'.encode() in raw
    assert f'"price":{json.dumps(price)}'.encode() in raw
    assert b'"in_control_group":"' not in raw
    click = messages['users.messages.email.Click-full']['properties']
    assert click['suspected_bot_click_reason'] == ['suspected_bot_click_reason-a',
                                                   'suspected_bot_click_reason-b']
    assert messages['users.messages.sms.InboundReceive-full']['properties']['media_urls'] == \
        ['media_urls-a', None]


def test_phone_and_device_context_only_from_non_null_fields(current_run):
    messages = current_run['messages']
    sms_full = messages['users.messages.sms.Send-full']['context']
    assert sms_full['traits'] == {'phone': 'to_phone_number-value'}
    sms_sparse = messages['users.messages.sms.Send-sparse']['context']
    assert set(sms_sparse) == {'library'}                  # no empty traits object
    inbound = messages['users.messages.sms.InboundReceive-full']['context']
    assert inbound['traits'] == {'phone': 'user_phone_number-value'}
    tapped = messages['users.messages.pushnotification.Open-full']['context']
    assert tapped['device'] == {'model': 'device_model-value', 'type': 'platform-value'}
    assert set(messages['users.messages.pushnotification.Open-sparse']['context']) == {'library'}


def test_one_null_device_field_leaves_only_the_other():
    mapper = CurrentMessageMapper()
    base = {'id': 'x', 'user_id': 'u', 'external_user_id': 'e', 'time': 1}
    only_type = mapper.to_message('users.behaviors.app.SessionStart',
                                  dict(base, platform='ios', device_model=None))
    assert only_type['context']['device'] == {'type': 'ios'}
    only_model = mapper.to_message('users.behaviors.app.SessionStart',
                                   dict(base, platform=None, device_model='iPhone15,2'))
    assert only_model['context']['device'] == {'model': 'iPhone15,2'}
    phone = mapper.to_message('users.messages.whatsapp.Read', dict(base, to_phone_number=None))
    assert 'traits' not in phone['context']
    # An empty string is a value (non-null): sent as is, never guessed away.
    blank = mapper.to_message('users.messages.whatsapp.Read', dict(base, to_phone_number=''))
    assert blank['context']['traits'] == {'phone': ''}


# --- Braze's own sample files ---------------------------------------------------------------------

def test_braze_samples_under_current_every_supported_type_mapped_rest_skipped(tmp_path,
                                                                             samples_dir):
    import pipeline
    folder = samples_dir / 'avro'
    code, summary, rejects, bodies = run_pipeline(tmp_path, folder, '--mapping', 'current')
    assert code == 0 and balanced(summary) and rejects == []
    present = sorted(p.stem for p in folder.glob('*.avro'))
    supported = [t for t in present if t in ENTRIES]
    assert supported == TYPES                                 # Braze ships a sample of each
    assert summary['files_read'] == 80
    assert summary['files_skipped'] == len(present) - 80 == 14
    assert summary['files_skipped_by_reason'] == {'other_event_type': 14}
    assert summary['read'] == summary['sent'] == 80
    sent = [m for _, body in bodies for m in body['batch']]
    expected = []
    for event_type in TYPES:
        for rec in decoded(folder / f'{event_type}.avro'):
            expected.append(expected_message(ENTRIES[event_type], rec, pipeline.__version__))
    # Braze's samples share one id, so compare as multisets of canonical (typed) JSON.
    canon = lambda m: json.dumps(m, sort_keys=True)  # noqa: E731
    assert sorted(map(canon, sent)) == sorted(map(canon, expected))
    assert summary['by_event']['Sent']['read'] == 2   # LINE and RCS
    assert summary['by_event']['Custom Event']['sent'] == 1


# --- --include_anonymous, both profiles ----------------------------------------------------------

ANON_CASES = [('has-ext', 'ext', 'user-a'), ('no-ext', None, 'user-b'),
              ('blank-ext', '  ', 'user-c'), ('no-ids', None, None)]


@pytest.mark.parametrize('mapping,event_type', [
    ('classic', 'users.messages.sms.InboundReceive'),
    ('current', 'users.messages.whatsapp.InboundReceive')])
def test_include_anonymous_sends_anonymous_only_events(tmp_path, mapping, event_type):
    """Without the flag such events are dropped (the default, checked by every other run)."""
    schema = load_schema(event_type) if mapping == 'classic' else writer_schema(event_type)
    base = full_and_sparse(event_type, schema)[1]
    records = [dict(base, id=rid, external_user_id=ext, user_id=uid)
               for rid, ext, uid in ANON_CASES]
    write_file(tmp_path / 'in', event_type, records, schema=schema)
    code, summary, rejects, bodies = run_pipeline(tmp_path, tmp_path / 'in', '--mapping', mapping,
                                                  '--include_anonymous')
    assert code == 0 and balanced(summary) and rejects == []
    messages = {m['messageId']: m for _, body in bodies for m in body['batch']}
    assert set(messages) == {'has-ext', 'no-ext', 'blank-ext'}
    assert summary['dropped_no_external_user_id'] == 1        # neither id: still dropped
    assert messages['has-ext']['userId'] == 'ext'
    for rid, uid in (('no-ext', 'user-b'), ('blank-ext', 'user-c')):
        assert 'userId' not in messages[rid]
        assert messages[rid]['anonymousId'] == uid


def test_include_anonymous_leaves_identified_classic_messages_byte_identical():
    rec = record(3, id='same')
    assert serialize(MessageMapper(include_anonymous=True).to_message(
        'users.messages.email.Send', rec)) == serialize(MessageMapper().to_message(
            'users.messages.email.Send', rec))


def test_the_drop_comes_before_any_validity_check():
    for profile in ('classic', 'current'):
        mapper = mapper_for(profile)
        assert mapper.to_message('users.messages.email.Send', {'external_user_id': None}) \
            is DROPPED
        anon = mapper_for(profile, include_anonymous=True)
        assert anon.to_message('users.messages.email.Send', {'user_id': None}) is DROPPED
        with pytest.raises(Invalid):
            anon.to_message('users.messages.email.Send', {'user_id': 'u', 'time': 1})
    assert CurrentMessageMapper().to_message(
        'users.behaviors.CustomEvent', {'name': '', 'id': 'x', 'time': 1}) is DROPPED


def test_unknown_profile_and_type_are_refused():
    with pytest.raises(ValueError):
        mapper_for('future')
    with pytest.raises(Invalid) as caught:
        CurrentMessageMapper().to_message('users.messages.newsfeedcard.Click',
                                          {'id': 'x', 'external_user_id': 'e', 'time': 1})
    assert caught.value.reason == INVALID_RECORD


# --- options, summary, plan ---------------------------------------------------------------------

def _settings(*argv):
    return settings_from(PipelineOptions(['--input', 'x', '--rejects', 'r', *argv]))


def test_event_types_resolve_against_the_chosen_profile():
    assert _settings().selector.event_types == frozenset(currents_types('classic'))
    assert len(_settings('--mapping', 'current').selector.event_types) == 80
    assert _settings('--mapping', 'current', '--event_types', 'Aborted').selector.event_types == \
        {'users.messages.line.Abort', 'users.messages.rcs.Abort'}
    assert _settings('--mapping', 'current', '--event_types',
                     'custom event,users.behaviors.Purchase').selector.event_types == \
        {'users.behaviors.CustomEvent', 'users.behaviors.Purchase'}
    assert _settings('--event_types', 'Email Unsubscribed').selector.event_types == \
        {'users.messages.email.Unsubscribe'}
    with pytest.raises(UsageError, match='--mapping classic'):
        _settings('--mapping', 'current', '--event_types', 'Email Unsubscribed')
    with pytest.raises(UsageError, match='--mapping current'):
        _settings('--event_types', 'WhatsApp Sent')
    with pytest.raises(UsageError, match='News Feed Viewed'):
        _settings('--mapping', 'current', '--event_types', 'News Feed Viewed')


def test_mapping_option_refuses_unknown_profiles_in_one_line(capsys):
    assert run(['--input', 'x', '--rejects', 'r', '--mapping', 'newest'], out=io.StringIO()) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("currents-to-segment: error: --mapping must be classic or current, "
                   "got 'newest'")


def test_summary_rows_by_profile_names():
    values = {f'{counts.READ}{counts.SEP}users.messages.line.Send': 2,
              f'{counts.SENT}{counts.SEP}users.messages.line.Send': 2,
              f'{counts.READ}{counts.SEP}users.messages.rcs.Send': 3,
              f'{counts.SENT}{counts.SEP}users.messages.rcs.Send': 3,
              f'{counts.READ}{counts.SEP}users.messages.email.MarkAsSpam': 1,
              f'{counts.SENT}{counts.SEP}users.messages.email.MarkAsSpam': 1}
    current = Summary(values, 'current').as_dict()['by_event']
    assert current == {'Email Marked as Spam': {'read': 1, 'dropped_no_external_user_id': 0,
                                                'sent': 1, 'rejected': 0},
                       'Sent': {'read': 5, 'dropped_no_external_user_id': 0, 'sent': 5,
                                'rejected': 0}}
    classic = Summary(values).as_dict()['by_event']
    assert 'Email Marked As Spam' in classic
    assert Summary({}, 'current').add(Summary(values)).mapping == 'current'
    assert 'Live Activity Push To Start Token Changed' in Summary(
        {f'{counts.READ}{counts.SEP}users.behaviors.liveactivity.PushToStartTokenChange': 1},
        'current').table()


def test_plan_names_rows_by_the_profile():
    files = [('/x/event_type=users.messages.line.Send/a.avro', 'users.messages.line.Send', 10),
             ('/x/event_type=users.messages.rcs.Send/b.avro', 'users.messages.rcs.Send', 20),
             ('/x/event_type=users.messages.email.Unsubscribe/c.avro',
              'users.messages.email.Unsubscribe', 5)]
    plan = make_plan(Listing(files, {}), 0, 0.0, 'current')
    assert plan['by_event']['Sent']['files'] == 2 and plan['by_event']['Sent']['bytes'] == 30
    assert 'Unsubscribed' in plan['by_event']
    assert 'Email Unsubscribed' in make_plan(Listing(files, {}), 0, 0.0)['by_event']


# --- replay maps a kept record with the profile the run used -------------------------------------

def test_replay_maps_a_kept_record_with_the_recorded_profile(tmp_path):
    event_type = 'users.messages.email.Unsubscribe'
    schema = writer_schema(event_type)
    full = full_and_sparse(event_type, schema)[0]
    rec = dict(full, id='u' * 90)
    write_file(tmp_path / 'in', event_type, [rec], schema=schema)
    code, summary, rejects, _ = run_pipeline(tmp_path, tmp_path / 'in', '--mapping', 'current',
                                             '--message_id_prefix', 'backfill-0001-')
    assert summary['rejected_by_reason'] == {'message_id_too_long': 1}
    assert rejects[0]['mapping'] == 'current' and rejects[0]['record']['id'] == rec['id']
    # Replayed without --mapping (classic by default) and without the prefix: still `current`.
    out = tmp_path / 'replay'
    code = run(['replay', '--rejects', str(tmp_path / 'out' / 'rejects'),
                '--dry_run_output', str(out / 'bodies'),
                '--summary_output', str(out / 'summary.json')], out=io.StringIO())
    assert code == 0
    sent = [m for _, body in read_bodies(out / 'bodies') for m in body['batch']]
    assert len(sent) == 1
    import pipeline
    rec_back = dict(rejects[0]['record'])
    assert_typed_equal(sent[0], expected_message(ENTRIES[event_type], rec_back,
                                                 pipeline.__version__))
    assert sent[0]['event'] == 'Unsubscribed'


# --- end to end, real HTTP to the local receiver ---------------------------------------------------

@pytest.mark.slow
def test_current_profile_end_to_end_delivers_every_eligible_event(tmp_path, monkeypatch):
    """A generated tree of all 80 types (Braze's real schemas), sent with --mapping current."""
    import pipeline
    from devtools.receiver import SegmentReceiver
    from devtools.sample import generate
    from pipeline.paths import event_type_from_path
    key = 'wk_current-e2e-TEST-KEY'
    monkeypatch.setenv('SEGMENT_WRITE_KEY', key)
    report = generate(tmp_path / 'in', events=4000, seed=11, hours=2, events_per_file=500,
                      mapping='current', other_type_files=3)
    assert {t for t, v in report.by_type.items() if v['events']} == set(TYPES)
    out = tmp_path / 'out'
    with SegmentReceiver(write_key=key) as receiver:
        code = run(['--input', str(tmp_path / 'in'), '--rejects', str(out / 'rejects'),
                    '--summary_output', str(out / 'summary.json'), '--mapping', 'current',
                    '--segment_endpoint', receiver.url], out=io.StringIO())
        stats, messages = receiver.stats(), receiver.messages()
    assert code == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert balanced(summary)
    assert summary['read'] == report.events
    assert summary['dropped_no_external_user_id'] == report.events - report.eligible
    assert summary['sent'] == report.eligible and summary['rejected'] == 0
    assert summary['files_skipped'] == 0 and len(report.other_files) == 3
    assert len(summary['event_types_not_selected']) == 3   # their folders, never listed
    assert stats['accepted'] == report.eligible and stats['duplicates'] == 0
    assert stats['silently_dropped'] == 0
    assert {m['messageId'] for m in messages} == report.eligible_ids
    # Rows: the profile's names, shared names summed.
    rows = {}
    for t, v in report.by_type.items():
        name = ENTRIES[t]['segment_event'] or 'Custom Event'
        rows[name] = rows.get(name, 0) + v['events']
    assert {k: v['read'] for k, v in summary['by_event'].items()} == rows
    # Field for field (types included) against the reference, from the decoded files.
    expected = {}
    for path in report.files:
        entry = ENTRIES[event_type_from_path(path)]
        for rec in decoded(path):
            if rec['id'] in report.eligible_ids:
                expected[rec['id']] = expected_message(entry, rec, pipeline.__version__)
    for m in messages:
        assert_typed_equal(m, expected[m['messageId']], m['messageId'])
