"""Running a listed input wave by wave: build, run, wait, stop cleanly, sum up.

Used by a run and by `--since_last_run`; each wave is one pipeline whose files are recorded as
they complete (transforms/completion.py), so a stopped or failed run is continued with
`--resume`, which sends again only what was in flight.
"""
import json
import logging
import os
from typing import Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import TestOptions

from pipeline import cli
from pipeline.builder import (build_pipeline, coverage_path, is_dataflow, job_options,
                              records_files)
from pipeline.cli import (EXIT_OK, EXIT_SIGNAL_BASE, PROG, error, finish, run_failed)
from pipeline.ledger import fold_pieces
from pipeline.listing import DELIVERED
from pipeline.plan import estimate_events
from pipeline.progress import (SIGNAL_NAMES, ProgressMonitor, StopOnSignal, dataflow_poll,
                               live_channel)
from pipeline.remote import RemoteRun
from pipeline.resume import manifest_dir
from pipeline.summary import LISTED, NOT_STARTED, Summary
from pipeline.waves import largest_first, partitions_of
from transforms.expand import ListOnWorkers, SkipRecorded
from transforms.progress import LiveChannel
from transforms.records import read_object


def worker_death(exc: BaseException, workers) -> Optional[str]:
    """'a worker process died (signal 9)' when a local worker process was killed."""
    signals = workers.deaths() if workers is not None and hasattr(workers, 'deaths') else []
    if signals:
        return f'a worker process died (signal {signals[0]}); rerun with --resume'
    text = str(exc)
    if any(marker in text for marker in _WORKER_GONE):
        return 'a worker process died; rerun with --resume'
    return None

_WORKER_GONE = ('Socket closed', 'StatusCode.UNAVAILABLE', 'worker process exited',
                'SDK harness', 'Connection reset', 'failed to connect to all addresses',
                'StatusCode.CANCELLED')


def wave_source(settings, wave, on_workers: bool, live=None):
    """What a wave's pipeline reads: its files, largest first, or its units, listed by the
    workers (who skip what the per-file record holds when the run skips earlier work)."""
    if not on_workers:
        return largest_first(wave)
    skip = None
    if settings.resume:
        skip = SkipRecorded(settings.rejects, 'skip_done')
    elif settings.since_last_run or settings.follow:
        skip = SkipRecorded(settings.rejects, DELIVERED)
    return ListOnWorkers(wave, settings.selector, skip, settings.store_credentials,
                         live or LiveChannel())


def after_wave(settings, wave_name: str) -> Summary:
    """Once a wave is over: its done files folded into the record's hours, and its coverage
    (per event type and hour) as a summary."""
    if records_files(settings):
        try:
            fold_pieces(settings.rejects)
        except Exception as exc:  # noqa: BLE001 - folded by the next run that reads them
            logging.getLogger(__name__).warning('could not fold the record pieces: %s', exc)
    path = coverage_path(settings, wave_name)
    try:
        body = json.loads(read_object(path).decode('utf-8'))
        FileSystems.delete([path])
    except Exception:  # noqa: BLE001 - e.g. a stopped wave: no coverage, the counts stand
        return Summary({}, settings.mapping)
    return Summary.from_coverage(body.get('cells', ()), settings.mapping)


