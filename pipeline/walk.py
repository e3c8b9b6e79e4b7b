"""A local --input folder's range, listed in child processes while the command imports Beam.

Listing a month's export (~22,000 files in ~68,000 folders) takes ~0.75 s, on one core, after
the launcher has spent ~0.6 s importing Beam, also on one core. The command therefore starts
the listing in a child process before it imports anything (`start_ahead`, from
pipeline/startup.py), and the launcher takes the child's result (`take_ahead`) instead of
listing again: on a machine with a second core the range is listed by the time the launcher
needs it. The child lists exactly what the launcher would (transforms/listing.py: the type
folders the run reads, only their date= hours in range), with the selector worked out from the
command line the same way; the launcher takes the result only for the same folder and the same
selector.

The listing is mostly the kernel reading folders, which processes share without contention, so
the child finds the units, keeps every other one and gives the rest to a child of its own
(WALKERS). Each writes into an unlinked owner-only temporary file of its own; the launcher reads
them once the first child has exited cleanly (which it does only once its own child has).
Anything else (no fork, the child failed or was reaped elsewhere, another folder or range
asked for) means the launcher lists the folder itself, as it would have anyway. A run whose
window depends on earlier runs (`--since_last_run`, `--follow`) is not listed ahead. This
module (and what it imports) uses nothing from Beam.
"""
import datetime
import marshal
import os
import tempfile
from typing import List, NamedTuple, Optional, Sequence

from pipeline.hardening import harden_process
from pipeline.paths import UsageError, is_glob, parse_hour
from transforms import listing as stores
from transforms.layout import FileSelector
from transforms.listing import Entry, Unit

# Processes that list a folder ahead: the walk is mostly the kernel reading folders (~75% of
# its CPU), which two processes share without contention (a month: 0.32 -> 0.17 s).
WALKERS = 2
_EPOCH = datetime.datetime(1970, 1, 1)


class Ahead(NamedTuple):
    """What the child listed: the objects (up to the budget), the units, the type folders not
    read, the folders read and objects seen, and whether the budget was passed."""
    entries: List[Entry]
    units: List[Unit]
    types_skipped: List[str]
    requests: int
    objects: int
    over_budget: bool


def walk_folder(folder: str) -> List[Entry]:
    """Every file under a local folder, as Beam's local filesystem lists `folder/**`."""
    return stores.LocalStore().walk([folder])


def _option(argv: Sequence[str], name: str) -> Optional[str]:
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + '='):
            value = arg[len(name) + 1:]
    return value


def local_input_folder(argv: Sequence[str]) -> Optional[str]:
    """The folder a run's command line reads, if --input names a local folder (without its
    trailing slash), else None. Subcommands (`replay`) have no --input."""
    if argv[:1] == ['replay'] or (argv[:1] and not argv[0].startswith('-')):
        return None
    value = _option(argv, '--input')
    if not value or '://' in value or (is_glob(value) and not os.path.isdir(value)):
        return None
    folder = value.rstrip('/') or value
    return folder if os.path.isdir(folder) else None


def selector_from_argv(argv: Sequence[str]) -> Optional[FileSelector]:
    """The FileSelector a run of this command line lists with (pipeline/options.py makes the
    same from the parsed options), or None when it cannot be told without Beam."""
    if any(a.split('=', 1)[0] in ('--since_last_run', '--follow') for a in argv):
        return None
    from transforms.profiles import CLASSIC, PROFILES, currents_types, resolve_event_types
    mapping = _option(argv, '--mapping') or CLASSIC
    if mapping not in PROFILES:
        return None
    names = [n for n in (_option(argv, '--event_types') or '').split(',') if n.strip()]
    types = frozenset(currents_types(mapping))
    if names:
        found = [resolve_event_types(mapping, n) for n in names]
        if not all(found):
            return None
        types = frozenset().union(*found)
    try:
        start, end = (parse_hour(v, f) if v else None
                      for v, f in ((_option(argv, '--start'), '--start'),
                                   (_option(argv, '--end'), '--end')))
    except UsageError:
        return None
    return FileSelector(types, start, end)


def _pack_unit(unit: Unit) -> tuple:
    """A unit as marshal writes it (no datetimes)."""
    hours = [None if h is None else int((h - _EPOCH).total_seconds()) // 3600
             for h in (unit.start, unit.end)]
    return (unit.kind, unit.path, hours[0], hours[1], unit.event_type, unit.size, unit.stamp)


def _unpack_unit(packed: tuple) -> Unit:
    kind, path, start, end, event_type, size, stamp = packed
    hour = (lambda n: None if n is None else _EPOCH + datetime.timedelta(hours=n))  # noqa
    return Unit(kind, path, hour(start), hour(end), event_type, size, stamp)


