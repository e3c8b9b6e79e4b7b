"""Running a listed input wave by wave: build, run, wait, stop cleanly, sum up.

Used by a run and by `--since_last_run`; each wave is one pipeline whose last step records it
(pipeline/builder.py), so a stopped or failed run is continued with `--resume`.
"""
import contextlib
import glob
import logging
import os
import shutil
from typing import Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import TestOptions

from pipeline import cli
from pipeline.builder import (build_pipeline, delivered_entries, is_dataflow, job_options,
                              records_files)
from pipeline.cli import (EXIT_OK, EXIT_SIGNAL_BASE, PROG, error, finish, run_failed)
from pipeline.ledger import discard_pending, segment_path, stage_segment
from pipeline.plan import estimate_events
from pipeline.progress import (SIGNAL_NAMES, ProgressMonitor, StopOnSignal, dataflow_poll,
                               live_channel)
from pipeline.remote import RemoteRun
from pipeline.resume import manifest_dir
from pipeline.summary import Summary
from pipeline.waves import largest_first, partitions_of


def _remove_beam_temp_folders(rejects: str) -> None:
    """What Beam's file sinks leave when a run stops before they finalize (beam-temp-*)."""
    if not rejects:
        return
    try:
        found = FileSystems.match([FileSystems.join(rejects, 'beam-temp-*')])[0].metadata_list
        folders = {m.path[:m.path.index('beam-temp-')] + m.path[m.path.index('beam-temp-'):]
                   .split('/', 1)[0] for m in found}
        if folders:
            FileSystems.delete(sorted(folders))
    except Exception:   # noqa: BLE001 - best effort; never hides the run's own answer
        logging.getLogger(__name__).debug('could not remove temp folders', exc_info=True)
    if '://' not in rejects:
        for folder in glob.glob(os.path.join(rejects, 'beam-temp-*')):
            shutil.rmtree(folder, ignore_errors=True)

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


@contextlib.contextmanager
def staged_record(settings, files, wave: str, keep: bool = False):
    """Stages a wave's per-file record for its pipeline to commit (pipeline/ledger.py); when
    the wave is over, removes it if the wave did not commit it. `keep`: a submitted Dataflow
    job commits it later."""
    if not records_files(settings):
        yield
        return
    segment = segment_path(settings.rejects, settings.run_id, wave)
    stage_segment(segment, delivered_entries(settings, files))
    try:
        yield
    finally:
        if not keep:
            discard_pending(segment)


def run_waves(settings, options, listing, waves, detached, out, runner=None, undated=0,
              workers=None) -> int:
    """Runs the waves one after the other; a failed wave stops the run with one line."""
    summary = Summary.from_listing(listing.skipped, settings.mapping, undated)
    if listing.skipped.get('skip_done'):
        print(f'resume: {listing.skipped["skip_done"]} files in partitions completed by earlier '
              f'runs are skipped', file=out)
    local = not is_dataflow(options)
    console = cli.current_console().stream

    def leave_now(signum):
        try:
            print(f'{PROG}: {SIGNAL_NAMES.get(signum, signum)} again: stopped at once; '
                  f'nothing is recorded as done, rerun with --resume', file=console, flush=True)
        finally:
            _remove_beam_temp_folders(settings.rejects)
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
                                  lambda: estimate_events(listing.files),
                                  settings.max_events_per_second, console).start()
    live = remote.live if remote else live_channel(monitor, stop)
    try:
        for number, wave in enumerate(waves):
            if stop is not None and stop.signum is not None:
                break   # the waves not started stay for --resume
            manifest = FileSystems.join(manifest_dir(settings.rejects),
                                        f'wave-{settings.run_id}-w{number}.json')
            try:
                p = build_pipeline(settings, largest_first(wave),
                                   job_options(settings, options, len(wave)),
                                   wave=f'w{number}', partitions=partitions_of(wave),
                                   manifest_path=manifest, runner=runner, live=live)
                if options.view_as(TestOptions).dry_run:
                    p.run()
                    print('Dataflow job built (--dry_run=True): nothing submitted', file=out)
                    return EXIT_OK
                with staged_record(settings, wave, f'w{number}', keep=detached):
                    result = p.run()
                    if remote:
                        remote.wait(result, len(wave))
                    elif not detached:
                        _wait(result, settings, wave, local, console)
                if detached:
                    job = getattr(result, 'job_id', lambda: '?')()
                    print(f'submitted Dataflow job {job}: {len(wave)} files; the job records its '
                          f'partitions in {manifest_dir(settings.rejects)} when it completes. '
                          f'Counters are in the Dataflow console (or rerun with --wait).',
                          file=out)
                    return EXIT_OK
            except Exception as exc:  # the runner re-raises worker errors: one line
                _remove_beam_temp_folders(settings.rejects)
                if stop is not None and stop.signum is not None:
                    error(f'stopped by {stop.name}; nothing of this wave is recorded as done: '
                          f'rerun with --resume', note=True)
                    return EXIT_SIGNAL_BASE + stop.signum
                if len(waves) > 1:
                    print(f'stopped in wave {number + 1} of {len(waves)}; completed waves are '
                          f'recorded: rerun with --resume to continue', file=out)
                logging.getLogger(__name__).error('the run failed', exc_info=True)
                return run_failed(exc, died=worker_death(exc, workers))
            summary = summary.add(Summary.from_result(result, settings.mapping))
            if len(waves) > 1:
                print(f'wave {number + 1}/{len(waves)} done: {len(wave)} files', file=out)
        if monitor is not None:
            monitor.close()
            monitor = None
        print(summary.table(), file=out, flush=True)
        return finish(summary, settings.summary_output, settings.rejects,
                      stop.signum if stop is not None else None,
                      sum(len(w) for w in waves[number + 1:]) if waves else 0)
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
