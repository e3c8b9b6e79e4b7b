"""Entry point: parse, check, list, plan or run (in waves), print the summary, exit with one line."""
import atexit
import logging
import os
import re
import sys
from typing import List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  TestOptions, WorkerOptions)

from pipeline.builder import build_pipeline, is_dataflow, job_options
from pipeline.local_runner import (WarmWorkersRunner, local_parallelism, local_runner_options,
                                   start_warm_workers, uses_worker_processes, worker_processes)
from pipeline.options import check_argv, settings_from
from pipeline.plan import make_plan, plan_text
from pipeline.summary import Summary
from pipeline.waves import make_waves, partitions_of, wave_size
from pipeline.resume import completed_partitions, manifest_dir
from pipeline.paths import UsageError
from pipeline.listing import input_pattern, list_currents_files
from transforms.segment_client import SegmentConfigurationError
from transforms.write_key import WriteKeyMissing

PROG = 'currents-to-segment'
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SEGMENT_CONFIG = 0, 1, 2, 3
_KNOWN_FAILURES = (SegmentConfigurationError, WriteKeyMissing)


def honour_no_auth(options: PipelineOptions) -> None:
    """--no_auth: connect to GCS anonymously instead of retrying a credentials lookup.

    Beam 2.77 reads --no_auth only for the Dataflow API; its GCS client still looks for
    Application Default Credentials, retrying for ~20 s and logging tracebacks when there are
    none (e.g. against a GCS emulator or a public bucket). Uses a Beam internal, guarded.
    """
    if not options.view_as(GoogleCloudOptions).no_auth:
        return
    try:
        from apache_beam.internal.gcp.auth import _Credentials
        with _Credentials._credentials_lock:
            _Credentials._credentials, _Credentials._credentials_init = None, True
    except (ImportError, AttributeError):
        pass


