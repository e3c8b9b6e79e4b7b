"""`--since_last_run`: send only the input files no earlier run delivered, under a lock.

One pass: take the lock on `--rejects` (pipeline/lock.py; a live holder means another run is
sending: say so in one line and exit 0), work out the window of hours to look at (from the
oldest hour not yet complete, minus --lookback_hours), list only that window of the input,
subtract the files the per-file record of those hours holds in the same version
(pipeline/ledger.py), and run what is left in waves. Files are recorded as they complete; the
last wave moves the window. The lock is released at the end, or, for a detached Dataflow job,
left to the job until its done marker appears. `--follow` (pipeline/follow.py) repeats the pass.
"""
import datetime
import json
import sys
import time
from typing import List, NamedTuple, Optional, Tuple

from apache_beam.options.pipeline_options import TestOptions

from apache_beam.io.filesystems import FileSystems

from pipeline.builder import DONE_PREFIX, build_pipeline, done_marker, is_dataflow
from pipeline.cli import EXIT_OK, check_sending_setup, finish
from pipeline.ledger import fold_pieces, load_window_records, read_window, window_path
from pipeline.listing import DELIVERED, Listing, Skip, input_pattern, list_input
from pipeline.lock import Lock, LockBusy, lock_path
from pipeline.paths import FileSelector, UsageError, hour_from_path
from pipeline.runners import classify
from pipeline.running import after_wave, run_waves
from pipeline.summary import Summary
from pipeline.waves import largest_first, make_waves, unit_waves, wave_size
from transforms.layout import hour_name, range_cap
from transforms.manifest import WindowUpdate
from transforms.listing import Counter, store_for
from transforms.records import Records, load_records, records_dir, write_whole

# A submitted (detached) Dataflow job holds the lock until its per-file record appears, or
# at most this long if it fails; the next launch then takes the stale lock over.
DETACHED_LEASE_SECONDS = 6 * 3600


def take_lock(settings, options, out, mode: str) -> Tuple[Optional[Lock], bool]:
    """(the lock, True) when this run may send; (None, False) when another run holds it.

    A dry run takes no lock: it writes nothing under --rejects.
    """
    if settings.dry_run_output:
        return None, True
    path = lock_path(settings.rejects)
    try:
        lock = Lock(path, options=options)
        lock.acquire(settings.run_id)
    except LockBusy as busy:
        print(f'{mode}: nothing to do: another run is sending: {busy}', file=out)
        return None, False
    except UsageError:
        raise
    except Exception as exc:   # no access, no such bucket, a missing client library
        raise UsageError(f'cannot take the lock {path}: {_short(exc)}') from None
    if lock.taken_over:
        print(f'{mode}: took over a stale lock of {lock.taken_over.describe()}', file=out)
    return lock, True


class Window(NamedTuple):
    """The hours a `--since_last_run` pass lists: from `start` (None: the whole input).
    `previous`: the newest date= hour the last completed pass listed, if any."""
    start: Optional[datetime.datetime]
    previous: Optional[datetime.datetime]

    def describe(self) -> str:
        if self.start is None:
            return 'the whole input'
        return f'date= hours from {self.start:%Y-%m-%d-%H}'

    def update(self, listing: Listing) -> WindowUpdate:
        """What this pass records for the next one, once it completes: the newest hour the
        launcher listed, or (the workers listed) the newest they read, never before
        `previous`."""
        newest = None if listing.on_workers else listing.newest_hour
        return WindowUpdate(hour_name(newest) if newest else None,
                            hour_name(self.previous) if self.previous else None)


def window_for(settings) -> Window:
    """From the oldest hour not yet complete minus --lookback_hours: the newest date= hour the
    last completed pass listed may still receive files (Braze writes an hour's files during and
    just after that hour), so each pass lists from that hour minus --lookback_hours on. The
    first pass, and --lookback_hours 0, look at the whole input."""
    previous = read_window(settings.rejects)
    start = None
    if previous is not None and settings.lookback_hours:
        start = previous - datetime.timedelta(hours=settings.lookback_hours)
    if settings.selector.start is not None:
        start = settings.selector.start if start is None else max(start, settings.selector.start)
    return Window(start, previous)


def new_files(settings, options, window: Window, read_only: bool = False,
              on_workers: bool = False) -> Tuple[Listing, Records]:
    """Lists the window minus the files recorded as delivered (the record of the window's hours
    only). `read_only` (--plan): nothing is folded, merged or written."""
    selector = FileSelector(settings.selector.event_types, window.start, settings.selector.end)
    counter = Counter()
    try:
        if read_only:
            records = load_records(settings.rejects, window.start,
                                   range_cap() if window.start else None, counter=counter)
        elif on_workers:   # the workers read the record of their own hours
            fold_pieces(settings.rejects)
            records = Records()
        else:
            records = load_window_records(settings.rejects, window.start,
                                          range_cap() if window.start else None, counter)
            remove_done_markers(settings.rejects)
    except Exception as exc:
        raise UsageError(f'cannot read the record of delivered files under '
                         f'{settings.rejects}: {_short(exc)}') from None
    listing = list_input(settings.input, selector, Skip(recorded=records.recorded,
                                                        reason=DELIVERED), options,
                         on_workers=on_workers)
    settings.file_stamps = listing.stamps
    return listing._replace(requests=listing.requests + counter.requests,
                            objects=listing.objects + counter.objects), records


def remove_done_markers(rejects: str) -> None:
    """The done markers of earlier passes (a submitted job's lock waited for them): litter."""
    try:
        store = store_for(rejects)
        files, _ = store.children(records_dir(rejects) + '/')
        markers = [p for p, _, _ in files if p.rsplit('/', 1)[-1].startswith(DONE_PREFIX)]
        if markers:
            FileSystems.delete(markers)
    except Exception:  # noqa: BLE001 - only litter
        pass


