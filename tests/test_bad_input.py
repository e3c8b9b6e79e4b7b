"""Bad and odd input (tests/bad_inputs.py builds it) never stops a run and is all accounted for.

CONTRACT §1 (layout, types, schema drift), §3 (missing id/time), §4 (32,000-byte messages) and §5
(every record and every file ends somewhere; a corrupt file is the records that decode plus one
`unreadable_file` reject).
"""
import json
import os
from collections import Counter

import fastavro
import pytest

from devtools.receiver import SegmentReceiver
from tests import bad_inputs
from tests.helpers import balanced, read_bodies, read_rejects
from transforms.events import BY_CURRENTS_TYPE
from transforms.read import ReadCurrentsFileFn
from tests.conftest import run_tool

KEY = 'wk_bad-input-key-0412'


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    return bad_inputs.build(tmp_path_factory.mktemp('bad') / 'in')


def _run(tmp_path, root, *extra):
    code, summary, text = run_tool(tmp_path, root, *extra)
    return code, summary, read_rejects(tmp_path / 'rejects'), text


def _check_accounting(corpus, summary, rejects):
    expected = corpus.expected()
    listed = corpus.listed()
    # Every file accounted for, each in the right bucket.
    assert len(listed) == len(corpus.cases)
    assert summary['files_read'] + summary['files_rejected'] + summary['files_skipped'] \
        + expected['files_not_listed'] == len(listed)
    assert summary['event_types_not_selected'] == expected['types_not_selected']
    for key in ('files_read', 'files_rejected', 'files_skipped'):
        assert summary[key] == expected[key], key
    # Every record accounted for, per type, as the builder knows it wrote them.
    assert balanced(summary)
    for key in ('read', 'dropped_no_external_user_id', 'sent', 'rejected'):
        assert summary[key] == expected[key], key
    for event_type, row in expected['by_type'].items():
        got = summary['by_event'][BY_CURRENTS_TYPE[event_type].segment_event]
        for column in ('read', 'dropped_no_external_user_id', 'sent', 'rejected'):
            assert got[column] == row.get(column, 0), (event_type, column)
    assert summary['rejected_by_reason'] == expected['rejected_by_reason']
    # Each unreadable file: exactly one unreadable_file reject, naming the records decoded before.
    file_rejects = Counter(r['source'] for r in rejects if r['reason'] == 'unreadable_file')
    assert set(file_rejects) == set(expected['unreadable'])
    assert set(file_rejects.values()) == {1}
    for r in rejects:
        if r['reason'] == 'unreadable_file':
            case = expected['unreadable'][r['source']]
            assert r['event_type'] == case.event_type, case.kind
            where = 'no records decoded' if not case.decoded else \
                f'{case.decoded} records decoded before'
            assert r['detail'].endswith(f'({where})'), (case.kind, r['detail'])
    # Event rejects: one line per rejected event, reasons as counted.
    event_rejects = Counter(r['reason'] for r in rejects if r['reason'] != 'unreadable_file')
    assert sum(event_rejects.values()) == summary['rejected']
    return expected


def test_dry_run_over_bad_corpus_accounts_for_every_file_and_record(tmp_path, corpus):
    code, summary, rejects, text = _run(tmp_path, corpus.root,
                                        '--dry_run_output', str(tmp_path / 'bodies'))
    assert code == 0, text
    expected = _check_accounting(corpus, summary, rejects)
    # The bodies hold exactly the expected messages (ids may repeat: truncated copies of one file).
    ids = Counter(m['messageId'] for _, body in read_bodies(tmp_path / 'bodies')
                  for m in body['batch'])
    assert ids == expected['sent_ids']
    # Unicode and control characters survive byte-exact into the bodies.
    messages = {m['messageId']: m for _, body in read_bodies(tmp_path / 'bodies')
                for m in body['batch']}
    checked = 0
    for case in corpus.cases:
        if case.kind != 'unicode_control_chars':
            continue
        for r in case.records:
            if bad_inputs.expected_fate(case.event_type, r) != 'sent':
                continue
            m = messages[r['id']]
            assert m['userId'] == r['external_user_id'] and m['anonymousId'] == r['user_id']
            for name in ('campaign_name', 'canvas_name', 'dispatch_id', 'send_id'):
                if r.get(name) is not None:
                    assert m['properties'][name] == r[name]
            if BY_CURRENTS_TYPE[case.event_type].is_email:
                assert m['context']['traits']['email'] == r['email_address']
            checked += 1
    assert checked >= 40
    # The oversize message is rejected whole, with the message kept for replay.
    [too_large] = [r for r in rejects if r['reason'] == 'message_too_large'][:1]
    assert len(json.dumps(too_large['message'], ensure_ascii=False).encode()) > 32_000
    assert 'Segment allows 32000' in too_large['detail']
    print(f"\nbad-input dry run: files listed={len(corpus.listed())} read={summary['files_read']} "
          f"rejected={summary['files_rejected']} skipped={summary['files_skipped']}; events "
          f"read={summary['read']} dropped={summary['dropped_no_external_user_id']} "
          f"sent={summary['sent']} rejected={summary['rejected']} "
          f"by reason={summary['rejected_by_reason']}")


