"""The command line's shared plumbing: exit statuses, one-line errors, and the last line.

A run, `replay`, `--since_last_run` and `--follow` all answer through these, so every error path
ends the same way: one line on stderr and an exit status a scheduler can act on (README, "Exit
statuses").
"""
import contextlib
import json
import logging
import os
import re
import shlex
import sys
import tempfile
from typing import Optional, Tuple

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, WorkerOptions

from pipeline.builder import is_dataflow
from pipeline.paths import UsageError
from pipeline.progress import SIGNAL_NAMES
from pipeline.runners import check_remote_key
from pipeline.summary import Summary
from transforms.records import write_whole
from transforms.segment_client import SegmentConfigurationError
from transforms.write_key import WriteKeyMissing

PROG = 'currents-to-segment'
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SEGMENT_CONFIG = 0, 1, 2, 3
EXIT_DELIVERY_REJECTS = 4       # completed and balanced, but events need a replay
EXIT_SIGNAL_BASE = 128          # + the signal: 130 SIGINT, 143 SIGTERM
DELIVERY_REASONS = frozenset({'retries_exhausted', 'segment_rejected'})
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

def one_line(exc: BaseException, limit: int = 400) -> str:
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
            return one_line(current), _exit_for(type(current).__name__)
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
        check_remote_key(settings, options)   # workers elsewhere: no SEGMENT_WRITE_KEY there
        settings.key_source.resolve()  # fail before reading anything if no key is set

class Console:
    """Where the one-line answers and progress go (stderr), and the run's log file if any.

    From the command line, Beam's and gRPC's own log and tracebacks go to the log file
    (see `main`); an error line names it when it holds anything. `replay_options` are what
    the exit-4 line's replay command repeats of this run (`replay_options`).
    """

    def __init__(self, stream=None, log_path: Optional[str] = None):
        self._stream = stream
        self.log_path = log_path
        self.replay_options: Tuple[str, ...] = ()

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
    if os.path.exists(rejects) and not os.path.isdir(rejects):
        raise UsageError(f'--rejects {rejects} is a file: give a folder (the run writes '
                         f'rejects-*.jsonl and its records in it)')
    try:
        os.makedirs(rejects, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=rejects, prefix='.write-check-')
        probe.close()
    except OSError as exc:
        raise UsageError(f'cannot write to --rejects {rejects}: '
                         f'{exc.strerror or type(exc).__name__}') from None

def check_summary_writable(path: Optional[str]) -> None:
    """A local --summary_output must be writable before anything is sent (else one line, exit 2):
    not a folder, its folder creatable, the file (if there) and its folder writable."""
    if not path or '://' in path:
        return
    if os.path.isdir(path):
        raise UsageError(f'--summary_output {path} is a folder: give a file name')
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(path):
            if not os.access(path, os.W_OK):
                raise PermissionError(13, 'Permission denied')
        else:
            tempfile.NamedTemporaryFile(dir=folder, prefix='.write-check-').close()
    except OSError as exc:
        raise UsageError(f'cannot write --summary_output {path}: '
                         f'{exc.strerror or type(exc).__name__}') from None


def replay_options(settings) -> Tuple[str, ...]:
    """What a replay must repeat to send where and how this run sent: destination, messageId
    prefix, mapping, throttle, body options. Never the key (a secret's name at most)."""
    from transforms.segment_client import EU_ENDPOINT, US_ENDPOINT
    args = []
    if settings.endpoint == EU_ENDPOINT:
        args += ['--segment_region', 'eu']
    elif settings.endpoint and settings.endpoint != US_ENDPOINT:
        args += ['--segment_endpoint', settings.endpoint]
    if settings.key_source.secret_name:
        args += ['--segment_write_key_secret', settings.key_source.secret_name]
    if settings.message_id_prefix:
        args += ['--message_id_prefix', settings.message_id_prefix]
    if settings.mapping != 'classic':
        args += ['--mapping', settings.mapping]
    if settings.include_anonymous:
        args.append('--include_anonymous')
    if settings.integrations is not None:
        args += ['--integrations', json.dumps(settings.integrations, separators=(',', ':'))]
    if settings.max_events_per_second > 0:
        args += ['--max_events_per_second', f'{settings.max_events_per_second:g}']
    for flag, on in (('--segment_gzip', settings.use_gzip),
                     ('--segment_sent_at', settings.segment_sent_at),
                     ('--use_env_proxy', settings.use_env_proxy)):
        if on:
            args.append(flag)
    return tuple(args)


def replay_command(rejects: str, reasons, options=()) -> str:
    """The replay command line, shell-quoted, to run as printed."""
    return ' '.join(shlex.quote(part) for part in (
        PROG, 'replay', '--rejects', rejects, '--reasons', ','.join(sorted(reasons)),
        *options))


