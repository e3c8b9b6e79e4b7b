"""Reading Currents files as Braze writes them, and surviving files it should not have written."""

import pytest

from tests.helpers import avro_bytes, balanced, record, run_pipeline, write_file

SEND = 'users.messages.email.Send'
ENTRY = 'users.canvas.Entry'


def test_braze_samples_flat_folder_uses_schema_names(tmp_path, samples_dir):
    # The sample folder has no event_type= segments: types come from the writer schema names.
    code, summary, rejects, bodies = run_pipeline(tmp_path, samples_dir)
    assert code == 0 and balanced(summary)
    assert len(summary['by_event']) == 34
    assert summary['read'] == 34 + 12 + 0  # one per sample, plus the real 2017 file's 12 records
    assert summary['by_event']['Push Notification Sent']['read'] == 13
    assert rejects == []
    events = {m['event'] for _, body in bodies for m in body['batch']}
    assert len(events) == 34


def test_old_and_new_layouts_and_skipped_types(tmp_path):
    root = tmp_path / 'in'
    write_file(root, SEND, [record(1), record(2)])
    old = root / ('currents/dataexport.prod-03.S3.integration.5a/event_type=users.canvas.Entry/'
                  'date=2021-02-03-04/7/zone-a/dataexport.prod-03.S3.integration.5a+1+0000000001.avro')
    old.parent.mkdir(parents=True)
    old.write_bytes(avro_bytes(ENTRY, [record(3)]))
    # Another Currents type Braze exports but the connector does not send: skipped unopened.
    write_file(root, 'users.behaviors.CustomEvent', [], raw=b'garbage, never opened')
    (root / 'currents' / 'README.md').write_text('not a Currents file')
    code, summary, rejects, _ = run_pipeline(tmp_path, root)
    assert code == 0 and balanced(summary)
    assert summary['read'] == 3 and summary['sent'] == 3
    assert summary['files_read'] == 2 and summary['files_skipped'] == 1
    assert summary['files_skipped_by_reason'] == {'not_avro_name': 1}
    # A type the run does not read is never listed below its folder's name.
    assert summary['event_types_not_selected'] == ['users.behaviors.CustomEvent']
    assert summary['objects_listed'] == 3
    assert rejects == []


def test_start_end_prune_without_opening(tmp_path):
    root = tmp_path / 'in'
    write_file(root, SEND, [record(1)], date='2024-05-01-11')
    write_file(root, SEND, [record(2)], date='2024-05-01-12')
    write_file(root, SEND, [record(3)], date='2024-05-01-13')
    # Corrupt files outside the range: opening them would produce unreadable_file rejects.
    write_file(root, SEND, [], date='2024-05-01-10', n=9, raw=b'Obj\x01 corrupt')
    write_file(root, SEND, [], date='2024-05-02-00', n=9, raw=b'')
    code, summary, rejects, bodies = run_pipeline(
        tmp_path, root, '--start', '2024-05-01-11', '--end', '2024-05-01-13')
    assert code == 0 and rejects == []
    # The hours outside the range are never listed, let alone opened.
    assert summary['read'] == 2 and summary['files_skipped'] == 0
    assert summary['objects_listed'] == 2
    ids = sorted(m['messageId'] for _, b in bodies for m in b['batch'])
    assert ids == ['evt-1', 'evt-2']


def test_event_types_narrowing_by_either_name(tmp_path):
    root = tmp_path / 'in'
    write_file(root, SEND, [record(1)])
    write_file(root, ENTRY, [record(2)])
    code, summary, _, _ = run_pipeline(tmp_path, root, '--event_types', 'Canvas Entered')
    assert code == 0 and summary['read'] == 1 and list(summary['by_event']) == ['Canvas Entered']
    code, summary, _, _ = run_pipeline(tmp_path, root, '--event_types', SEND)
    assert summary['read'] == 1 and list(summary['by_event']) == ['Email Sent']


@pytest.mark.parametrize('codec', ['null', 'deflate', 'snappy'])
def test_codecs(tmp_path, codec):
    root = tmp_path / 'in'
    write_file(root, SEND, [record(i) for i in range(50)], codec=codec)
    code, summary, rejects, _ = run_pipeline(tmp_path, root)
    assert code == 0 and summary['sent'] == 50 and rejects == []


