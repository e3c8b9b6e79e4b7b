"""Files recorded as done as it happens (transforms/completion.py, transforms/rejects.py): never
before every event is sent, dropped or durably rejected, idempotent under a retried bundle."""
import json
import os
import threading

import pytest

from transforms import completion
from transforms.completion import (DROPPED, FILES_REJECTED, REJECTED, SENT, Completion,
                                   RecordWriter)
from transforms.model import Reject
from pipeline.ledger import fold_pieces
from transforms.records import hours_dir, load_records, records_dir
from transforms.rejects import WriteRejectsFn

A, B = '/in/event_type=t/date=2024-05-01-12/a.avro', '/in/event_type=t/date=2024-05-01-13/b.avro'


class Pieces(RecordWriter):
    """A RecordWriter that remembers what it wrote, in order."""

    def __init__(self, rejects):
        super().__init__(rejects, 'run1', 'w0')
        self.batches = []

    def write(self, entries):
        self.batches.append(list(entries))
        return super().write(entries)


def test_a_file_is_done_only_when_read_to_its_end_and_every_event_settled(tmp_path):
    done = Completion(Pieces(str(tmp_path)))
    done.opened(A, 't', 100, 1.5)
    done.settle(A, SENT, 3)
    done.settle(A, DROPPED, 1)
    assert done.write_record() == 0                  # still being read: 4 events so far
    done.read_done(A, 5)
    assert done.write_record() == 0                  # 4 of 5 settled
    done.settle(A, REJECTED)
    assert done.write_record() == 1
    assert load_records(str(tmp_path)).files == {A: (100, 1.5)}
    assert done.recorded_files == 1 and done.recorded_events == 5
    assert done.coverage() == {('t', '2024-05-01-12'): [1, 0, 5, 1, 3, 1]}
    assert done.unfinished() == (0, 0)


def test_an_unreadable_file_is_done_once_its_reject_is_settled_too(tmp_path):
    done = Completion(Pieces(str(tmp_path)))
    done.opened(B, 't', 7, 2.5)
    done.settle(B, SENT, 2)
    done.read_done(B, 2, file_rejected=True)         # 2 records, then a corrupt block
    assert done.write_record() == 0
    done.settle(B, FILES_REJECTED)
    assert done.write_record() == 1
    assert done.coverage()[('t', '2024-05-01-13')] == [1, 1, 2, 0, 2, 0]


def test_a_file_stopped_part_way_is_never_done(tmp_path):
    done = Completion(Pieces(str(tmp_path)))
    done.opened(A, 't', 1, 1.0)
    done.settle(A, SENT, 2)
    done.read_stopped(A, 2)
    done.settle(A, SENT, 1)                          # a late answer changes nothing
    assert done.write_record() == 0 and done.unfinished() == (1, 3)
    assert not os.path.exists(records_dir(str(tmp_path)))


def test_a_dry_run_accounts_and_records_nothing(tmp_path):
    done = Completion(None)
    done.opened(A, 't', 1, 1.0)
    done.read_done(A, 1)
    done.settle(A, SENT)
    assert done.write_record() == 0 and done.recorded_files == 0
    assert done.coverage()[('t', '2024-05-01-12')][4] == 1


def test_a_failed_record_write_is_kept_for_the_next_one(tmp_path, monkeypatch):
    writer = Pieces(str(tmp_path))
    done = Completion(writer)
    done.opened(A, 't', 1, 1.0)
    done.read_done(A, 0)
    monkeypatch.setattr(RecordWriter, 'write', lambda self, e: (_ for _ in ()).throw(
        OSError('store down')))
    with pytest.raises(OSError):
        done.write_record()
    monkeypatch.undo()
    assert done.write_record() == 1 and load_records(str(tmp_path)).files == {A: (1, 1.0)}


def _rejects_fn(tmp_path):
    fn = WriteRejectsFn(str(tmp_path / 'rejects' / 'rejects-run1-w0'))
    fn.setup()
    return fn


def test_a_file_whose_last_events_are_rejected_is_recorded_only_once_they_are_durable(tmp_path):
    """The rejects step writes the rejects first, then settles them; the record follows."""
    rejects = str(tmp_path / 'rejects')
    done = completion.begin(Pieces(rejects))
    fn = _rejects_fn(tmp_path)
    fn.start_bundle()
    done.opened(A, 'users.messages.email.Send', 10, 1.0)
    done.settle(A, SENT, 1)
    done.read_done(A, 2)
    written = []
    real = completion.RecordWriter.write

    def after_the_rejects(self, entries):
        written.append(sorted(os.listdir(tmp_path / 'rejects')))
        return real(self, entries)
    fn.process(Reject('retries_exhausted', 'users.messages.email.Send', A, '503 x 12',
                      message={'messageId': 'evt-2'}))
    assert load_records(rejects).files == {}         # its reject is not durable yet
    Pieces.write = after_the_rejects
    try:
        out = list(fn.finish_bundle())
    finally:
        Pieces.write = RecordWriter.write
    [rejects_file] = [n for n in written[0] if n.startswith('rejects-')]
    assert json.loads((tmp_path / 'rejects' / rejects_file).read_text())['reason'] == \
        'retries_exhausted'
    assert load_records(rejects).files == {A: (10, 1.0)}
    [tallied] = [o.value for o in out]   # the bundle's tally, once its rejects are durable
    assert tallied['reject_files'] == 1
    assert tallied['cells'] == {('users.messages.email.Send', '2024-05-01-12'): [1, 0, 2, 0, 1, 1]}
    assert completion.current() is None


def test_a_retried_bundle_records_its_files_again_without_counting_them_twice(tmp_path):
    """A bundle that fails after its record was written is run again by the runner: the
    record holds each file once, and nothing of the failed attempt is lost."""
    rejects = str(tmp_path / 'rejects')
    for attempt in range(2):
        done = completion.begin(Pieces(rejects))
        fn = _rejects_fn(tmp_path)
        fn.start_bundle()
        for path in (A, B):
            done.opened(path, 't', 5, 2.0)
            done.read_done(path, 1)
            done.settle(path, SENT)
        list(fn.finish_bundle())
        if attempt == 0:
            with pytest.raises(RuntimeError):   # the failure Beam retries, after the write
                raise RuntimeError('worker lost after the record write')
    records = load_records(rejects)
    assert records.files == {A: (5, 2.0), B: (5, 2.0)} and records.objects_read == 2
    fold_pieces(rejects)   # at the end of the wave: one line per file in its hour
    lines = [line for hour in os.listdir(hours_dir(rejects))
             for name in os.listdir(os.path.join(hours_dir(rejects), hour))
             for line in open(os.path.join(hours_dir(rejects), hour, name))]
    assert sorted(json.loads(line)[0] for line in lines) == [A, B]


def test_the_flusher_records_done_files_while_the_bundle_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(completion.FLUSHER, 'period', 0.01)
    rejects = str(tmp_path / 'rejects')
    done = completion.begin(Pieces(rejects))
    try:
        done.opened(A, 't', 3, 4.0)
        done.read_done(A, 1)
        done.settle(A, SENT)
        seen = threading.Event()

        def recorded():
            while not load_records(rejects).files:
                pass
            seen.set()
        threading.Thread(target=recorded, daemon=True).start()
        assert seen.wait(10)   # no finish_bundle: written by the flusher thread
    finally:
        completion.end()
    assert load_records(rejects).files == {A: (3, 4.0)}
