"""A local --input folder's files, walked with the standard library only, maybe ahead of time.

Listing a month's export (~22,000 files in ~68,000 folders) takes ~0.75 s, on one core, after
the launcher has spent ~0.6 s importing Beam, also on one core. The command therefore starts
the walk in a child process before it imports anything (`start_ahead`, from
pipeline/startup.py), and the listing takes the child's result (`take_ahead`) instead of walking
again: on a machine with a second core the folder is listed by the time the launcher needs it.

The child is forked while the command is one thread with only the standard library loaded, and
writes into an unlinked owner-only temporary file; the launcher reads the file once the child
has exited cleanly. Anything else (no fork, the child failed or was reaped elsewhere, another
folder asked for) means the launcher walks the folder itself, as it would have anyway.
This module (and what it imports) uses nothing from Beam.
"""
import marshal
import os
import tempfile
from typing import Iterator, List, Optional, Sequence, Tuple

from pipeline.hardening import harden_process
from pipeline.paths import is_glob

Entry = Tuple[str, int, float]   # path, bytes, modification time (as Beam's FileMetadata)


def walk_folder(folder: str) -> Iterator[Entry]:
    """Every file under a local folder, as Beam's local filesystem lists `folder/**` (os.walk:
    symlinked folders are not entered, files that vanish or cannot be stat'ed are left out),
    with one stat per file instead of three: an export puts each file in folders of its own,
    where Beam's listing took ~1.1 s for a month."""
    stack = [folder]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue   # as os.walk: an unreadable folder is skipped
        with entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    if not entry.is_symlink():
                        stack.append(entry.path)
                    continue
                try:
                    stat = entry.stat()
                except OSError:
                    continue
                yield entry.path, stat.st_size, stat.st_mtime


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
    """`walk_folder(folder)` running in a child process; `take` waits for it and returns it."""

    def __init__(self, folder: str):
        self.folder = folder
        self._file = tempfile.TemporaryFile()   # unlinked, owner-only; the child writes here
        self.pid = os.fork()
        if self.pid == 0:   # the child: never returns, never runs the parent's teardown
            status = 1
            try:
                status = walk_into(self._file.fileno(), folder)
            finally:
                os._exit(status)

    def take(self) -> Optional[List[Entry]]:
        """The child's walk once it has exited cleanly, else None. Closes everything."""
        try:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:   # reaped by someone else: its outcome is unknown
                return None
            if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                return None
            self._file.seek(0)
            return marshal.loads(self._file.read())
        except (OSError, ValueError, EOFError, TypeError):
            return None
        finally:
            self._file.close()


def walk_into(fd: int, folder: str) -> int:
    """The child's work: `walk_folder(folder)`, marshalled into `fd`; 0 once all is written."""
    try:
        harden_process()   # as the launcher: no core file holding the listing
        view = memoryview(marshal.dumps(list(walk_folder(folder))))
        while view:
            view = view[os.write(fd, view):]
        return 0
    except Exception:   # noqa: BLE001 - the launcher walks the folder itself
        return 1


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