def test_bad_corpus_over_http_delivers_what_the_dry_run_would(tmp_path, corpus, monkeypatch):
    """The same corpus to the local receiver: its per-item validation accepts every message
    (control characters, astral code points, 100-character ids), nothing is refused."""
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    with SegmentReceiver(write_key=KEY) as receiver:
        code, summary, rejects, text = _run(tmp_path, corpus.root,
                                            '--segment_endpoint', receiver.url)
        stats, messages = receiver.stats(), receiver.messages()
    assert code == 0, text
    expected = _check_accounting(corpus, summary, rejects)
    assert {m['messageId'] for m in messages} == set(expected['sent_ids'])
    assert stats['accepted'] == len(expected['sent_ids'])
    assert 'segment_rejected' not in summary['rejected_by_reason']
    assert stats['by_status'].keys() == {'200'}
    print(f"\nbad-input over HTTP: sent={summary['sent']} (unique messageIds accepted "
          f"{stats['accepted']}, copies of the same ids from truncated copies "
          f"{stats['duplicates']}) rejected={summary['rejected']} requests={stats['requests']}")


def test_each_truncation_point_reads_the_whole_blocks_then_one_reject(tmp_path):
    """The read step alone, file by file, at every offset of the corpus's truncation list."""
    schema, records, data = bad_inputs.multi_block_file('t1')
    fn = ReadCurrentsFileFn(frozenset(BY_CURRENTS_TYPE))
    for cut in bad_inputs.truncation_offsets(data) + list(range(len(data) - 40, len(data) + 1, 3)):
        path = tmp_path / f'cut{cut}.avro'
        path.write_bytes(data[:cut])
        out = list(fn.process((str(path), bad_inputs.TRUNCATED_TYPE)))
        outcome, decoded = bad_inputs.truncation_outcome(data, records, cut)
        events = [o for o in out if not hasattr(o, 'tag')]
        tagged = [o for o in out if hasattr(o, 'tag')]
        assert [e.record for e in events] == decoded, cut
        assert len(tagged) == (outcome == 'unreadable'), cut
        if tagged:
            assert out[-1] is tagged[0] and tagged[0].value.reason == 'unreadable_file'


@pytest.mark.parametrize('new_count', [20, 0, -1])
def test_regression_corrupt_block_count_is_not_silent_loss(tmp_path, new_count):
    schema, records, data = bad_inputs.multi_block_file('cnt', n=120,
                                                        event_type=bad_inputs.CORRUPT_TYPE)
    layout = bad_inputs.block_layout(data)
    assert layout[1][3] == 24 and len(layout) >= 4
    bad = bad_inputs.corrupt_block_count(data, 1, new_count)
    path = tmp_path / 'count.avro'
    path.write_bytes(bad)
    out = list(ReadCurrentsFileFn(frozenset(BY_CURRENTS_TYPE)).process(
        (str(path), bad_inputs.CORRUPT_TYPE)))
    decoded = [o for o in out if not hasattr(o, 'tag')]
    file_rejects = [o for o in out if hasattr(o, 'tag')]
    # Either every record decodes, or the damaged rest of the file is one unreadable_file reject.
    assert len(decoded) == len(records) or len(file_rejects) == 1


def test_corpus_builder_expectations_hold_against_a_reference_decode(corpus):
    """Self-check of the builder: its layout-based expectations agree with fastavro itself
    (except wrong magic, which fastavro does not check but the contract calls not-Avro)."""
    for case in corpus.cases:
        if case.outcome in ('skipped', 'not_listed'):
            continue
        with open(case.path, 'rb') as f:
            raw = f.read()
        decoded, err = bad_inputs.reference_decode(raw)
        if case.kind == 'wrong_magic':
            assert raw[:4] != bad_inputs.AVRO_MAGIC
            continue
        assert decoded == case.records, case.kind
        assert (err is not None) == (case.outcome == 'unreadable'), case.kind
    kinds = corpus.kinds()
    assert kinds['truncated'] + kinds['truncated_header_only'] + \
        kinds['truncated_on_block_boundary'] == 20
    assert all(os.path.getsize(c.path) > 900_000 for c in corpus.cases
               if c.kind == 'huge_record')
    with open([c.path for c in corpus.cases if c.kind == 'huge_record'][0], 'rb') as f:
        assert max(len(r.get('campaign_name') or '') for r in fastavro.reader(f)) == \
            bad_inputs.HUGE