def advance_window(settings, window: Window, listing: Listing) -> None:
    """A pass that completed with nothing to send moves the window itself (a dry run records
    nothing)."""
    update = window.update(listing)
    hours = [h for h in update if h]
    if settings.dry_run_output or not hours:
        return
    write_whole(window_path(settings.rejects),
                json.dumps({'from': max(hours), 'run_id': settings.run_id}).encode('utf-8'),
                'application/json')


def _short(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f'{type(exc).__name__}: {lines[0][:200] if lines else ""}'


def release(lock: Optional[Lock]) -> None:
    """Releases the lock; a failure only delays the next run until the lease ends."""
    if lock is None:
        return
    try:
        lock.release()
    except Exception as exc:
        print(f'warning: could not release the lock {lock.path} ({_short(exc)}); the next run '
              f'takes it over when its lease ends', file=sys.stderr)


def newest_hour(files) -> Optional[datetime.datetime]:
    hours = [h for h in (hour_from_path(f[0]) for f in files) if h is not None]
    return max(hours) if hours else None


def lag_text(files, now: Optional[float] = None) -> str:
    """`lag H:MM:SS (newest date= hour ...)`: now minus the newest date= hour sent."""
    hour = newest_hour(files)
    if hour is None:
        return 'lag n/a (no date= hour in the paths)'
    now = time.time() if now is None else now
    seconds = max(0, int(now - hour.replace(tzinfo=datetime.timezone.utc).timestamp()))
    return f'lag {datetime.timedelta(seconds=seconds)} (newest date= hour {hour:%Y-%m-%d-%H})'


def since_last_run(settings, options, argv, out) -> int:
    from pipeline.local_runner import (local_parallelism, worker_runner,
                                       start_warm_workers, uses_worker_processes,
                                       worker_processes)
    started = time.monotonic()
    dataflow = is_dataflow(options)
    wave_hours = wave_size(settings.wave_hours, settings.wave_mb, dataflow, settings.wait,
                           remote=not classify(options).local)
    if settings.plan:
        from pipeline.plan import make_plan, plan_text
        window = window_for(settings)
        listing, _ = new_files(settings, options, window, read_only=True,
                               on_workers=not classify(options).local)
        print(f'since_last_run: would look at {window.describe()}', file=out)
        plan = make_plan(listing, wave_hours, settings.max_events_per_second, settings.mapping,
                         settings.selector.event_types, options=options)
        print(plan_text(plan, settings.max_events_per_second), file=out)
        return EXIT_OK
    check_sending_setup(settings, options)
    lock, go = take_lock(settings, options, out, 'since_last_run')
    if not go:
        return EXIT_OK
    handed_over = False
    workers = None
    try:
        window = window_for(settings)
        listing, records = new_files(settings, options, window,
                                     on_workers=not classify(options).local)
        if not listing.files and not listing.skipped and not listing.units \
                and window.start is None:
            raise UsageError(f'no input files match {input_pattern(settings.input)}')
        listed = len(listing.files) + sum(listing.skipped.values())
        delivered = listing.skipped.get(DELIVERED, 0)
        if listing.on_workers:
            print(f'since_last_run: looking at {window.describe()}: {len(listing.units)} units '
                  f'listed by the workers, who skip the files earlier runs delivered', file=out)
        else:
            print(f'since_last_run: {len(listing.files)} new or changed files to send, '
                  f'{delivered} delivered by earlier runs ({listed} input files listed in '
                  f'{window.describe()}, {listing.requests} LIST requests; record of '
                  f'{len(records)} files read from {records.objects_read} objects)', file=out)
        if not listing.files and not listing.on_workers:
            advance_window(settings, window, listing)
            print(f'since_last_run: nothing new ({time.monotonic() - started:.1f} s)', file=out)
            return finish(Summary.from_listing(listing.skipped, settings.mapping),
                          settings.summary_output, settings.rejects, report=settings.report)
        local_parallelism(options, argv, sum(size for _, _, size in
                                             listing.files or listing.sample or ()))
        waves = (unit_waves(listing.units, wave_hours, listing.sample) if listing.on_workers
                 else make_waves(listing.files, wave_hours))
        detached = dataflow and not settings.wait
        workers = start_warm_workers(options, settings.fresh_worker_processes)
        if uses_worker_processes(options):
            print(f'local run: {worker_processes(options)} worker processes, '
                  f'{"forked warm from this one" if workers else "each started fresh"}',
                  file=out)
        if lock is not None and not detached:
            lock.start_renewing()
        code = run_waves(settings, options, listing, waves, detached, out,
                         worker_runner(options, workers),
                         window=window.update(listing))
        if code == EXIT_OK and lock is not None and detached \
                and not options.view_as(TestOptions).dry_run:
            # The job records its files as they complete: it holds the lock until it is over.
            handed_over = lock.hand_over(done_marker(settings, f'w{len(waves) - 1}'),
                                         DETACHED_LEASE_SECONDS)
        elif code == EXIT_OK and listing.files:
            print(f'since_last_run: {lag_text(listing.files)}', file=out)
        return code
    finally:
        if workers:
            workers.close()
        if not handed_over:
            release(lock)


def wave_summary(settings, options, files: List[Tuple[str, Optional[str], int]], wave: str,
                 runner=None, window: Optional[WindowUpdate] = None) -> Summary:
    """Runs one wave's pipeline to completion (its files recorded as they complete); its
    summary."""
    p = build_pipeline(settings, largest_first(files), options, wave=wave, runner=runner,
                       window=window)
    result = p.run()
    result.wait_until_finish()
    return Summary.from_result(result, settings.mapping).add(after_wave(settings, wave))
