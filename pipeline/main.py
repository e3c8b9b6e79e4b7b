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
from pipeline.cli import (EXIT_FAILED, EXIT_OK, EXIT_SEGMENT_CONFIG, EXIT_SIGNAL_BASE,
                          EXIT_USAGE, PROG, USAGE_ERRORS, Console, check_rejects_writable,
                          check_report_output, check_sending_setup, check_summary_writable,
                          current_console, error, finish, honour_no_auth, replay_options,
                          usage_error, using_console)
from pipeline.hardening import harden_process
from pipeline.ledger import fold_pieces, load_window_records
from pipeline.listing import DONE, Skip, input_pattern, list_input
from pipeline.local_runner import (local_parallelism, local_runner_options, worker_runner,
                                   start_warm_workers, uses_worker_processes, worker_processes)
from pipeline.options import (CurrentsToSegmentOptions, DefaultsHelpFormatter, add_options,
                              check_argv, settings_from)
from pipeline.paths import UsageError, hour_from_path
from pipeline.plan import make_plan, plan_text, skip_reasons
from pipeline.resume import completed_partitions
from pipeline.runners import classify, settle_paths
from pipeline.running import run_waves
from pipeline.stores import prepare_stores
from pipeline.summary import Summary
from pipeline.waves import make_waves, unit_waves, wave_size


def print_help(out) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG, usage=f'{PROG} --input PATH --rejects DIR [options] [Beam options]',
        formatter_class=DefaultsHelpFormatter,
        description='Backfill Braze Currents Avro exports into Segment as track calls.',
        epilog='Beam options (--runner, --direct_num_workers, --project, ...) pass through; any '
               'other unknown option is refused. The write key comes from SEGMENT_WRITE_KEY or '
               '--segment_write_key_secret. Exit status: 0 done; 4 done but events rejected '
               'for delivery (replay them); 1 failed; 2 bad arguments; 3 Segment refused the '
               'configuration; 130/143 stopped by SIGINT/SIGTERM. '
               f'Re-send rejects with: {PROG} replay --rejects DIR [--reasons r1,r2] [options] '
               f'(see {PROG} replay --help). Draw the report of an earlier run with: {PROG} '
               f'report --summary S.json --out FILE.html.')
    add_options(parser)
    parser.print_help(out)

def undated_files(listing, selector) -> int:
    """Files read although --start/--end were given: their paths have no date= hour."""
    if selector.start is None and selector.end is None:
        return 0
    return sum(1 for path, _, _ in listing.files if hour_from_path(path) is None)


def skip_for_resume(settings) -> Skip:
    """What `--resume` skips: partitions earlier waves completed (their manifests) and files the
    per-file record holds in the same version (read for the run's range only, when the launcher
    lists; the workers read it themselves when they list)."""
    done = completed_partitions(settings.rejects, settings.input)
    fold_pieces(settings.rejects)
    found = []

    def recorded(path: str, size: int, stamp: float) -> bool:
        if not found:
            selector = settings.selector
            found.append(load_window_records(settings.rejects, selector.start, selector.end))
        return found[0].recorded(path, size, stamp)
    return Skip(done, recorded, DONE)


def nothing_to_read(settings, listing, options) -> Tuple[str, int]:
    """Why a run found no file to read, in one line, and its exit status: all done already
    (0), or nothing in the range, no Avro file, no file at all (2, as a usage error)."""
    skipped = listing.skipped
    total = sum(skipped.values())
    if skipped.get(DONE) and skipped.get(DONE) == total:
        return (f'nothing to do: all {total} files of the input were completed by earlier runs '
                f'(--resume)'), EXIT_OK
    if total:
        reasons = ', '.join(f'{name} {n}' for name, n in skip_reasons(skipped).items())
        return f'no Avro file of the selected event types under --input ({reasons})', EXIT_USAGE
    if settings.selector.bounded:
        span = hours_present_in(settings, options)
        held = (f'the input holds date= hours {span[0]:%Y-%m-%d-%H} .. {span[1]:%Y-%m-%d-%H}'
                if span else 'the input holds no date= hour of the selected event types')
        return (f'nothing to read in the range {settings_range(settings)}: {held}'), EXIT_USAGE
    return f'no input files match {input_pattern(settings.input)}', EXIT_USAGE


