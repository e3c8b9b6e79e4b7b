"""`--since_last_run`: send only the input files no earlier run delivered, under a lock.

One run: take the lock on `--rejects` (pipeline/lock.py; a live holder means another run is
sending: say so in one line and exit 0), load the per-file record (pipeline/ledger.py), list
the input, subtract what is recorded in the same version, and run what is left in waves. Each
wave's pipeline records its files as its last step; the lock is released at the end, or, for
a detached Dataflow job, left to the job until its record appears. `--follow`
(pipeline/follow.py) repeats the same pass in one process.
"""
import datetime
import sys
import time
from typing import List, Optional, Tuple

from apache_beam.options.pipeline_options import TestOptions

from pipeline.builder import build_pipeline, is_dataflow
from pipeline.cli import EXIT_OK, check_sending_setup, finish
from pipeline.ledger import Ledger, segment_path
from pipeline.listing import DELIVERED, Listing, input_pattern, list_currents_files
from pipeline.lock import Lock, LockBusy, lock_path
from pipeline.paths import UsageError, hour_from_path
from pipeline.running import run_waves, staged_record
from pipeline.summary import Summary
from pipeline.waves import largest_first, make_waves, wave_size

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


def new_files(settings, pattern: str, lock: Optional[Lock]) -> Tuple[Listing, Ledger]:
    """Lists the input minus the files recorded as delivered (compacting the record if due)."""
    try:
        ledger = Ledger.load(settings.rejects)
        if lock is not None and ledger.needs_compaction():
            ledger.compact()
    except Exception as exc:
        raise UsageError(f'cannot read the record of delivered files under '
                         f'{settings.rejects}: {_short(exc)}') from None
    listing = list_currents_files(pattern, settings.selector, frozenset(), ledger.delivered)
    settings.file_stamps = listing.stamps
    return listing, ledger


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
    wave_hours = wave_size(settings.wave_hours, settings.wave_mb, dataflow, settings.wait)
    pattern = input_pattern(settings.input)
    if settings.plan:
        from pipeline.plan import make_plan, plan_text
        listing, _ = new_files(settings, pattern, None)
        plan = make_plan(listing.files, listing.skipped, wave_hours,
                         settings.max_events_per_second, settings.mapping,
                         settings.selector.event_types)
        print(plan_text(plan, settings.max_events_per_second), file=out)
        return EXIT_OK
    check_sending_setup(settings, options)
    lock, go = take_lock(settings, options, out, 'since_last_run')
    if not go:
        return EXIT_OK
    handed_over = False
    workers = None
    try:
        listing, ledger = new_files(settings, pattern, lock)
        if not listing.files and not listing.skipped:
            raise UsageError(f'no input files match {pattern}')
        listed = len(listing.files) + sum(listing.skipped.values())
        delivered = listing.skipped.get(DELIVERED, 0)
        print(f'since_last_run: {len(listing.files)} new or changed files to send, {delivered} '
              f'delivered by earlier runs ({listed} input files listed; record of '
              f'{len(ledger)} files read from {ledger.objects_read} objects)', file=out)
        if not listing.files:
            print(f'since_last_run: nothing new ({time.monotonic() - started:.1f} s)', file=out)
            return finish(Summary.from_listing(listing.skipped, settings.mapping),
                          settings.summary_output, settings.rejects)
        local_parallelism(options, argv, sum(size for _, _, size in listing.files))
        waves = make_waves(listing.files, wave_hours)
        detached = dataflow and not settings.wait
        workers = start_warm_workers(options, settings.fresh_worker_processes)
        if uses_worker_processes(options):
            print(f'local run: {worker_processes(options)} worker processes, '
                  f'{"forked warm from this one" if workers else "each started fresh"}',
                  file=out)
        if lock is not None and not detached:
            lock.start_renewing()
        code = run_waves(settings, options, listing, waves, detached, out,
                         worker_runner(options, workers))
        if code == EXIT_OK and lock is not None and detached \
                and not options.view_as(TestOptions).dry_run:
            # The job records its files when it completes: it holds the lock until then.
            handed_over = lock.hand_over(segment_path(settings.rejects, settings.run_id, 'w0'),
                                         DETACHED_LEASE_SECONDS)
        elif code == EXIT_OK:
            print(f'since_last_run: {lag_text(listing.files)}', file=out)
        return code
    finally:
        if workers:
            workers.close()
        if not handed_over:
            release(lock)


def wave_summary(settings, options, files: List[Tuple[str, Optional[str], int]], wave: str,
                 runner=None) -> Summary:
    """Runs one wave's pipeline to completion (it records its files last); its summary."""
    p = build_pipeline(settings, largest_first(files), options, wave=wave,
                       runner=runner)
    with staged_record(settings, files, wave):
        result = p.run()
        result.wait_until_finish()
    return Summary.from_result(result, settings.mapping)
