"""Entry point: parse, check, list, plan or run (in waves), print the summary, exit with one line."""
import atexit
import argparse
import datetime
import logging
import os
import signal
import sys
import tempfile
from typing import List, Optional, Tuple

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.builder import is_dataflow
from pipeline.cli import (EXIT_FAILED, EXIT_OK, EXIT_SEGMENT_CONFIG, EXIT_SIGNAL_BASE, PROG,
                          USAGE_ERRORS, Console, check_rejects_writable, check_sending_setup,
                          error, honour_no_auth, usage_error, using_console)
from pipeline.hardening import harden_process
from pipeline.listing import input_pattern, list_currents_files
from pipeline.local_runner import (WarmWorkersRunner, local_parallelism, local_runner_options,
                                   start_warm_workers, uses_worker_processes, worker_processes)
from pipeline.options import CurrentsToSegmentOptions, check_argv, settings_from
from pipeline.paths import UsageError, hour_from_path
from pipeline.plan import make_plan, plan_text
from pipeline.resume import completed_partitions
from pipeline.runners import settle_paths
from pipeline.running import run_waves
from pipeline.stores import prepare_stores
from pipeline.waves import make_waves, wave_size


def print_help(out) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG, description='Backfill Braze Currents Avro exports into Segment as track calls.',
        epilog='Beam options (--runner, --direct_num_workers, --project, ...) pass through; any '
               'other unknown option is refused. The write key comes from SEGMENT_WRITE_KEY or '
               '--segment_write_key_secret. Exit status: 0 done; 4 done but events rejected '
               'for delivery (replay them); 1 failed; 2 bad arguments; 3 Segment refused the '
               'configuration; 130/143 stopped by SIGINT/SIGTERM. '
               f'Re-send rejects with: {PROG} replay --rejects DIR [--reasons r1,r2] [options] '
               f'(see {PROG} replay --help).')
    CurrentsToSegmentOptions._add_argparse_args(parser)
    parser.print_help(out)

def undated_files(listing, selector) -> int:
    """Files read although --start/--end were given: their paths have no date= hour."""
    if selector.start is None and selector.end is None:
        return 0
    return sum(1 for path, _, _ in listing.files if hour_from_path(path) is None)

def run(argv: Optional[List[str]] = None, out=None, console: Optional[Console] = None) -> int:
    with using_console(console):
        try:
            return _run(argv, out)
        except KeyboardInterrupt:   # before or after the pipeline ran (during it: StopOnSignal)
            error('stopped by SIGINT before anything was sent')
            return EXIT_SIGNAL_BASE + signal.SIGINT
        except BrokenPipeError:     # e.g. `--plan | head`: the reader has what it wanted
            _quiet_stdout()
            return EXIT_OK

def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass

def _run(argv, out) -> int:
    out = out or sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    harden_process()   # owner-only files, no core dumps (pipeline/hardening.py)
    if argv[:1] == ['replay']:
        from pipeline.replay import run_replay
        return run_replay(argv[1:], out)
    if '-h' in argv or '--help' in argv:
        print_help(out)
        return EXIT_OK
    try:
        check_argv(argv)
        options = PipelineOptions(argv)
        plan_only = options.view_as(CurrentsToSegmentOptions).plan
        settings = settings_from(options, need_rejects=not plan_only)
        if settings.resume and not settings.rejects:
            raise UsageError('--resume reads what earlier runs recorded under --rejects: '
                             'give the same --rejects')
        local_runner_options(options)
        settle_paths(settings, options)   # absolute local paths; none that remote workers write
        honour_no_auth(options)
        prepare_stores(settings, options, is_dataflow(options))
        if settings.follow:
            from pipeline.follow import follow
            return follow(settings, options, argv, out)
        if settings.since_last_run:
            from pipeline.incremental import since_last_run
            return since_last_run(settings, options, argv, out)
        pattern = input_pattern(settings.input)
        done = completed_partitions(settings.rejects, settings.input) if settings.resume else frozenset()
        listing = list_currents_files(pattern, settings.selector, done)
        if not listing.files and not listing.skipped:
            raise UsageError(f'no input files match {pattern}')
        settings.file_stamps = listing.stamps   # completed waves record their files
        dataflow = is_dataflow(options)
        waves_by = wave_size(settings.wave_hours, settings.wave_mb, dataflow, settings.wait)
        undated = undated_files(listing, settings.selector)
        if settings.plan:
            plan = make_plan(listing.files, listing.skipped, waves_by,
                             settings.max_events_per_second, settings.mapping,
                             settings.selector.event_types, undated)
            print(plan_text(plan, settings.max_events_per_second), file=out, flush=True)
            return EXIT_OK
        check_sending_setup(settings, options)
        check_rejects_writable(settings.rejects)
        local_parallelism(options, argv, sum(size for _, _, size in listing.files))
        waves = make_waves(listing.files, waves_by)
        detached = dataflow and not settings.wait
    except USAGE_ERRORS as exc:
        return usage_error(exc)
    workers = start_warm_workers(options, settings.fresh_worker_processes)
    if uses_worker_processes(options):
        print(f'local run: {worker_processes(options)} worker processes, '
              f'{"forked warm from this one" if workers else "each started fresh"}', file=out)
    try:
        return run_waves(settings, options, listing, waves, detached, out,
                         WarmWorkersRunner(workers) if workers else None, undated, workers)
    finally:
        if workers:
            workers.close()

def open_log() -> Tuple[Console, Optional[str]]:
    """Sends file descriptor 2 (Beam's and gRPC's logs and tracebacks, and those of the local
    worker processes, which inherit it) to a log file; our own lines keep the real stderr."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    path = os.path.join(tempfile.gettempdir(), f'{PROG}-{stamp}-{os.getpid()}.log')
    try:
        sys.stderr.flush()
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        real = os.dup(2)
        os.dup2(log_fd, 2)
        os.close(log_fd)
    except OSError:
        return Console(sys.stderr), None
    console = os.fdopen(real, 'w', buffering=1, encoding='utf-8', errors='replace')
    return Console(console, path), path

def main() -> None:
    argv = sys.argv[1:]
    verbose = any(a in ('--verbose', '--verbose=true') for a in argv)
    console, log_path = (Console(sys.stderr), None) if verbose else open_log()
    logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(levelname)s %(name)s: '
                        '%(message)s' if log_path else '%(levelname)s %(name)s: %(message)s')
    # Beam's local worker processes forward their start-up notices as warnings: not news.
    for noisy in ('apache_beam.runners.portability.local_job_service',
                  'apache_beam.io.filebasedsink'):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    code = run(argv, console=console)
    if log_path and (code not in (EXIT_FAILED, EXIT_SEGMENT_CONFIG) or not console.log_note()):
        try:
            os.unlink(log_path)   # nothing to look at
        except OSError:
            pass
    leave(code)

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
