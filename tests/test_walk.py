"""A local --input folder walked ahead in a child process while the command imports Beam
(pipeline/walk.py), and the listing that takes that walk (pipeline/listing.py).

That the walk lists what Beam's local filesystem lists is test_read_costs.py's; here: which
command lines start it, that the listing takes it once and for its folder only, and that any
failure of the child leaves the listing to walk the folder itself.
"""
import os

import pytest

import pipeline.listing as listing
import pipeline.walk as walk
from pipeline.listing import input_pattern, list_currents_files, walk_local_folder
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
    folder = str(tmp_path)
    assert walk.local_input_folder(['--input', folder]) == folder
    assert walk.local_input_folder(['--input=' + folder + '/', '--plan']) == folder
    assert walk.local_input_folder(['--input', '/nowhere', '--input', folder]) == folder  # last
    assert input_pattern(folder + '/') == folder + '/**'   # the listing's folder: no slash
    assert listing._local_folder(input_pattern(folder + '/')) == folder


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
    assert ahead._file.closed
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
    assert len(taken) == 2 and len(list(walk_local_folder(folder))) == 3


def test_a_failed_walk_leaves_the_listing_to_walk(tmp_path, monkeypatch):
    folder = export(tmp_path)

    def broken(_):
        raise MemoryError('the child cannot walk')
    with monkeypatch.context() as patched:
        patched.setattr(walk, 'walk_folder', broken)   # what the forked child runs
        walk.start_ahead(['--input', folder])
    assert walk._ahead is not None
    assert len(list(walk_local_folder(folder))) == 3   # walked here instead
    assert walk._ahead is None


def test_a_child_reaped_elsewhere_or_killed_gives_nothing(tmp_path):
    folder = export(tmp_path)
    ahead = walk.WalkAhead(folder)
    os.waitpid(ahead.pid, 0)   # e.g. a library's wait() for any child
    assert ahead.take() is None and ahead._file.closed
    ahead = walk.WalkAhead(folder)
    os.kill(ahead.pid, 9)
    assert ahead.take() is None


def test_the_listing_walks_when_the_walk_ahead_fails(tmp_path, monkeypatch):
    folder = export(tmp_path)
    walk._ahead = walk.WalkAhead(folder)
    os.waitpid(walk._ahead.pid, 0)   # its result can no longer be trusted
    assert len(list(walk_local_folder(folder))) == 3


def test_the_walk_file_is_owner_only_and_unlinked(tmp_path):
    ahead = walk.WalkAhead(export(tmp_path))
    stat = os.fstat(ahead._file.fileno())
    assert stat.st_nlink == 0 and stat.st_mode & 0o077 == 0
    assert ahead.take() is not None
