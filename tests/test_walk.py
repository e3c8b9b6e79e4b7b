"""A local --input folder's range listed ahead in child processes while the command imports Beam
(pipeline/walk.py), and the listing that takes that walk (pipeline/listing.py).

Here: which command lines start it, that it lists what the launcher would list (the same range,
the same selector), that the listing takes it once and for its folder and selector only, and
that any failure of the child leaves the listing to list the folder itself.
"""
import datetime
import os
import signal
import time

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import pipeline.walk as walk
from pipeline.listing import input_pattern, list_currents_files, list_input
from pipeline.options import settings_from
from pipeline.paths import FileSelector
from tests.helpers import record, write_file
from transforms import listing as stores
from transforms.profiles import currents_types

SEND = 'users.messages.email.Send'
ALL = frozenset(currents_types('classic'))


@pytest.fixture(autouse=True)
def no_walk_left(monkeypatch):
    """Each test starts and ends without a walk pending in this process."""
    monkeypatch.setattr(walk, '_ahead', None)
    yield
    ahead = walk._ahead
    if ahead is not None:
        ahead.take()


def export(tmp_path, files=3):
    root = tmp_path / 'export'
    for i in range(files):
        write_file(root, SEND, [record(i)], n=i, date=f'2024-05-0{i + 1}-00')
    return str(root)


def entries(folder):
    return sorted(walk.walk_folder(folder))


def started(argv):
    ahead = walk.start_ahead(argv)
    assert ahead is not None
    return ahead


def test_the_folder_is_what_the_listing_walks_for_input(tmp_path):
    folder = str(tmp_path / 'eXport X')   # no character of a glob, a scheme or a slash
    os.mkdir(folder)
    assert walk.local_input_folder(['--input', folder]) == folder
    assert walk.local_input_folder(['--input=' + folder + '/', '--plan']) == folder
    assert walk.local_input_folder(['--input', '/nowhere', '--input', folder]) == folder  # last
    assert input_pattern(folder + '/') == folder + '/**'
    assert walk.local_input_folder(['--input', '/']) == '/'
    odd = tmp_path / 'exp [prod]'   # glob characters in an existing folder's name: literal
    odd.mkdir()
    assert walk.local_input_folder(['--input', str(odd)]) == str(odd)


def test_a_store_url_is_never_a_local_folder_even_where_one_has_its_name(tmp_path, monkeypatch):
    (tmp_path / 'gs:' / 'bucket').mkdir(parents=True)   # "gs://bucket" as a relative path
    monkeypatch.chdir(tmp_path)
    assert os.path.isdir('gs://bucket')
    assert walk.local_input_folder(['--input', 'gs://bucket']) is None


@pytest.mark.parametrize('argv', [
    [],
    ['--input'],
    ['--input', 'gs://bucket/export'],
    ['--input', 's3://bucket/export'],
    ['--input=azfs://account/container/export'],
    ['--input', '{tmp}/*/export'],         # a glob: Beam's match, not the walk
    ['--input', '{tmp}/missing'],
    ['--input', '{tmp}/file.avro'],       # one file: nothing to walk
    ['replay', '--rejects', '{tmp}', '--input', '{tmp}'],
    ['--inputs', '{tmp}'],
    ['--input', '{tmp}', '--since_last_run'],   # its window depends on earlier runs
    ['--input', '{tmp}', '--follow'],
    ['--input', '{tmp}', '--mapping', 'other'],
    ['--input', '{tmp}', '--event_types', 'No Such Event'],
    ['--input', '{tmp}', '--start', '2024-13-01'],
])
def test_no_walk_unless_the_range_of_a_local_folder_can_be_told(tmp_path, argv):
    (tmp_path / 'file.avro').write_bytes(b'x')
    argv = [arg.replace('{tmp}', str(tmp_path)) for arg in argv]
    assert walk.start_ahead(argv) is None and walk._ahead is None


@pytest.mark.parametrize('extra', [
    [], ['--mapping', 'current'], ['--event_types', 'Email Sent,users.canvas.Entry'],
    ['--start', '2024-05-02'], ['--end=2024-05-02-05', '--start', '2024-05-01-23'],
    ['--event_types', 'Sent', '--mapping=current', '--start=2024-05-01'],
])
def test_the_walk_lists_with_the_selector_the_run_lists_with(tmp_path, extra):
    folder = export(tmp_path)
    argv = ['--input', folder, '--rejects', str(tmp_path / 'r')] + extra
    assert walk.selector_from_argv(argv) == settings_from(PipelineOptions(argv)).selector