class WalkAhead:
    """The range of `folder` for `selector` being listed in child processes; `take` waits for
    it and returns it."""

    def __init__(self, folder: str, selector: FileSelector, budget: int,
                 walkers: Optional[int] = None):
        self.folder = folder
        self.selector = selector
        self.budget = budget
        walkers = walkers or max(1, min(WALKERS, os.cpu_count() or 1))
        # unlinked, owner-only; one per listing process
        self._files = [tempfile.TemporaryFile() for _ in range(walkers)]
        self.pid = os.fork()
        if self.pid == 0:   # the child: never returns, never runs the parent's teardown
            status = 1
            try:
                status = walk_into([f.fileno() for f in self._files], folder, selector, budget)
            finally:
                os._exit(status)

    def take(self) -> Optional[Ahead]:
        """The children's listing once the first has exited cleanly, else None. Closes all."""
        try:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:   # reaped by someone else: its outcome is unknown
                return None
            if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                return None
            parts = []
            for file in self._files:
                file.seek(0)
                parts.append(marshal.loads(file.read()))
            head = parts[0]
            entries = [e for part in parts for e in part['entries']]
            return Ahead(entries, [_unpack_unit(u) for u in head['units']],
                         head['types_skipped'], sum(p['requests'] for p in parts),
                         sum(p['objects'] for p in parts),
                         any(p['over'] for p in parts) or len(entries) > self.budget)
        except (OSError, ValueError, EOFError, TypeError, KeyError, IndexError):
            return None
        finally:
            for file in self._files:
                file.close()


def walk_into(fds: Sequence[int], folder: str, selector: FileSelector, budget: int) -> int:
    """The first child's work: the units of the range, listed by len(fds) processes (this one
    and a child per further fd, every len(fds)-th unit each), each marshalling what it listed
    into its fd; 0 once all is written."""
    try:
        harden_process()   # as the launcher: no core file holding the listing
        store = stores.LocalStore()
        layout, units = stores.plan_units(store, folder.rstrip('/') + '/', selector)
        shares = [units[k::len(fds)] for k in range(len(fds))]
        helpers = [_fork_walker(fd, share, budget) for fd, share in zip(fds[1:], shares[1:])]
        own = _listed(shares[0], budget, store, list(layout.files))
        own.update(units=[_pack_unit(u) for u in units],
                   types_skipped=sorted(set(layout.types_skipped)))
        status = _write(fds[0], own)
        for pid in helpers:
            _, helper = os.waitpid(pid, 0)
            if not os.WIFEXITED(helper) or os.WEXITSTATUS(helper) != 0:
                status = 1
        return status
    except Exception:   # noqa: BLE001 - the launcher lists the folder itself
        return 1


def _listed(units: Sequence[Unit], budget: int, store: stores.LocalStore,
            entries: Optional[List[Entry]] = None) -> dict:
    """What one process lists of its units, stopping past `budget` objects."""
    entries = entries or []
    over = False
    for unit in units:
        for entry in stores.list_unit(store, unit):
            entries.append(entry)
        if len(entries) > budget:
            over = True
            break
    return {'entries': entries, 'over': over, 'requests': store.counter.requests,
            'objects': store.counter.objects}


def _fork_walker(fd: int, units: List[Unit], budget: int) -> int:
    """A child listing these units into `fd`; its pid."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = _write(fd, _listed(units, budget, stores.LocalStore()))
        finally:
            os._exit(status)
    return pid


def _write(fd: int, listed: dict) -> int:
    view = memoryview(marshal.dumps(listed))
    while view:
        view = view[os.write(fd, view):]
    return 0


_ahead: Optional[WalkAhead] = None


def start_ahead(argv: Sequence[str], budget: Optional[int] = None) -> Optional[WalkAhead]:
    """Start listing the command's local --input folder in child processes, if it names one
    and its range can be told from the command line."""
    global _ahead
    folder = local_input_folder(argv)
    selector = selector_from_argv(argv) if folder is not None else None
    if selector is None or _ahead is not None or not hasattr(os, 'fork'):
        return None
    if budget is None:
        budget = stores.LAUNCHER_BUDGET
    try:
        _ahead = WalkAhead(folder, selector, budget)
    except OSError:   # no temporary file or no fork: the launcher lists the folder itself
        return None
    return _ahead


def take_ahead(folder: str, selector: FileSelector) -> Optional[Ahead]:
    """The listing started ahead for exactly this folder and selector (once), else None."""
    global _ahead
    ahead = _ahead
    if ahead is None or ahead.folder.rstrip('/') != folder.rstrip('/'):
        return None
    _ahead = None
    found = ahead.take()
    return found if ahead.selector == selector else None
