"""Hostile input (tests/hostile.py builds it): each file is one `unreadable_file` reject, the good
files beside it are delivered, in bounded memory and time; --plan reads no data block."""
import io
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from unittest import mock

import pytest

from devtools.receiver import SegmentReceiver
from tests import hostile
from tests.helpers import avro_bytes, balanced, read_rejects, record
import transforms.read as read_module
from transforms.model import CurrentsEvent
from transforms.read import (MAX_BLOCK_BYTES, REPORT_EVERY, CorruptBlock, ReadCurrentsFileFn,
                             RefusedFile, block_headers, read_header, record_chunks, records,
                             schema_min_record_bytes)

ROOT = Path(__file__).resolve().parent.parent
KEY = 'wk_hostile-key-5520'
MEMORY_BOUND = 1024 * 1024 * 1024     # address space of the whole run (RLIMIT_AS)
TIME_BOUND = 120                      # seconds for the whole run (~10 s here)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    return hostile.build(tmp_path_factory.mktemp('hostile') / 'in')


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BOUND, MEMORY_BOUND))


def _cli(*argv, timeout=TIME_BOUND):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, '-m', 'pipeline', *argv], cwd=ROOT,
                          env=dict(os.environ, SEGMENT_WRITE_KEY=KEY, PYTHONPATH=str(ROOT),
                                   # glibc reserves 64 MiB of address space per thread arena;
                                   # RLIMIT_AS counts reservations, so cap them to measure use
                                   MALLOC_ARENA_MAX='2'),
                          preexec_fn=_limited, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - started


@pytest.mark.slow
def test_a_run_over_hostile_files_rejects_each_once_and_delivers_every_good_event(
        tmp_path, corpus):
    with SegmentReceiver(write_key=KEY) as receiver:
        proc, seconds = _cli('--input', str(Path(corpus['hostile'][0].path).parents[5]),
                             '--rejects', str(tmp_path / 'rejects'),
                             '--summary_output', str(tmp_path / 'summary.json'),
                             '--segment_endpoint', receiver.url)
        delivered = {m['messageId'] for m in receiver.messages()}
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert seconds < TIME_BOUND
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert balanced(summary)
    assert summary['files_rejected'] == len(hostile.CASES) == 9
    assert summary['files_read'] == len(hostile.GOOD_TYPES)
    assert summary['sent'] == len(corpus['good_ids']) == 900
    assert delivered == corpus['good_ids']
    rejects = read_rejects(tmp_path / 'rejects')
    assert Counter(r['reason'] for r in rejects) == {'unreadable_file': 9}
    by_source = {r['source']: r for r in rejects}
    assert len(by_source) == 9
    for case in corpus['hostile']:
        reject = by_source[case.path]
        assert case.detail in reject['detail'], (case.kind, reject['detail'])
        assert reject['event_type'] == case.event_type
        assert len(reject['detail']) <= 600


@pytest.mark.slow
def test_plan_over_hostile_files_finishes_in_bounded_memory_and_time(tmp_path, corpus):
    proc, seconds = _cli('--input', str(Path(corpus['hostile'][0].path).parents[5]),
                         '--rejects', str(tmp_path / 'rejects'), '--plan', timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert seconds < 60
    assert 'files to read: 12' in proc.stdout
    # The good files are estimated from their block headers; the hostile ones count nothing.
    assert 'Push Notification Sent' in proc.stdout


class CountingReader(io.BytesIO):
    """A file that records how many bytes were read from it (seeks read nothing)."""

    def __init__(self, data):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n=-1):
        data = super().read(n)
        self.bytes_read += len(data)
        return data


@pytest.mark.parametrize('kind', [c[0] for c in hostile.CASES])
def test_plan_reading_never_reads_a_data_block_of_a_hostile_file(kind):
    f = CountingReader(hostile.bytes_of(kind))
    try:
        header = read_header(f)
        list(block_headers(f, header))
    except (RefusedFile, CorruptBlock, ValueError) as exc:
        assert str(exc)
    # Header (with its schema) plus at most one block header and sync marker.
    header_end = len(hostile.container(hostile.SMALL, 'null', [])) if kind not in (
        'recursive_schema', 'deep_schema', '2^62_empty_records') else 400_000
    assert f.bytes_read <= header_end + 20 + 16


