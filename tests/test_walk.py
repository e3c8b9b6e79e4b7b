"""A local --input folder walked ahead in a child process while the command imports Beam
(pipeline/walk.py), and the listing that takes that walk (pipeline/listing.py).

That the walk lists what Beam's local filesystem lists is test_read_costs.py's; here: which
command lines start it, that the listing takes it once and for its folder only, and that any
failure of the child leaves the listing to walk the folder itself.
"""
import os
import signal
import time

import pytest

import pipeline.listing as listing
import pipeline.walk as walk
from pipeline.listing import input_pattern, list_currents_files, local_entries
from pipeline.paths import FileSelector
from tests.helpers import record, write_file

SEND = 'users.messages.email.Send'


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


def test_the_folder_is_what_the_listing_walks_for_input(tmp_path):
    folder = str(tmp_path / 'eXport X')   # no character of a glob, a scheme or a slash
    os.mkdir(folder)
    assert walk.local_input_folder(['--input', folder]) == folder
    assert walk.local_input_folder(['--input=' + folder + '/', '--plan']) == folder
    assert walk.local_input_folder(['--input', '/nowhere', '--input', folder]) == folder  # last
    assert input_pattern(folder + '/') == folder + '/**'   # the listing's folder: no slash
    assert listing._local_folder(input_pattern(folder + '/')) == folder
    assert walk.local_input_folder(['--input', '/']) == '/'


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
])
def test_no_walk_for_anything_but_a_local_folder(tmp_path, argv):
    (tmp_path / 'file.avro').write_bytes(b'x')
    argv = [arg.replace('{tmp}', str(tmp_path)) for arg in argv]
    assert walk.local_input_folder(argv) is None
    assert walk.start_ahead(argv) is None and walk._ahead is None


def test_the_walk_ahead_is_the_walk_and_leaves_no_process(tmp_path):
    folder = export(tmp_path)
    ahead = walk.start_ahead(['--input', folder, '--rejects', str(tmp_path / 'r')])
    assert ahead is not None and ahead.pid != os.getpid()
    assert walk.start_ahead(['--input', folder]) is None   # one per command
    taken = walk.take_ahead(folder)
    assert sorted(taken) == entries(folder) and len(taken) == 3
    with pytest.raises(ChildProcessError):
        os.waitpid(ahead.pid, os.WNOHANG)   # reaped
    assert all(file.closed for file in ahead._files)
    assert walk.take_ahead(folder) is None   # once


def test_the_listing_takes_the_walk_once_and_only_for_its_folder(tmp_path, monkeypatch):
    folder = export(tmp_path)
    other = export(tmp_path / 'other', files=1)
    walk.start_ahead(['--input', folder])
    walked = []   # what the listing walks itself, from now on
    monkeypatch.setattr(listing, 'walk_folder', lambda f: walked.append(f) or walk.walk_folder(f))
    selector = FileSelector(frozenset({SEND}))
    assert len(list_currents_files(input_pattern(other), selector).files) == 1
    assert walked == [other] and walk._ahead is not None   # another folder: walked, kept
    first = list_currents_files(input_pattern(folder), selector)
    assert walked == [other] and walk._ahead is None        # taken, not walked
    again = list_currents_files(input_pattern(folder), selector)   # e.g. --follow's next look
    assert walked == [other, folder]
    assert first == again and len(first.files) == 3


def test_files_written_after_the_walk_are_the_next_listings(tmp_path):
    folder = export(tmp_path, files=2)
    walk.start_ahead(['--input', folder])
    taken = walk.take_ahead(folder)   # the walk as it was when the command started
    write_file(folder, SEND, [record(9)], n=9, date='2024-05-09-00')
    assert len(taken) == 2 and len(local_entries(folder)) == 3


def test_a_failed_walk_leaves_the_listing_to_walk(tmp_path, monkeypatch):
    folder = export(tmp_path)

    def broken(_):
        raise MemoryError('the child cannot walk')
    with monkeypatch.context() as patched:
        patched.setattr(walk, 'walk_folders', broken)   # what the forked children run
        walk.start_ahead(['--input', folder])
    assert walk._ahead is not None
    assert len(local_entries(folder)) == 3   # walked here instead
    assert walk._ahead is None


def test_a_child_reaped_elsewhere_or_killed_gives_nothing(tmp_path, monkeypatch):
    folder = export(tmp_path)
    ahead = walk.WalkAhead(folder)
    os.waitpid(ahead.pid, 0)   # e.g. a library's wait() for any child
    assert ahead.take() is None and all(file.closed for file in ahead._files)
    write = walk.walk_into

    def wrote_then_hung(fd, f):
        write(fd, f)
        time.sleep(60)   # killed here, its file complete
        return 0
    monkeypatch.setattr(walk, 'walk_into', wrote_then_hung)
    ahead = walk.WalkAhead(folder)
    deadline = time.monotonic() + 30
    while os.fstat(ahead._files[0].fileno()).st_size == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(ahead.pid, signal.SIGKILL)
    assert ahead.take() is None


def test_the_listing_walks_when_the_walk_ahead_fails(tmp_path, monkeypatch):
    folder = export(tmp_path)
    walk._ahead = walk.WalkAhead(folder)
    os.waitpid(walk._ahead.pid, 0)   # its result can no longer be trusted
    assert len(local_entries(folder)) == 3


