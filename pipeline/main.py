"""Entry point: parse, check, list, plan or run (in waves), print the summary, exit with one line."""
import argparse
import atexit
import datetime
import glob
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
from typing import List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  TestOptions, WorkerOptions)

from pipeline.builder import build_pipeline, is_dataflow, job_options
from pipeline.hardening import harden_process
from pipeline.local_runner import (WarmWorkersRunner, local_parallelism, local_runner_options,
                                   start_warm_workers, uses_worker_processes, worker_processes)
from pipeline.options import CurrentsToSegmentOptions, check_argv, settings_from
from pipeline.paths import hour_from_path
from pipeline.plan import estimate_events, make_plan, plan_text
from pipeline.progress import (SIGNAL_NAMES, ProgressMonitor, StopOnSignal, dataflow_poll,
                               live_channel)
from pipeline.summary import Summary
from pipeline.waves import make_waves, partitions_of
from pipeline.resume import completed_partitions, manifest_dir
from pipeline.paths import UsageError
from pipeline.listing import input_pattern, list_currents_files
from pipeline.stores import prepare_stores
from transforms.segment_client import SegmentConfigurationError
from transforms.write_key import WriteKeyMissing

PROG = 'currents-to-segment'
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SEGMENT_CONFIG = 0, 1, 2, 3
EXIT_DELIVERY_REJECTS = 4       # completed and balanced, but events need a replay
EXIT_SIGNAL_BASE = 128          # + the signal: 130 SIGINT, 143 SIGTERM
DELIVERY_REASONS = frozenset({'retries_exhausted', 'segment_rejected'})
DEFAULT_WAVE_HOURS = 24
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


class Console:
    """Where the one-line answers and progress go (stderr), and the run's log file if any.

    From the command line, Beam's and gRPC's own log and tracebacks go to the log file
    (see `main`); an error line names it when it holds anything.
    """

    def __init__(self, stream=None, log_path: Optional[str] = None):
        self._stream = stream
        self.log_path = log_path

    @property
    def stream(self):
        return self._stream or sys.stderr

    def log_note(self) -> str:
        try:
            if self.log_path and os.path.getsize(self.log_path) > 0:
                return f' (details: {self.log_path})'
        except OSError:
            pass
        return ''


_console = Console()


def error(message: str, note: bool = False) -> None:
    """One line on stderr; with `note`, the log file that holds the details, if any."""
    print(f'{PROG}: error: {message}{_console.log_note() if note else ""}',
          file=_console.stream, flush=True)


def check_rejects_writable(rejects: str) -> None:
    """A local --rejects must be writable before anything is sent (else one line, exit 2)."""
    if '://' in rejects:
        return
    try:
        os.makedirs(rejects, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=rejects, prefix='.write-check-')
        probe.close()
    except OSError as exc:
        raise UsageError(f'cannot write to --rejects {rejects}: '
                         f'{exc.strerror or type(exc).__name__}') from None


def undated_files(listing, selector) -> int:
    """Files read although --start/--end were given: their paths have no date= hour."""
    if selector.start is None and selector.end is None:
        return 0
    return sum(1 for path, _, _ in listing.files if hour_from_path(path) is None)


def run(argv: Optional[List[str]] = None, out=None, console: Optional[Console] = None) -> int:
    global _console
    previous, _console = _console, console or Console()
    try:
        return _run(argv, out)
    except KeyboardInterrupt:   # before or after the pipeline ran (during it: StopOnSignal)
        error('stopped by SIGINT before anything was sent')
        return EXIT_SIGNAL_BASE + signal.SIGINT
    except BrokenPipeError:     # e.g. `--plan | head`: the reader has what it wanted
        _quiet_stdout()
        return EXIT_OK
    finally:
        _console = previous


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
        honour_no_auth(options)
        prepare_stores(settings, options, is_dataflow(options))
        if settings.since_last_run or settings.follow:
            from pipeline import incremental
            return incremental.run(settings, options, argv, out)
        pattern = input_pattern(settings.input)
        done = completed_partitions(settings.rejects, settings.input) if settings.resume else frozenset()
        listing = list_currents_files(pattern, settings.selector, done)
        if not listing.files and not listing.skipped:
            raise UsageError(f'no input files match {pattern}')
        settings.file_stamps = listing.stamps   # completed waves record their files
        dataflow = is_dataflow(options)
        wave_hours = settings.wave_hours
        if wave_hours is None:
            wave_hours = 0 if dataflow and not settings.wait else DEFAULT_WAVE_HOURS
        undated = undated_files(listing, settings.selector)
        if settings.plan:
            plan = make_plan(listing.files, listing.skipped, wave_hours,
                             settings.max_events_per_second, settings.mapping,
                             settings.selector.event_types, undated)
            print(plan_text(plan, settings.max_events_per_second), file=out, flush=True)
            return EXIT_OK
        check_sending_setup(settings, options)
        check_rejects_writable(settings.rejects)
        local_parallelism(options, argv, sum(size for _, _, size in listing.files))
        waves = make_waves(listing.files, wave_hours)
        detached = dataflow and not settings.wait and not settings.wave_hours
        if dataflow and not settings.wait and settings.wave_hours:
            raise UsageError('--wave_hours on Dataflow runs one job per wave and needs --wait')
    except (UsageError, WriteKeyMissing) as exc:
        error(_one_line(exc))
        return EXIT_USAGE
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