@pytest.mark.parametrize('codec', ['null', 'deflate', 'snappy'])
def test_plan_reading_skips_data_blocks_of_good_files(codec):
    data = avro_bytes('users.messages.email.Send', [record(i) for i in range(2000)],
                      codec=codec, sync_interval=4000)
    f = CountingReader(data)
    header = read_header(f)
    found = list(block_headers(f, header))
    assert sum(count for count, _ in found) == 2000
    assert len(found) > 20
    header_bytes = len(data) - sum(size + 16 for _, size in found) - sum(
        len(hostile.zigzag(c)) + len(hostile.zigzag(s)) for c, s in found)
    assert f.bytes_read == header_bytes + sum(
        len(hostile.zigzag(c)) + len(hostile.zigzag(s)) + 16 for c, s in found)
    if codec == 'null':
        assert f.bytes_read < len(data) / 10


def test_only_the_codecs_braze_writes_are_read():
    for codec in ('bzip2', 'xz', 'zstandard', 'lz4', 'NULL', 'deflate '):
        data = hostile.container(hostile.SMALL, codec, [(1, b'')])
        with pytest.raises(RefusedFile, match=f"codec '{codec}' is not one Braze writes"):
            read_header(io.BytesIO(data))
    for codec in ('null', 'deflate', 'snappy'):
        data = avro_bytes('users.messages.email.Send', [record(1)], codec=codec)
        f = io.BytesIO(data)
        assert [r['id'] for r in records(f, read_header(f))] == ['evt-1']


def test_record_count_is_checked_against_the_block_bytes_before_any_record():
    one = hostile._flat_record()            # 17 bytes: id, time, external_user_id
    assert len(one) == 17
    assert schema_min_record_bytes(hostile.SMALL) == 3
    ok = hostile.container(hostile.SMALL, 'null', [(1, one)])
    f = io.BytesIO(ok)
    assert len(list(records(f, read_header(f)))) == 1
    # 5 records of at least 3 bytes fit in 17 bytes; 6 do not (refused before the first).
    for count, refused in ((5, False), (6, True)):
        f = io.BytesIO(hostile.container(hostile.SMALL, 'null', [(count, one)]))
        found = records(f, read_header(f))
        if refused:
            with pytest.raises(CorruptBlock, match='declares 6 records in 17 bytes'):
                next(found)
        else:
            assert next(found)['id'] == 'evt-1'


@pytest.mark.parametrize('count, chunks', [(1, [1]), (1023, [1023]), (1024, [1024]),
                                           (1025, [1024, 1]), (2048, [1024, 1024]),
                                           (2049, [1024, 1024, 1])])
def test_a_block_is_decoded_in_chunks_of_at_most_1024_records(count, chunks):
    assert REPORT_EVERY == 1024
    f = io.BytesIO(hostile.container(hostile.SMALL, 'null', [(count, hostile._flat_record() * count),
                                                              (2, hostile._flat_record() * 2)]))
    assert [len(chunk) for chunk in record_chunks(f, read_header(f))] == chunks + [2]


def test_a_record_that_does_not_decode_comes_after_every_record_before_it():
    """Decoded a chunk at a time, a bad record still leaves the 1,500 before it (1,024 + 476)
    delivered and counted, and the rest of the file is one reject saying so."""
    one = hostile._flat_record()
    bad = b'\x07' + b'\xff' * 30   # a string whose length never ends
    data = hostile.container(hostile.SMALL, 'null', [(2500, one * 1500 + bad + one * 1000)])
    f = io.BytesIO(data)
    chunks = record_chunks(f, read_header(f))
    assert [len(next(chunks)), len(next(chunks))] == [1024, 476]
    with pytest.raises(Exception):
        next(chunks)
    f = io.BytesIO(data)
    found = records(f, read_header(f))
    assert [r['id'] for _, r in zip(range(1500), found)] == ['evt-1'] * 1500
    with pytest.raises(Exception):
        next(found)
    fn = ReadCurrentsFileFn(frozenset({'x.Small'}))
    path = '/in/event_type=x.Small/bad.avro'
    with mock.patch.object(read_module.FileSystems, 'open', lambda *a, **k: io.BytesIO(data)):
        out = list(fn.process((path, 'x.Small')))
    assert len(out) == 1501 and all(isinstance(e, CurrentsEvent) for e in out[:1500])
    assert '1500 records decoded before' in out[-1].value.detail