def test_truncated_file_keeps_what_decodes(tmp_path):
    root = tmp_path / 'in'
    data = avro_bytes(SEND, [record(i) for i in range(400)], sync_interval=2000)
    write_file(root, SEND, [], raw=data[: len(data) * 2 // 3])
    write_file(root, SEND, [record(1000)], n=1)
    code, summary, rejects, _ = run_pipeline(tmp_path, root)
    assert code == 0 and balanced(summary)
    assert 1 < summary['read'] < 401
    assert summary['files_rejected'] == 1 and summary['files_read'] == 1
    [bad] = rejects
    assert bad['reason'] == 'unreadable_file' and bad['event_type'] == SEND
    assert 'records decoded before' in bad['detail']
    assert summary['rejected_by_reason'] == {'unreadable_file': 1}


@pytest.mark.parametrize('raw,detail', [
    (b'', 'empty file'),
    (b'{"id": "not avro"}\n', 'not an Avro object container file'),
    (b'Obj\x01\x02\x00garbage', ''),
])
def test_empty_and_non_avro_files_are_rejected_not_fatal(tmp_path, raw, detail):
    root = tmp_path / 'in'
    write_file(root, SEND, [], raw=raw)
    write_file(root, SEND, [record(1)], n=1)
    code, summary, rejects, _ = run_pipeline(tmp_path, root)
    assert code == 0 and summary['sent'] == 1 and summary['files_rejected'] == 1
    [bad] = rejects
    assert bad['reason'] == 'unreadable_file' and detail in bad['detail']
    assert 'no records decoded' in bad['detail']


def _schema_variant(event_type, drop=(), add=(), doc=False, require=()):
    from devtools.sample import load_schema
    schema = load_schema(event_type)
    fields = [f for f in schema['fields'] if f['name'] not in drop]
    for name in add:
        fields.append({'name': name, 'type': ['null', 'string'], 'default': None})
    for f in fields:
        if f['name'] in require and isinstance(f['type'], list):
            f['type'] = f['type'][1]
            f.pop('default', None)
        if doc and f['type'] == 'string':
            f['type'] = {'type': 'string', 'connect.doc': 'Kafka-Connect style annotation'}
    return dict(schema, fields=fields)


def test_schema_drift_read_by_field_name(tmp_path):
    root = tmp_path / 'in'
    older = _schema_variant(SEND, drop=('dispatch_id', 'campaign_name', 'timezone'), doc=True,
                            require=('campaign_id',))
    newer = _schema_variant(SEND, add=('brand_new_field',))
    write_file(root, SEND, [record(1, dispatch_id='d')], schema=older, n=1)
    write_file(root, SEND, [record(2, dispatch_id='d', brand_new_field='z')], schema=newer, n=2)
    code, summary, rejects, bodies = run_pipeline(tmp_path, root)
    assert code == 0 and summary['sent'] == 2 and rejects == []
    by_id = {m['messageId']: m for _, b in bodies for m in b['batch']}
    assert 'dispatch_id' not in by_id['evt-1']['properties']
    assert by_id['evt-2']['properties']['dispatch_id'] == 'd'
    assert 'brand_new_field' not in by_id['evt-2']['properties']


def test_invalid_records_are_rejected_with_the_record(tmp_path):
    root = tmp_path / 'in'
    schema = _schema_variant(SEND)
    for f in schema['fields']:
        if f['name'] in ('id', 'time'):
            f['type'] = ['null', f['type']]
            f['default'] = None
    write_file(root, SEND, [record(1, id=None), record(2, time=None), record(3),
                            record(4, external=None), record(5, external='  ')], schema=schema)
    code, summary, rejects, _ = run_pipeline(tmp_path, root)
    assert code == 0 and balanced(summary)
    row = summary['by_event']['Email Sent']
    assert row == {'read': 5, 'dropped_no_external_user_id': 2, 'sent': 1, 'rejected': 2}
    assert sorted(r['reason'] for r in rejects) == ['invalid_record', 'invalid_record']
    assert {r['record']['user_id'] for r in rejects} == {record(1)['user_id'], record(2)['user_id']}
    assert all('message' not in r and r['source'].endswith('.avro') for r in rejects)


def test_single_file_and_glob_inputs(tmp_path):
    root = tmp_path / 'in'
    one = write_file(root, SEND, [record(1)])
    write_file(root, ENTRY, [record(2)])
    code, summary, _, _ = run_pipeline(tmp_path, one)
    assert code == 0 and summary['read'] == 1
    code, summary, _, _ = run_pipeline(tmp_path, f'{root}/currents/*/event_type=users.canvas.*/**')
    assert code == 0 and summary['read'] == 1 and 'Canvas Entered' in summary['by_event']


def test_duplicate_event_in_two_files_keeps_its_message_id(tmp_path):
    root = tmp_path / 'in'
    write_file(root, SEND, [record(1)], n=1)
    write_file(root, SEND, [record(1)], n=2)   # Braze delivers at least once
    code, summary, _, bodies = run_pipeline(tmp_path, root)
    ids = [m['messageId'] for _, b in bodies for m in b['batch']]
    assert code == 0 and ids == ['evt-1', 'evt-1']  # Segment de-duplicates on messageId
