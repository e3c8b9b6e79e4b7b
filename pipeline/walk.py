"""A local --input folder's files, walked with the standard library only, maybe ahead of time.

Listing a month's export (~22,000 files in ~68,000 folders) takes ~0.75 s, on one core, after
the launcher has spent ~0.6 s importing Beam, also on one core. The command therefore starts
the walk in a child process before it imports anything (`start_ahead`, from
pipeline/startup.py), and the listing takes the child's result (`take_ahead`) instead of walking
again: on a machine with a second core the folder is listed by the time the launcher needs it.

The walk is mostly the kernel reading folders, which processes share without contention, so
the child walks the top of the folder and shares what is left with a child of its own (WALKERS):
a month's walk ends ~0.1-0.2 s sooner beside the import, more when the folder cache is cold.
The child is forked while the command is one thread with only the standard library loaded;
each walking process writes into an unlinked owner-only temporary file of its own, and the
launcher reads them once the first child has exited cleanly (which it does only once its own
children have). Anything else (no fork, the child failed or was reaped elsewhere, another
folder asked for) means the launcher walks the folder itself, as it would have anyway.
This module (and what it imports) uses nothing from Beam.
"""
import collections
import marshal
import os
import tempfile
from typing import List, Optional, Sequence, Tuple

from pipeline.hardening import harden_process
from pipeline.paths import is_glob

Entry = Tuple[str, int, float]   # path, bytes, modification time (as Beam's FileMetadata)
# Processes that walk a folder ahead: the walk is mostly the kernel reading folders (~75% of
# its CPU), which two processes share without contention (a month: 0.32 -> 0.17 s).
WALKERS = 2
# How many folders per walking process the first child finds before it shares them out
# (a Currents export: after its 34 event_type= folders, ~720 date= folders each).
FOLDERS_PER_SHARE = 16


def walk_folder(folder: str) -> List[Entry]:
    """Every file under a local folder, as Beam's local filesystem lists `folder/**` (os.walk:
    symlinked folders are not entered, files that vanish or cannot be stat'ed are left out),
    with one stat per file instead of three: an export puts each file in folders of its own,
    where Beam's listing took ~1.1 s for a month."""
    return walk_folders([folder])


def walk_folders(folders: Sequence[str]) -> List[Entry]:
    """Every file under each of these folders (walk_folder's rules), in no particular order."""
    stack, files = list(folders), []
    while stack:
        _scan(stack.pop(), stack, files)
    return files


def _scan(folder: str, folders: List[str], files: List[Entry]) -> None:
    """One folder: its subfolders (not symlinked ones) onto `folders`, its files onto `files`."""
    try:
        entries = os.scandir(folder)
    except OSError:
        return   # as os.walk: an unreadable folder is skipped
    with entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.is_symlink():
                    folders.append(entry.path)
                continue
            try:
                stat = entry.stat()
            except OSError:
                continue
            files.append((entry.path, stat.st_size, stat.st_mtime))


def split_walk(folder: str, shares: int) -> Tuple[List[Entry], List[List[str]]]:
    """Walks `folder` breadth first until FOLDERS_PER_SHARE folders per share are waiting;
    returns the files found so far and the waiting folders dealt into `shares` lists
    (together, walk_folder's files: each waiting folder is walked by exactly one share)."""
    waiting, files = collections.deque([folder]), []
    while waiting and shares > 1 and len(waiting) < FOLDERS_PER_SHARE * shares:
        found: List[str] = []
        _scan(waiting.popleft(), found, files)
        waiting.extend(found)
    waiting = list(waiting)
    return files, [waiting[k::shares] for k in range(shares)]


def local_input_folder(argv: Sequence[str]) -> Optional[str]:
    """The folder a run's command line reads, if --input names a local folder (as the listing
    will walk it: no trailing slash), else None. Subcommands (`replay`) have no --input."""
    if argv[:1] == ['replay']:
        return None
    value = None
    for i, arg in enumerate(argv):
        if arg == '--input' and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith('--input='):
            value = arg[len('--input='):]
    if not value or '://' in value or is_glob(value):
        return None
    folder = value.rstrip('/') or value
    return folder if os.path.isdir(folder) else None


class WalkAhead:
    """`walk_folder(folder)` running in child processes; `take` waits for it and returns it.

    One child is forked; it walks the top of the folder, then shares the folders still to walk
    with `walkers - 1` children of its own, each writing its files into a file of its own, and
    exits cleanly only once they all have.
    """

    def __init__(self, folder: str, walkers: Optional[int] = None):
        self.folder = folder
        walkers = walkers or max(1, min(WALKERS, os.cpu_count() or 1))
        # unlinked, owner-only; one per walking process
        self._files = [tempfile.TemporaryFile() for _ in range(walkers)]
        self.pid = os.fork()
        if self.pid == 0:   # the child: never returns, never runs the parent's teardown
            status = 1
            try:
                status = walk_into([f.fileno() for f in self._files], folder)
            finally:
                os._exit(status)

    def take(self) -> Optional[List[Entry]]:
        """The children's walk once the first has exited cleanly, else None. Closes everything."""
        try:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:   # reaped by someone else: its outcome is unknown
                return None
            if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                return None
            files: List[Entry] = []
            for file in self._files:
                file.seek(0)
                files += marshal.loads(file.read())
            return files
        except (OSError, ValueError, EOFError, TypeError):
            return None
        finally:
            for file in self._files:
                file.close()


def walk_into(fds: Sequence[int], folder: str) -> int:
    """The first child's work: `walk_folder(folder)` shared between len(fds) processes (this
    one and a child per further fd), each marshalling its files into its fd; 0 once all is
    written."""
    try:
        harden_process()   # as the launcher: no core file holding the listing
        found, shares = split_walk(folder, len(fds))
        helpers = [_fork_walker(fd, share) for fd, share in zip(fds[1:], shares[1:])]
        status = _write(fds[0], found + walk_folders(shares[0]))
        for pid in helpers:
            _, helper = os.waitpid(pid, 0)
            if not os.WIFEXITED(helper) or os.WEXITSTATUS(helper) != 0:
                status = 1
        return status
    except Exception:   # noqa: BLE001 - the launcher walks the folder itself
        return 1


def _fork_walker(fd: int, folders: List[str]) -> int:
    """A child walking these folders into `fd`; its pid."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = _write(fd, walk_folders(folders))
        finally:
            os._exit(status)
    return pid


def _write(fd: int, files: List[Entry]) -> int:
    view = memoryview(marshal.dumps(files))
    while view:
        view = view[os.write(fd, view):]
    return 0


_ahead: Optional[WalkAhead] = None


def start_ahead(argv: Sequence[str]) -> Optional[WalkAhead]:
    """Start walking the command's local --input folder in a child process, if it names one."""
    global _ahead
    folder = local_input_folder(argv)
    if folder is None or _ahead is not None or not hasattr(os, 'fork'):
        return None
    try:
        _ahead = WalkAhead(folder)
    except OSError:   # no temporary file or no fork: the listing walks the folder itself
        return None
    return _ahead


def take_ahead(folder: str) -> Optional[List[Entry]]:
    """The walk started ahead for exactly this folder (once), else None."""
    global _ahead
    ahead = _ahead
    if ahead is None or ahead.folder != folder:
        return None
    _ahead = None
    return ahead.take()