def run_waves(settings, options, listing, waves, detached, out, runner=None, undated=0,
              workers=None, window=None) -> int:
    """Runs the waves one after the other; a failed wave stops the run with one line.

    `window`: what a `--since_last_run` that completes records for its next pass (its last
    wave writes it)."""
    summary = Summary.from_listing(listing.skipped, settings.mapping, undated)
    summary = summary.add(Summary({LISTED[0]: listing.requests, LISTED[1]: listing.objects},
                                  settings.mapping, types_skipped=listing.types_skipped))
    on_workers = listing.on_workers
    print(f'listing: {listing.objects:,} objects in {listing.requests:,} LIST requests'
          + (f'; the workers list the rest: {len(listing.units):,} units' if on_workers
             else f'; {len(listing.files):,} files to read'), file=out)
    if listing.skipped.get('skip_done'):
        print(f'resume: {listing.skipped["skip_done"]} files in partitions completed by earlier '
              f'runs are skipped', file=out)
    local = not is_dataflow(options)
    console = cli.current_console().stream

    def leave_now(signum):
        try:
            print(f'{PROG}: {SIGNAL_NAMES.get(signum, signum)} again: stopped at once; the '
                  f'files recorded as done so far stay done, rerun with --resume', file=console,
                  flush=True)
        finally:
            if workers:
                workers.close()
            os._exit(EXIT_SIGNAL_BASE + signum)

    # Workers that may be elsewhere: progress from the runner, stop through the store
    # (pipeline/remote.py).
    remote = RemoteRun.for_run(settings, options, console, leave_now, detached)
    local = local and remote is None
    stop = StopOnSignal(console, leave_now).install() if local and not detached else None
    stop = remote.stop if remote else stop
    monitor = None
    if local and settings.progress_seconds > 0:
        monitor = ProgressMonitor(settings.progress_seconds, len(listing.files),
                                  lambda: estimate_events(listing.files or listing.sample or []),
                                  settings.max_events_per_second, console).start()
    live = remote.live if remote else live_channel(monitor, stop)
    try:
        started = 0
        for number, wave in enumerate(waves):
            if stop is not None and stop.signum is not None:
                break   # the waves not started stay for --resume
            started = number + 1
            manifest = FileSystems.join(manifest_dir(settings.rejects),
                                        f'wave-{settings.run_id}-w{number}.json')
            ran = False   # the wave's pipeline started: its workers may have recorded files
            try:
                last = number == len(waves) - 1
                p = build_pipeline(settings, wave_source(settings, wave, on_workers, live),
                                   job_options(settings, options, 0 if on_workers else len(wave)),
                                   wave=f'w{number}',
                                   partitions=() if on_workers else partitions_of(wave),
                                   manifest_path=manifest, runner=runner, live=live,
                                   window=window if last else None)
                if options.view_as(TestOptions).dry_run:
                    p.run()
                    print('Dataflow job built (--dry_run=True): nothing submitted', file=out)
                    return EXIT_OK
                ran = True
                result = p.run()
                if remote:
                    remote.wait(result, len(wave))
                elif not detached:
                    _wait(result, settings, wave, local, console)
                if detached:
                    job = getattr(result, 'job_id', lambda: '?')()
                    what = (f'{len(wave)} units listed by the workers' if on_workers
                            else f'{len(wave)} files')
                    print(f'submitted Dataflow job {job}: {what}; the job records each file as '
                          f'it completes, under {settings.rejects}. Counters are in the '
                          f'Dataflow console (or rerun with --wait).', file=out)
                    return EXIT_OK
            except Exception as exc:  # the runner re-raises worker errors: one line
                if ran:
                    after_wave(settings, f'w{number}')
                if stop is not None and stop.signum is not None:
                    error(f'stopped by {stop.name}; the files this wave completed are recorded '
                          f'as done: rerun with --resume', note=True)
                    return EXIT_SIGNAL_BASE + stop.signum
                if len(waves) > 1:
                    print(f'stopped in wave {number + 1} of {len(waves)}; completed waves are '
                          f'recorded: rerun with --resume to continue', file=out)
                logging.getLogger(__name__).error('the run failed', exc_info=True)
                return run_failed(exc, died=worker_death(exc, workers))
            summary = summary.add(Summary.from_result(result, settings.mapping))
            summary = summary.add(after_wave(settings, f'w{number}'))
            if len(waves) > 1:
                print(f'wave {number + 1}/{len(waves)} done: {len(wave)} '
                      f'{"units" if on_workers else "files"}', file=out)
        if monitor is not None:
            monitor.close()
            monitor = None
        if stop is not None and stop.signum is not None and not on_workers:
            summary = summary.add(Summary({NOT_STARTED: sum(len(w) for w in waves[started:])},
                                          settings.mapping))
        print(summary.table(), file=out, flush=True)
        return finish(summary, settings.summary_output, settings.rejects,
                      stop.signum if stop is not None else None, report=settings.report)
    finally:
        if monitor is not None:
            monitor.close()
        if remote is not None:
            remote.close()
        elif stop is not None:
            stop.close()

def _wait(result, settings, wave, local, console) -> None:
    """Waits for a wave; on Dataflow (--wait) polls the job's counters for progress lines."""
    if local or settings.progress_seconds <= 0:
        result.wait_until_finish()
        return
    monitor = ProgressMonitor(settings.progress_seconds, len(wave), 0,
                              settings.max_events_per_second, console,
                              poll=dataflow_poll(result)).start()
    try:
        result.wait_until_finish()
    finally:
        monitor.close()