def settings_range(settings) -> str:
    start, end = settings.selector.start, settings.selector.end
    return (f'{start:%Y-%m-%d-%H} .. ' if start else '.. ') + (f'{end:%Y-%m-%d-%H}' if end
                                                                else '')


def hours_present_in(settings, options):
    """(first, last) date= hour of the input's selected type folders, from their hour folders'
    names (a delimiter listing each: only said when a range holds nothing)."""
    from pipeline.listing import resolve_input
    from transforms import listing as stores
    from transforms.layout import FileSelector
    found = resolve_input(settings.input, options)
    if found.kind != 'folder':
        return None
    store = stores.store_for(found.path, options=options)
    unbounded = FileSelector(settings.selector.event_types)
    hours = []
    for unit in stores.find_units(store, found.path, unbounded).units[:MAX_TYPES_LOOKED_AT]:
        if unit.kind == 'all' and unit.event_type:
            present = stores.hours_present(store, unit)
            hours += present[:1] + present[-1:]
    return (min(hours), max(hours)) if hours else None


MAX_TYPES_LOOKED_AT = 100


def plan_waves(listing, waves_by):
    """The run's waves: of files (listed here) or of units (listed by the workers)."""
    if listing.on_workers:
        return unit_waves(listing.units, waves_by, listing.sample)
    return make_waves(listing.files, waves_by)

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
    if argv[:1] == ['report']:
        from pipeline.report import run_report
        return run_report(argv[1:], out)
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
        check_report_output(settings, options)
        if not settings.plan:
            check_summary_writable(settings.summary_output)
        current_console().replay_options = replay_options(settings)
        if settings.follow:
            from pipeline.follow import follow
            return follow(settings, options, argv, out)
        if settings.since_last_run:
            from pipeline.incremental import since_last_run
            return since_last_run(settings, options, argv, out)
        dataflow = is_dataflow(options)
        skip = skip_for_resume(settings) if settings.resume else Skip()
        listing = list_input(settings.input, settings.selector, skip, options,
                             on_workers=not classify(options).local)
        if not listing.files and not listing.units and not settings.plan:
            why, code = nothing_to_read(settings, listing, options)
            if code != EXIT_OK:
                raise UsageError(why)
            print(f'{PROG}: {why}', file=out, flush=True)
            return finish(Summary.from_listing(listing.skipped, settings.mapping),
                          settings.summary_output, settings.rejects, report=settings.report)
        settings.file_stamps = listing.stamps   # each file is recorded as it completes
        waves_by = wave_size(settings.wave_hours, settings.wave_mb, dataflow, settings.wait,
                             remote=not classify(options).local)
        undated = undated_files(listing, settings.selector)
        if settings.plan:
            plan = make_plan(listing, waves_by, settings.max_events_per_second,
                             settings.mapping, settings.selector.event_types, undated, options,
                             settings.selector.start, settings.selector.end)
            print(plan_text(plan, settings.max_events_per_second), file=out, flush=True)
            return EXIT_OK
        check_sending_setup(settings, options)
        check_rejects_writable(settings.rejects)
        local_parallelism(options, argv, sum(size for _, _, size in
                                             listing.files or listing.sample or ()))
        waves = plan_waves(listing, waves_by)
        detached = dataflow and not settings.wait
    except USAGE_ERRORS as exc:
        return usage_error(exc)
    workers = start_warm_workers(options, settings.fresh_worker_processes)
    if uses_worker_processes(options):
        print(f'local run: {worker_processes(options)} worker processes, '
              f'{"forked warm from this one" if workers else "each started fresh"}', file=out)
    try:
        return run_waves(settings, options, listing, waves, detached, out,
                         worker_runner(options, workers), undated, workers)
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