def test_the_walk_ahead_is_the_listing_and_leaves_no_process(tmp_path):
    folder = export(tmp_path)
    ahead = started(['--input', folder, '--start', '2024-05-02', '--rejects', str(tmp_path)])
    assert ahead.pid != os.getpid()
    assert walk.start_ahead(['--input', folder]) is None   # one per command
    taken = walk.take_ahead(folder, ahead.selector)
    assert sorted(taken.entries) == entries(folder)[1:] and not taken.over_budget
    assert taken.requests > 0 and taken.objects == 2   # the first day is never listed
    with pytest.raises(ChildProcessError):
        os.waitpid(ahead.pid, os.WNOHANG)   # reaped
    assert all(file.closed for file in ahead._files)
    assert walk.take_ahead(folder, ahead.selector) is None   # once


def test_the_listing_takes_the_walk_once_and_only_for_its_folder_and_range(tmp_path,
                                                                           monkeypatch):
    folder = export(tmp_path)
    other = export(tmp_path / 'other', files=1)
    ahead = started(['--input', folder])
    listed = []   # what the launcher lists itself, from now on
    plan = stores.plan_units
    monkeypatch.setattr(stores, 'plan_units', lambda s, r, sel, *a: listed.append(r) or
                        plan(s, r, sel, *a))
    assert len(list_currents_files(input_pattern(other), ahead.selector).files) == 1
    assert listed == [other + '/'] and walk._ahead is not None   # another folder: kept
    first = list_currents_files(input_pattern(folder), ahead.selector)
    assert listed == [other + '/'] and walk._ahead is None        # taken, not listed
    again = list_currents_files(input_pattern(folder), ahead.selector)   # --follow's next look
    assert listed == [other + '/', folder + '/']
    assert first == again and len(first.files) == 3
    started(['--input', folder, '--start', '2024-05-03'])
    narrower = list_currents_files(input_pattern(folder), ahead.selector)   # another range
    assert listed[-1] == folder + '/' and len(listed) == 3 and len(narrower.files) == 3


def test_files_written_after_the_walk_are_the_next_listings(tmp_path):
    folder = export(tmp_path, files=2)
    ahead = started(['--input', folder])
    taken = walk.take_ahead(folder, ahead.selector)   # the walk as it was when the command started
    write_file(folder, SEND, [record(9)], n=9, date='2024-05-09-00')
    assert len(taken.entries) == 2 and len(entries(folder)) == 3


def test_a_failed_walk_leaves_the_listing_to_list(tmp_path, monkeypatch):
    folder = export(tmp_path)

    def broken(*_):
        raise MemoryError('the child cannot list')
    with monkeypatch.context() as patched:
        patched.setattr(stores, 'plan_units', broken)   # what the forked children run
        ahead = started(['--input', folder])
    assert walk._ahead is not None
    assert len(list_currents_files(input_pattern(folder), ahead.selector).files) == 3
    assert walk._ahead is None


def test_a_child_reaped_elsewhere_or_killed_gives_nothing(tmp_path, monkeypatch):
    folder = export(tmp_path)
    selector = FileSelector(ALL)
    ahead = walk.WalkAhead(folder, selector, 100)
    os.waitpid(ahead.pid, 0)   # e.g. a library's wait() for any child
    assert ahead.take() is None and all(file.closed for file in ahead._files)
    write = walk.walk_into

    def wrote_then_hung(*args):
        write(*args)
        time.sleep(60)   # killed here, its file complete
        return 0
    monkeypatch.setattr(walk, 'walk_into', wrote_then_hung)
    ahead = walk.WalkAhead(folder, selector, 100)
    deadline = time.monotonic() + 30
    while os.fstat(ahead._files[0].fileno()).st_size == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(ahead.pid, signal.SIGKILL)
    assert ahead.take() is None


def test_the_childs_work_writes_the_listing_and_says_whether_it_is_whole(tmp_path, monkeypatch):
    folder = export(tmp_path)
    hardened = []
    monkeypatch.setattr(walk, 'harden_process', lambda: hardened.append(True))
    with open(tmp_path / 'out', 'w+b') as out:
        assert walk.walk_into([out.fileno()], folder, FileSelector(ALL), 100) == 0
        out.seek(0)
        assert sorted(walk.marshal.loads(out.read())['entries']) == entries(folder)
    assert hardened == [True]   # owner-only files, no core file, before the walk
    monkeypatch.setattr(walk, '_listed', lambda *a, **k: {'entries': [('x', 1, object())]})
    with open(tmp_path / 'bad', 'w+b') as out:   # unmarshallable
        assert walk.walk_into([out.fileno()], folder, FileSelector(ALL), 100) == 1


def test_a_child_that_exits_with_an_error_gives_nothing_whatever_it_wrote(tmp_path, monkeypatch):
    folder = export(tmp_path)
    write = walk.walk_into

    def wrote_then_failed(*args):
        assert write(*args) == 0
        return 3
    monkeypatch.setattr(walk, 'walk_into', wrote_then_failed)
    assert walk.WalkAhead(folder, FileSelector(ALL), 100).take() is None