def run_waves(settings, options, listing, waves, detached, out, runner=None, undated=0,
              workers=None) -> int:
    """Runs the waves one after the other; a failed wave stops the run with one line."""
    summary = Summary.from_listing(listing.skipped, settings.mapping, undated)
    if listing.skipped.get('skip_done'):
        print(f'resume: {listing.skipped["skip_done"]} files in partitions completed by earlier '
              f'runs are skipped', file=out)
    local = not is_dataflow(options)
    console = _console.stream

    def leave_now(signum):
        try:
            print(f'{PROG}: {SIGNAL_NAMES.get(signum, signum)} again: stopped at once; '
                  f'nothing is recorded as done, rerun with --resume', file=console, flush=True)
        finally:
            _remove_beam_temp_folders(settings.rejects)
            if workers:
                workers.close()
            os._exit(EXIT_SIGNAL_BASE + signum)

    stop = StopOnSignal(console, leave_now).install() if local and not detached else None
    monitor = None
    if local and settings.progress_seconds > 0:
        monitor = ProgressMonitor(settings.progress_seconds, len(listing.files),
                                  estimate_events(listing.files), settings.max_events_per_second,
                                  console).start()
    live = live_channel(monitor, stop)
    try:
        for number, wave in enumerate(waves):
            if stop is not None and stop.signum is not None:
                break   # the waves not started stay for --resume
            manifest = FileSystems.join(manifest_dir(settings.rejects),
                                        f'wave-{settings.run_id}-w{number}.json')
            try:
                p = build_pipeline(settings, [(path, t) for path, t, _ in wave],
                                   job_options(settings, options, len(wave)),
                                   wave=f'w{number}', partitions=partitions_of(wave),
                                   manifest_path=manifest, runner=runner, live=live)
                result = p.run()
                if options.view_as(TestOptions).dry_run:
                    print('Dataflow job built (--dry_run=True): nothing submitted', file=out)
                    return EXIT_OK
                if detached:
                    job = getattr(result, 'job_id', lambda: '?')()
                    print(f'submitted Dataflow job {job}: {len(wave)} files; the job records its '
                          f'partitions in {manifest_dir(settings.rejects)} when it completes. '
                          f'Counters are in the Dataflow console (or rerun with --wait).',
                          file=out)
                    return EXIT_OK
                _wait(result, settings, wave, local, console)
            except Exception as exc:  # the runner re-raises worker errors: one line
                _remove_beam_temp_folders(settings.rejects)
                if stop is not None and stop.signum is not None:
                    error(f'stopped by {stop.name}; nothing of this wave is recorded as done: '
                          f'rerun with --resume', note=True)
                    return EXIT_SIGNAL_BASE + stop.signum
                reason = stop_reason(exc)
                if len(waves) > 1:
                    print(f'stopped in wave {number + 1} of {len(waves)}; completed waves are '
                          f'recorded: rerun with --resume to continue', file=out)
                if reason:
                    error(reason[0], note=True)
                    return reason[1]
                logging.getLogger(__name__).error('the run failed', exc_info=True)
                died = worker_death(exc, workers)
                if died:
                    error(died, note=True)
                    return EXIT_FAILED
                error(f'the run failed: {type(exc).__name__}: {_one_line(exc, 200)}', note=True)
                return EXIT_FAILED
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
        if stop is not None:
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


def exit_decision(d: dict, balanced: bool, rejects: str, signum: Optional[int] = None,
                  files_not_started: int = 0) -> Tuple[int, Optional[str]]:
    """The exit status a scheduler acts on, and the last line that explains it (pure)."""
    if signum is not None:
        name = SIGNAL_NAMES.get(signum, str(signum))
        left = d.get('not_sent_stopped', 0)
        files = d.get('files_not_read_stopped', 0) + files_not_started
        return EXIT_SIGNAL_BASE + signum, (
            f'stopped by {name}: {d["sent"]:,} events sent; {left:,} read but not sent and '
            f'{files:,} files not read are not recorded as done: rerun with --resume to send '
            f'them')
    if not balanced:
        return EXIT_FAILED, 'the summary does not balance (read != dropped + sent + rejected)'
    delivery = {r: n for r, n in d['rejected_by_reason'].items() if r in DELIVERY_REASONS and n}
    if delivery:
        total = sum(delivery.values())
        reasons = ','.join(sorted(delivery))
        return EXIT_DELIVERY_REJECTS, (
            f'{total:,} events were rejected for delivery ('
            + ', '.join(f'{r} {n:,}' for r, n in sorted(delivery.items()))
            + f'); once the cause is fixed, re-send them with: '
              f'{PROG} replay --rejects {shlex.quote(rejects)} --reasons {reasons}')
    return EXIT_OK, None


def finish(summary: Summary, summary_output: Optional[str], rejects: str = '',
           signum: Optional[int] = None, files_not_started: int = 0) -> int:
    """Writes --summary_output and turns the summary into the exit status and its last line."""
    if summary_output:
        with FileSystems.create(summary_output) as f:
            f.write(summary.to_json().encode('utf-8'))
    code, line = exit_decision(summary.as_dict(), summary.balanced, rejects, signum,
                               files_not_started)
    if code == EXIT_FAILED:
        error(line)
    elif line:
        print(f'{PROG}: {line}', file=_console.stream, flush=True)
    return code


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