def test_a_block_with_data_after_its_records_is_refused_after_them():
    one = hostile._flat_record()
    f = io.BytesIO(hostile.container(hostile.SMALL, 'null', [(1500, one * 1500 + b'\x00')]))
    chunks = record_chunks(f, read_header(f))
    assert [len(next(chunks)), len(next(chunks))] == [1024, 476]
    with pytest.raises(CorruptBlock, match='block 0 holds more data than its 1500 records'):
        next(chunks)


def test_block_size_limit_at_the_exact_boundary():
    assert MAX_BLOCK_BYTES == 134_217_728
    from transforms.read import _decompress
    import zlib
    exact = zlib.compressobj(1, zlib.DEFLATED, -15)
    at_limit = exact.compress(bytes(MAX_BLOCK_BYTES)) + exact.flush()
    assert len(_decompress(0, 'deflate', at_limit)) == 134_217_728
    over = zlib.compressobj(1, zlib.DEFLATED, -15)
    past = over.compress(bytes(MAX_BLOCK_BYTES + 1)) + over.flush()
    with pytest.raises(RefusedFile, match='inflates past'):
        _decompress(0, 'deflate', past)


def test_schema_depth_limit_at_the_exact_boundary():
    def nested(levels):
        schema = 'string'
        for level in range(levels):
            schema = {'type': 'record', 'name': f'L{level}', 'fields': [
                {'name': 'f', 'type': schema}]}
        return schema
    assert schema_min_record_bytes(nested(32)) == 1
    with pytest.raises(RefusedFile, match='deeper than 32'):
        schema_min_record_bytes(nested(33))


def test_recursive_and_zero_byte_schemas_are_refused():
    linked = {'type': 'record', 'name': 'Node', 'namespace': 'a.b', 'fields': [
        {'name': 'id', 'type': 'string'},
        {'name': 'next', 'type': ['null', 'a.b.Node']}]}
    with pytest.raises(RefusedFile, match='recursive'):
        schema_min_record_bytes(linked)
    with pytest.raises(RefusedFile, match='zero-byte items'):
        schema_min_record_bytes({'type': 'record', 'name': 'R', 'fields': [
            {'name': 'a', 'type': {'type': 'array', 'items': 'null'}}]})
    # A named type used twice (not recursion) is fine.
    reuse = {'type': 'record', 'name': 'R', 'fields': [
        {'name': 'a', 'type': {'type': 'fixed', 'name': 'F', 'size': 4}},
        {'name': 'b', 'type': 'F'}]}
    assert schema_min_record_bytes(reuse) == 8


def test_every_real_braze_schema_passes_the_limits(samples_dir):
    for path in sorted(samples_dir.glob('**/*.avro')):
        with open(path, 'rb') as f:
            header = read_header(f)
            assert header.codec == 'null'
            assert len(list(records(f, header))) >= 1, path.name


def test_skip_files_turns_a_file_a_worker_died_on_into_one_reject_and_resume_gets_past(
        tmp_path):
    """A file that kills a worker (a signal, the OOM killer) cannot be caught in the worker;
    --skip_files lets the rerun record it as one reject, so --resume moves on."""
    from tests.helpers import run_pipeline, write_file
    root = tmp_path / 'in'
    good = write_file(root, 'users.messages.email.Send', [record(i) for i in range(10)], n=1)
    deadly = write_file(root, 'users.messages.email.Send', [record(100 + i) for i in range(5)],
                        n=2)
    os.environ['SEGMENT_WRITE_KEY'] = 'wk_skip-files-key'
    try:
        with SegmentReceiver(write_key='wk_skip-files-key') as receiver:
            # A real send: only a run that sent (not a dry run) records what it completed.
            code, summary, rejects, _ = run_pipeline(
                tmp_path, root, '--skip_files', deadly, '--segment_endpoint', receiver.url,
                dry_run=False)
            assert code == 0
            assert summary['files_rejected'] == 1 and summary['files_read'] == 1
            assert [(r['reason'], r['source']) for r in rejects] == [('unreadable_file', deadly)]
            assert 'listed in --skip_files' in rejects[0]['detail']
            assert len(receiver.messages()) == 10
            assert good != deadly
            code, summary, _, _ = run_pipeline(tmp_path, root, '--resume', '--segment_endpoint',
                                               receiver.url, dry_run=False)
    finally:
        os.environ.pop('SEGMENT_WRITE_KEY', None)
    assert code == 0 and summary['files_skipped_by_reason'] == {'completed_by_earlier_run': 2}