def test_the_childs_work_writes_the_walk_and_says_whether_it_is_whole(tmp_path, monkeypatch):
    folder = export(tmp_path)
    hardened = []
    monkeypatch.setattr(walk, 'harden_process', lambda: hardened.append(True))
    with open(tmp_path / 'out', 'w+b') as out:
        assert walk.walk_into([out.fileno()], folder) == 0
        out.seek(0)
        assert sorted(walk.marshal.loads(out.read())) == entries(folder)
    assert hardened == [True]   # owner-only files, no core file, before the walk
    monkeypatch.setattr(walk, 'walk_folders', lambda f: [('x', 1, object())])  # unmarshallable
    with open(tmp_path / 'bad', 'w+b') as out:
        assert walk.walk_into([out.fileno()], folder) == 1


def test_a_child_that_exits_with_an_error_gives_nothing_whatever_it_wrote(tmp_path, monkeypatch):
    folder = export(tmp_path)
    write = walk.walk_into

    def wrote_then_failed(fd, f):
        assert write(fd, f) == 0
        return 3
    monkeypatch.setattr(walk, 'walk_into', wrote_then_failed)
    assert walk.WalkAhead(folder).take() is None


def tree(tmp_path):
    """An export of 12 files over 3 types and 4 hours, plus a top-level file, a symlinked
    folder (not entered), a symlinked file (listed) and an unreadable folder (skipped)."""
    root = tmp_path / 'tree'
    for i in range(12):
        write_file(root, f'users.messages.t{i % 3}.Send', [], n=i, raw=b'x' * (i + 1),
                   date=f'2024-05-0{i % 4 + 1}-00')
    (root / 'top.avro').write_bytes(b'x' * 7)
    (tmp_path / 'elsewhere').mkdir()
    (tmp_path / 'elsewhere' / 'hidden.avro').write_bytes(b'y')
    (root / 'linked').symlink_to(tmp_path / 'elsewhere', target_is_directory=True)
    (root / 'linked.avro').symlink_to(root / 'top.avro')
    (root / 'closed').mkdir(mode=0o000)
    return str(root)


@pytest.mark.parametrize('walkers', [1, 2, 3, 5])
@pytest.mark.parametrize('per_share', [1, 2, 16])
def test_a_walk_shared_between_processes_lists_each_file_once(tmp_path, monkeypatch, walkers,
                                                            per_share):
    folder = tree(tmp_path)
    whole = entries(folder)
    assert len(whole) == 14 and not any('hidden' in path for path, _, _ in whole)
    monkeypatch.setattr(walk, 'FOLDERS_PER_SHARE', per_share)
    found, shares = walk.split_walk(folder, walkers)
    assert len(shares) == walkers
    waiting = [f for share in shares for f in share]
    assert len(set(waiting)) == len(waiting)   # each waiting folder in one share only
    assert sorted(found + walk.walk_folders(waiting)) == whole
    taken = walk.WalkAhead(folder, walkers=walkers).take()
    assert taken is not None and len(taken) == len(whole) and sorted(taken) == whole


def test_the_walk_is_shared_only_once_the_top_is_walked(tmp_path, monkeypatch):
    folder = tree(tmp_path)
    monkeypatch.setattr(walk, 'FOLDERS_PER_SHARE', 2)
    found, shares = walk.split_walk(folder, 2)
    assert sum(len(share) for share in shares) >= 4 and all(shares)
    found_alone, [everything] = walk.split_walk(folder, 1)   # one process: nothing walked yet
    assert found_alone == [] and everything == [folder]


def test_a_walk_is_nothing_when_a_process_sharing_it_fails(tmp_path, monkeypatch):
    folder = tree(tmp_path)
    launcher = os.getpid()
    whole = walk.walk_folders

    def fails_in_a_helper(folders):   # the first child's parent is this process; a helper's
        if os.getppid() != launcher:  # is the first child
            raise OSError('a helper cannot walk')
        return whole(folders)
    monkeypatch.setattr(walk, 'FOLDERS_PER_SHARE', 1)
    with monkeypatch.context() as patched:
        patched.setattr(walk, 'walk_folders', fails_in_a_helper)
        assert walk.WalkAhead(folder, walkers=2).take() is None
        assert walk.WalkAhead(folder, walkers=1).take() is not None   # no helper: whole
    write = walk._write

    def wrote_then_failed_in_a_helper(fd, files):   # its file complete, its status not 0
        status = write(fd, files)
        return 3 if os.getppid() != launcher else status
    monkeypatch.setattr(walk, '_write', wrote_then_failed_in_a_helper)
    assert walk.WalkAhead(folder, walkers=2).take() is None


def test_a_walk_ahead_uses_at_most_one_process_per_core(tmp_path, monkeypatch):
    monkeypatch.setattr(walk.os, 'cpu_count', lambda: 1)
    assert len(walk.WalkAhead(str(tmp_path)).__dict__['_files']) == 1
    monkeypatch.setattr(walk.os, 'cpu_count', lambda: 64)
    ahead = walk.WalkAhead(str(tmp_path))
    assert len(ahead._files) == walk.WALKERS == 2 and ahead.take() == []


def test_the_walk_file_is_owner_only_and_unlinked(tmp_path):
    ahead = walk.WalkAhead(export(tmp_path), walkers=2)
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
    monkeypatch.setattr(walk.os, 'scandir', lambda p: opened.append(p) or Listing([Entry()]))
    assert list(walk.walk_folder('top')) == [(Entry.path, 7, 5)]
    assert opened == ['top']   # not entered as a folder