def exit_decision(d: dict, balanced: bool, rejects: str, signum: Optional[int] = None,
                  files_not_started: int = 0,
                  options: Tuple[str, ...] = ()) -> Tuple[int, Optional[str]]:
    """The exit status a scheduler acts on, and the last line that explains it (pure)."""
    if signum is not None:
        name = SIGNAL_NAMES.get(signum, str(signum))
        left = d.get('not_sent_stopped', 0)
        files = d.get('files_not_read_stopped', 0) + files_not_started
        again = d.get('unfinished_events', 0)
        return EXIT_SIGNAL_BASE + signum, (
            f'stopped by {name}: {d["sent"]:,} events sent; {d.get("recorded_files", 0):,} '
            f'files ({d.get("recorded_events", 0):,} events) recorded as done; rerun with '
            f'--resume to send the rest: {d.get("unfinished_files", 0):,} files part way '
            f'({again:,} of their events again), {left:,} events read but not sent, {files:,} '
            f'files not read')
    if not balanced:
        return EXIT_FAILED, 'the summary does not balance (read != dropped + sent + rejected)'
    delivery = {r: n for r, n in d['rejected_by_reason'].items() if r in DELIVERY_REASONS and n}
    if delivery:
        total = sum(delivery.values())
        return EXIT_DELIVERY_REJECTS, (
            f'{total:,} events were rejected for delivery ('
            + ', '.join(f'{r} {n:,}' for r, n in sorted(delivery.items()))
            + f'); once the cause is fixed, re-send them with: '
              f'{replay_command(rejects, delivery, options)}')
    return EXIT_OK, None

def check_report_output(settings, options: PipelineOptions) -> None:
    """--report: written by the launcher at the end, so it must wait for the job, and its
    folder must take a file; checked before anything runs (else UsageError, one line)."""
    if not settings.report:
        return
    if is_dataflow(options) and not settings.wait:
        raise UsageError('--report is written from the job\'s counters when it completes: on '
                         'Dataflow add --wait (or, for a job already run, use '
                         f'{PROG} report --summary S.json --out FILE.html)')
    from pipeline.report import check_writable
    check_writable(settings.report)

def write_report_file(summary: Summary, report: str) -> bool:
    """Writes --report from the summary; one line says where (or why it could not)."""
    from pipeline.report import check_summary, gaps_from_summary, render, write_report
    try:
        d = check_summary(summary.as_dict())
        size = write_report(report, render(d))
    except Exception as exc:   # noqa: BLE001 - the run is done: one line, never a traceback
        error(f'could not write --report {report}: {one_line(exc, 200)}')
        return False
    gaps = len(gaps_from_summary(d['by_hour'])) if 'by_hour' in d else None
    print(f'{PROG}: report written: {report} ({size:,} bytes; '
          + ('no per-hour counts' if gaps is None else f'{gaps} gap{"s" if gaps != 1 else ""}')
          + ')', file=_console.stream, flush=True)
    return True

def write_summary(summary: Summary, summary_output: Optional[str]) -> bool:
    """Writes --summary_output; a failure (checked writable at the start) is one line naming
    the log, and False."""
    if not summary_output:
        return True
    try:
        write_whole(summary_output, summary.to_json().encode('utf-8'), 'application/json',
                    in_place=True)
        return True
    except Exception as exc:  # noqa: BLE001 - any store's error: one line, details in the log
        logging.getLogger(__name__).error('writing --summary_output failed', exc_info=True)
        error(f'cannot write --summary_output {summary_output}: {type(exc).__name__}: '
              f'{one_line(exc, 200)}', note=True)
        return False

def answer(code: int, line: Optional[str]) -> int:
    """The last line: an error line for a failure, else the line as it is."""
    if code == EXIT_FAILED and line:
        error(line)
    elif line:
        print(f'{PROG}: {line}', file=_console.stream, flush=True)
    return code

def finish(summary: Summary, summary_output: Optional[str], rejects: str = '',
           signum: Optional[int] = None, files_not_started: int = 0,
           report: Optional[str] = None) -> int:
    """Writes --summary_output and --report and turns the summary into the exit status and
    its last line (a report that could not be written fails a run that would pass)."""
    if not write_summary(summary, summary_output):
        return EXIT_FAILED
    code, line = exit_decision(summary.as_dict(), summary.balanced, rejects, signum,
                               files_not_started, _console.replay_options)
    if report and not write_report_file(summary, report) and code == EXIT_OK:
        code = EXIT_FAILED
    return answer(code, line)


USAGE_ERRORS = (UsageError, WriteKeyMissing)


@contextlib.contextmanager
def using_console(console: Optional['Console'] = None):
    """Answers (error lines, the last line) go to `console` while the block runs."""
    global _console
    previous, _console = _console, console or Console()
    try:
        yield _console
    finally:
        _console = previous


def current_console() -> 'Console':
    return _console


def usage_error(exc: BaseException) -> int:
    """Bad arguments, no input, no write key: one line, exit 2."""
    error(one_line(exc))
    return EXIT_USAGE


def run_failed(exc: BaseException, what: str = 'run', died: Optional[str] = None) -> int:
    """A pipeline that raised: our own stop reasons keep their exit status (no key: 2, key
    refused by Segment: 3); a dead worker process or anything else is one line, exit 1."""
    reason = stop_reason(exc)
    if reason:
        error(reason[0], note=True)
        return reason[1]
    if died:
        error(died, note=True)
        return EXIT_FAILED
    error(f'the {what} failed: {type(exc).__name__}: {one_line(exc, 200)}', note=True)
    return EXIT_FAILED