def tree(tmp_path):
    """An export of 12 files over 3 types and 4 hours, plus a top-level file, a symlinked
    folder (not entered), a symlinked file (listed) and an unreadable folder (skipped)."""
    root = tmp_path / 'tree'
    for i in range(12):
        write_file(root, currents_types('classic')[i % 3], [], n=i, raw=b'x' * (i + 1),
                   date=f'2024-05-0{i % 4 + 1}-00')
    (root / 'top.avro').write_bytes(b'x' * 7)
    (tmp_path / 'elsewhere').mkdir()
    (tmp_path / 'elsewhere' / 'hidden.avro').write_bytes(b'y')
    (root / 'linked').symlink_to(tmp_path / 'elsewhere', target_is_directory=True)
    (root / 'linked.avro').symlink_to(root / 'top.avro')
    (root / 'closed').mkdir(mode=0o000)
    return str(root)


@pytest.mark.parametrize('walkers', [1, 2, 3, 5])
@pytest.mark.parametrize('start', [None, datetime.datetime(2024, 5, 2)])
def test_a_listing_shared_between_processes_lists_each_file_once(tmp_path, walkers, start):
    folder = tree(tmp_path)
    whole = entries(folder)
    assert len(whole) == 14 and not any('hidden' in path for path, _, _ in whole)
    selector = FileSelector(ALL, start)
    wanted = sorted(e for e in whole if selector.decide(e[0]).action != 'skip_range')
    taken = walk.WalkAhead(folder, selector, 100, walkers=walkers).take()
    assert taken is not None and len(taken.entries) == len(wanted)
    assert sorted(taken.entries) == wanted


def test_a_listing_past_the_budget_is_handed_to_the_workers(tmp_path):
    folder = tree(tmp_path)
    taken = walk.WalkAhead(folder, FileSelector(ALL), 5, walkers=2).take()
    assert taken.over_budget and len(taken.units) == 3   # the three type folders
    walk._ahead = walk.WalkAhead(folder, FileSelector(ALL), 5, walkers=2)
    found = list_input(folder, FileSelector(ALL), budget=5)
    assert found.on_workers and found.files == [] and found.sample
    kinds = sorted(u.kind for u in found.units)
    assert kinds == ['file', 'file', 'hours', 'hours', 'hours'] and walk._ahead is None


def test_a_listing_is_nothing_when_a_process_sharing_it_fails(tmp_path, monkeypatch):
    folder = tree(tmp_path)
    launcher = os.getpid()
    listed = walk._listed

    def fails_in_a_helper(*args):   # the first child's parent is this process; a helper's
        if os.getppid() != launcher:  # is the first child
            raise OSError('a helper cannot list')
        return listed(*args)
    with monkeypatch.context() as patched:
        patched.setattr(walk, '_listed', fails_in_a_helper)
        assert walk.WalkAhead(folder, FileSelector(ALL), 100, walkers=2).take() is None
        assert walk.WalkAhead(folder, FileSelector(ALL), 100, walkers=1).take() is not None
    write = walk._write

    def wrote_then_failed_in_a_helper(fd, found):   # its file complete, its status not 0
        status = write(fd, found)
        return 3 if os.getppid() != launcher else status
    monkeypatch.setattr(walk, '_write', wrote_then_failed_in_a_helper)
    assert walk.WalkAhead(folder, FileSelector(ALL), 100, walkers=2).take() is None


def test_a_walk_ahead_uses_at_most_one_process_per_core(tmp_path, monkeypatch):
    monkeypatch.setattr(walk.os, 'cpu_count', lambda: 1)
    assert len(walk.WalkAhead(str(tmp_path), FileSelector(ALL), 9).__dict__['_files']) == 1
    monkeypatch.setattr(walk.os, 'cpu_count', lambda: 64)
    ahead = walk.WalkAhead(str(tmp_path), FileSelector(ALL), 9)
    assert len(ahead._files) == walk.WALKERS == 2 and ahead.take().entries == []


def test_the_walk_file_is_owner_only_and_unlinked(tmp_path):
    ahead = walk.WalkAhead(export(tmp_path), FileSelector(ALL), 100, walkers=2)
    for file in ahead._files:
        stat = os.fstat(file.fileno())
        assert stat.st_nlink == 0 and stat.st_mode & 0o077 == 0
    assert ahead.take() is not None


def test_an_entry_whose_kind_cannot_be_read_is_a_file_as_for_os_walk(tmp_path, monkeypatch):
    class Entry:
        path = str(tmp_path / 'odd.avro')

        def is_dir(self):
            raise PermissionError('cannot tell')

        def is_symlink(self):
            return False

        def stat(self):
            return os.stat_result((0o100600, 0, 0, 1, 0, 0, 7, 0, 5, 0))

    class Listing(list):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False
    opened = []
    monkeypatch.setattr(stores.os, 'scandir', lambda p: opened.append(p) or Listing([Entry()]))
    assert list(walk.walk_folder('top')) == [(Entry.path, 7, 5)]
    assert opened == ['top']   # not entered as a folder