def _one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception as one line: its non-empty lines joined (Beam puts reasons on line 2)."""
    text = str(exc).split(' [while running', 1)[0]
    joined = ' '.join(line.strip() for line in text.splitlines() if line.strip())
    return (joined[:limit] + '...' if len(joined) > limit else joined) or type(exc).__name__


def stop_reason(exc: BaseException) -> Optional[Tuple[str, int]]:
    """Our own stop reasons and their exit status (no key: 2, key refused by Segment: 3),
    found even when a runner re-raised or wrapped them."""
    seen = set()
    current = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _KNOWN_FAILURES):
            return _one_line(current), _exit_for(type(current).__name__)
        current = current.__cause__ or current.__context__
    match = re.search(r'(SegmentConfigurationError|WriteKeyMissing): ([^\n\[]+)', str(exc))
    return (match.group(2).strip(), _exit_for(match.group(1))) if match else None


def _exit_for(name: str) -> int:
    return EXIT_USAGE if name == 'WriteKeyMissing' else EXIT_SEGMENT_CONFIG


def check_sending_setup(settings, options: PipelineOptions) -> None:
    """Refuses, before anything runs, a run that could only fail or mis-throttle on workers."""
    if settings.dry_run_output:
        return
    if is_dataflow(options):
        if not settings.key_source.secret_name:
            raise UsageError('on Dataflow the workers read the write key from Secret Manager: '
                             'pass --segment_write_key_secret projects/P/secrets/S/versions/V')
        workers = options.view_as(WorkerOptions)
        if settings.max_events_per_second > 0 and not (workers.max_num_workers
                                                       or workers.num_workers):
            raise UsageError('--max_events_per_second on Dataflow is divided between workers: '
                             'set --max_num_workers (or --num_workers)')
    elif not settings.key_source.secret_name:
        settings.key_source.resolve()  # fail before reading anything if no key is set


def print_help(out) -> None:
    import argparse
    parser = argparse.ArgumentParser(
        prog=PROG, description='Backfill Braze Currents Avro exports into Segment as track calls.',
        epilog='Beam options (--runner, --direct_num_workers, --project, ...) pass through. '
               'The write key comes from SEGMENT_WRITE_KEY or --segment_write_key_secret. '
               f'Re-send rejects with: {PROG} replay --rejects DIR [--reasons r1,r2] [options].')
    from pipeline.options import CurrentsToSegmentOptions
    CurrentsToSegmentOptions._add_argparse_args(parser)
    parser.print_help(out)


def error(message: str) -> None:
    print(f'{PROG}: error: {message}', file=sys.stderr)


def run(argv: Optional[List[str]] = None, out=None) -> int:
    out = out or sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    if '-h' in argv or '--help' in argv:
        print_help(out)
        return EXIT_OK
    if argv[:1] == ['replay']:
        from pipeline.replay import run_replay
        return run_replay(argv[1:], out)
    try:
        check_argv(argv)
        options = PipelineOptions(argv)
        settings = settings_from(options)
        local_runner_options(options)
        honour_no_auth(options)
        pattern = input_pattern(settings.input)
        done = completed_partitions(settings.rejects) if settings.resume else frozenset()
        listing = list_currents_files(pattern, settings.selector, done)
        if not listing.files and not listing.skipped:
            raise UsageError(f'no input files match {pattern}')
        dataflow = is_dataflow(options)
        waves_by = wave_size(settings.wave_hours, settings.wave_mb, dataflow, settings.wait)
        if settings.plan:
            plan = make_plan(listing.files, listing.skipped, waves_by,
                             settings.max_events_per_second)
            print(plan_text(plan, settings.max_events_per_second), file=out)
            return EXIT_OK
        check_sending_setup(settings, options)
        local_parallelism(options, argv, sum(size for _, _, size in listing.files))
        waves = make_waves(listing.files, waves_by)
        detached = dataflow and not settings.wait
    except (UsageError, WriteKeyMissing) as exc:
        error(_one_line(exc))
        return EXIT_USAGE
    workers = start_warm_workers(options, settings.fresh_worker_processes)
    if uses_worker_processes(options):
        print(f'local run: {worker_processes(options)} worker processes, '
              f'{"forked warm from this one" if workers else "each started fresh"}', file=out)
    try:
        return run_waves(settings, options, listing, waves, detached, out,
                         WarmWorkersRunner(workers) if workers else None)
    finally:
        if workers:
            workers.close()


def run_waves(settings, options, listing, waves, detached, out, runner=None) -> int:
    """Runs the waves one after the other; a failed wave stops the run with one line."""
    summary = Summary.from_listing(listing.skipped)
    if listing.skipped.get('skip_done'):
        print(f'resume: {listing.skipped["skip_done"]} files in partitions completed by earlier '
              f'runs are skipped', file=out)
    for number, wave in enumerate(waves):
        manifest = FileSystems.join(manifest_dir(settings.rejects),
                                    f'wave-{settings.run_id}-w{number}.json')
        try:
            p = build_pipeline(settings, [(path, t) for path, t, _ in wave],
                               job_options(settings, options, len(wave)),
                               wave=f'w{number}', partitions=partitions_of(wave),
                               manifest_path=manifest, runner=runner)
            result = p.run()
            if options.view_as(TestOptions).dry_run:
                print('Dataflow job built (--dry_run=True): nothing submitted', file=out)
                return EXIT_OK
            if detached:
                job = getattr(result, 'job_id', lambda: '?')()
                print(f'submitted Dataflow job {job}: {len(wave)} files; the job records its '
                      f'partitions in {manifest_dir(settings.rejects)} when it completes. '
                      f'Counters are in the Dataflow console (or rerun with --wait).', file=out)
                return EXIT_OK
            result.wait_until_finish()
        except Exception as exc:  # the runner re-raises worker errors; keep the answer to one line
            reason = stop_reason(exc)
            if len(waves) > 1:
                print(f'stopped in wave {number + 1} of {len(waves)}; completed waves are '
                      f'recorded: rerun with --resume to continue', file=out)
            if reason:
                error(reason[0])
                return reason[1]
            logging.getLogger(__name__).debug('run failed', exc_info=True)
            error(f'the run failed: {type(exc).__name__}: {_one_line(exc)}')
            return EXIT_FAILED
        summary = summary.add(Summary.from_result(result))
        if len(waves) > 1:
            print(f'wave {number + 1}/{len(waves)} done: {len(wave)} files', file=out)
    print(summary.table(), file=out)
    return finish(summary, settings.summary_output)


def finish(summary: Summary, summary_output: Optional[str]) -> int:
    """Writes --summary_output and turns the balance check into the exit status."""
    if summary_output:
        with FileSystems.create(summary_output) as f:
            f.write(summary.to_json().encode('utf-8'))
    if not summary.balanced:
        error('the summary does not balance (read != dropped + sent + rejected)')
        return EXIT_FAILED
    return EXIT_OK


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    # Beam's local worker processes forward their start-up notices as warnings: not news.
    for noisy in ('apache_beam.runners.portability.local_job_service',
                  'apache_beam.io.filebasedsink'):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    leave(run())


def leave(code: int) -> None:
    """Exit without the interpreter's teardown of Beam's heap (~0.5 s of a 10-s local run).

    Only from the command line, once the run is over: the atexit handlers (logging's flush
    among them) still run and the standard streams are flushed; what is skipped is freeing
    every module and object one by one, which the OS does at once.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
