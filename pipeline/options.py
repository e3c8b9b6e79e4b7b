"""Command-line options of the pipeline (one place), and the checked settings derived from them."""
import argparse
import datetime
import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.profiles import (CLASSIC, PROFILES, currents_types, resolve_event_types,
                                 row_names)
from pipeline.paths import FileSelector, UsageError, parse_hour
from pipeline.endpoint import endpoint_for
from transforms.credentials import StoreCredentials
from transforms.mapping import MAX_MESSAGE_ID_CHARS
from transforms.secrets import ACCEPTED_FORMS, store_of
from transforms.write_key import WriteKeySource

FORBIDDEN_FLAGS = ('--segment_write_key', '--write_key', '--segment-write-key', '--writeKey')
# Options that only mean something to a local run: not Flex Template parameters (metadata.json).
# A Dataflow job cuts its input by --wave_hours; --wave_mb sizes waves against the local
# runner's per-pipeline costs.
LOCAL_ONLY = frozenset({'fresh_worker_processes', 'progress_seconds', 'verbose', 'follow',
                        'poll_seconds', 'wave_mb'})
DEFAULT_PROGRESS_SECONDS = 10.0
DEFAULT_LOOKBACK_HOURS = 48
SECRET_FORMS_HELP = ('projects/P/secrets/S/versions/V (Secret Manager), '
                     'arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME (Secrets Manager) or '
                     'https://VAULT.vault.azure.net/secrets/NAME[/VERSION] (Key Vault)')


# The help's groups, in the order of the README's options table.
INPUT, SEGMENT, DELIVERY, INCREMENTAL, DATAFLOW, OUTPUT = (
    'input', 'Segment', 'delivery', 'resume and incremental', 'Dataflow', 'output')
GROUPS = {
    INPUT: 'What is read.',
    SEGMENT: 'What each event becomes and where it goes.',
    DELIVERY: 'How fast and how hard sending tries.',
    INCREMENTAL: 'Long backfills and keeping Segment fed.',
    DATAFLOW: 'Production runs on Google Cloud Dataflow.',
    OUTPUT: 'What the run writes and shows.',
}
# The longest Currents `id`: Braze ids are 24-hex ObjectIds or UUIDs, 36 characters in their
# canonical form (every Braze sample file's `id`); a prefix leaves room for it in a messageId.
LONGEST_CURRENTS_ID = 36


def _flag(help_text: str) -> dict:
    """An on/off option, off by default."""
    return dict(action='store_true', default=False, help=help_text)


def _option_table():
    """(group, flag, argparse keywords) of every option, in help order."""
    return (
        (INPUT, '--input', dict(
            help='Currents export: prefix, folder, file or glob; local, gs://, '
                 's3://BUCKET/PREFIX or azfs://ACCOUNT/CONTAINER/PREFIX')),
        (INPUT, '--start', dict(help='First date= hour read, YYYY-MM-DD[-HH] UTC (inclusive)')),
        (INPUT, '--end', dict(help='Date= hour where reading stops, YYYY-MM-DD[-HH] UTC '
                                   '(exclusive)')),
        (INPUT, '--event_types', dict(
            help='Comma-separated Segment event names or Currents types to read (names of '
                 'the --mapping profile; default: all of them)')),
        (INPUT, '--skip_files', dict(
            help='Comma-separated paths (as listed) not to read: each becomes one '
                 'unreadable_file reject, so a run (with --resume) gets past a file a worker '
                 'died on')),
        (SEGMENT, '--mapping', dict(
            default=CLASSIC, metavar='{' + ','.join(PROFILES) + '}',
            help='Mapping profile: classic (the 34 events of the "Segment for Currents" '
                 'document) or current (the 80 types Braze\'s connector sends today)')),
        (SEGMENT, '--include_anonymous', _flag(
            'Send events without external_user_id with anonymousId only (default: drop '
            'them)')),
        (SEGMENT, '--message_id_prefix', dict(
            default='', help=f'Prefix for every messageId (e.g. dev-), at most '
                             f'{MAX_MESSAGE_ID_CHARS - LONGEST_CURRENTS_ID} characters')),
        (SEGMENT, '--integrations', dict(
            help='JSON object sent as each message\'s `integrations`')),
        (SEGMENT, '--segment_region', dict(default='us', choices=('us', 'eu'),
                                           help='Segment region')),
        (SEGMENT, '--segment_endpoint', dict(help='Override the batch endpoint URL')),
        (SEGMENT, '--segment_write_key_secret', dict(
            help=f'Secret holding the write key, read by the sending workers (default: '
                 f'SEGMENT_WRITE_KEY): {SECRET_FORMS_HELP}')),
        (SEGMENT, '--segment_sent_at', _flag(
            'Put "sentAt" (the time of each attempt) in request bodies; off by default '
            'because Segment may then recompute historical timestamps')),
        (DELIVERY, '--segment_gzip', _flag('gzip request bodies')),
        (DELIVERY, '--segment_timeout', dict(type=float, default=30.0,
                                             help='Seconds per HTTP request')),
        (DELIVERY, '--max_retry_seconds', dict(
            type=float, default=600.0,
            help='Retry budget per batch before its messages become retries_exhausted '
                 'rejects')),
        (DELIVERY, '--max_events_per_second', dict(
            type=float, default=0.0,
            help='Aggregate send rate of the run (0 = unthrottled)')),
        (DELIVERY, '--max_in_flight', dict(type=int, default=4,
                                           help='Concurrent requests per sending worker')),
        (DELIVERY, '--use_env_proxy', _flag(
            'Send through the HTTPS_PROXY of the environment (https endpoints only); '
            'by default no proxy, netrc or CA setting is taken from the environment')),
        (DELIVERY, '--fresh_worker_processes', _flag(
            'Local worker processes: start each cold, as Beam does, instead of forking '
            'warm ones from this process (Linux)')),
        (INCREMENTAL, '--resume', _flag(
            'Skip input partitions that earlier runs with the same --rejects completed')),
        (INCREMENTAL, '--wave_hours', dict(
            type=int, default=None,
            help='Run the input in waves of this many date= hours, each recorded for --resume '
                 'when it completes (0 = one wave; default: waves by --wave_mb locally, one '
                 'job on Dataflow)')),
        (INCREMENTAL, '--wave_mb', dict(
            type=float, default=None,
            help='Local default: waves of whole date= hours holding at least this many MiB of '
                 'input (or 25,000 files) each (default 512, about a million events; 0 = one '
                 'wave)')),
        (INCREMENTAL, '--since_last_run', _flag(
            'Send only the input files not delivered by earlier runs with the same '
            '--rejects (new or changed since); safe to start from a scheduler')),
        (INCREMENTAL, '--lookback_hours', dict(
            type=int, default=DEFAULT_LOOKBACK_HOURS,
            help='With --since_last_run/--follow: look again at the date= hours from the '
                 'newest one the last pass listed minus this many (Braze writes an hour\'s '
                 'files during and just after it); 0 = the whole input, for an occasional '
                 'sweep')),
        (INCREMENTAL, '--follow', _flag(
            'Local: keep sending new input files every --poll_seconds until '
            'SIGINT/SIGTERM')),
        (INCREMENTAL, '--poll_seconds', dict(
            type=float, default=60.0,
            help='With --follow: seconds between two looks at the input')),
        (DATAFLOW, '--wait', _flag(
            'On Dataflow, wait for the job(s) and print the summary (default: submit, '
            'return)')),
        (DATAFLOW, '--aws_credentials_secret', dict(
            help=f'Secret holding the AWS access key pair for s3:// paths (JSON or the AWS '
                 f'console CSV): {SECRET_FORMS_HELP}')),
        (DATAFLOW, '--azure_connection_string_secret', dict(
            help=f'Secret holding the Azure Storage connection string for azfs:// paths: '
                 f'{SECRET_FORMS_HELP}')),
        (OUTPUT, '--rejects', dict(
            help='Folder (local, gs://, s3:// or azfs://) for rejects JSON Lines')),
        (OUTPUT, '--summary_output', dict(help='Write the run summary as JSON to this file')),
        (OUTPUT, '--report', dict(
            help='Write the run report to this HTML file: coverage by date= hour and event '
                 'type with its gaps, totals, rejects, request outcomes')),
        (OUTPUT, '--dry_run_output', dict(
            help='Write the request bodies to this folder; send nothing')),
        (OUTPUT, '--plan', _flag(
            'Print what the run would read and how long sending would take; do nothing')),
        (OUTPUT, '--progress_seconds', dict(
            type=float, default=DEFAULT_PROGRESS_SECONDS,
            help='Print a progress line on stderr every this many seconds (0 = never)')),
        (OUTPUT, '--verbose', _flag(
            "Show Beam's and gRPC's own log and tracebacks on stderr instead of a log "
            "file")),
    )


OPTIONS = _option_table()
# What `replay` takes of them (docs/resume.md, "Replay rejects"): where and how the events go, how kept
# records are mapped again, and what it writes. Anything else of a run is refused there.
REPLAY_OPTIONS = frozenset({
    '--input', '--rejects', '--summary_output', '--dry_run_output', '--verbose',
    '--mapping', '--include_anonymous', '--message_id_prefix', '--integrations',
    '--segment_region', '--segment_endpoint', '--segment_write_key_secret', '--segment_sent_at',
    '--segment_gzip', '--segment_timeout', '--max_retry_seconds', '--max_events_per_second',
    '--max_in_flight', '--use_env_proxy', '--aws_credentials_secret',
    '--azure_connection_string_secret', '--report'})


def add_options(parser, only=None, help_overrides=None) -> None:
    """This tool's options on `parser`, in their help groups (groups change no parsing).

    `only`: the flags to add (replay's); `help_overrides`: flag -> help text for that use.
    """
    groups = {}
    for group, flag, keywords in OPTIONS:
        if only is not None and flag not in only:
            continue
        if group not in groups:
            groups[group] = parser.add_argument_group(group, GROUPS[group])
        if help_overrides and flag in help_overrides:
            keywords = dict(keywords, help=help_overrides[flag])
        groups[group].add_argument(flag, **keywords)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every option with a default shows it, unless its help already says what it is."""

    def _get_help_string(self, action):
        text, default = action.help or '', action.default
        if default is None or default is False or default in ('', argparse.SUPPRESS) \
                or 'default' in text:
            return text
        if isinstance(default, float) and default.is_integer():
            default = int(default)
        return f'{text} (default: {default})'


class CurrentsToSegmentOptions(PipelineOptions):
    """Options of currents-to-segment; Beam's own options (--runner, ...) pass through."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_options(parser)


class _RefusingParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line) instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


def _option_classes(cls=PipelineOptions):
    for sub in cls.__subclasses__():
        yield sub
        yield from _option_classes(sub)


def known_options_parser() -> argparse.ArgumentParser:
    """One parser holding this tool's options and every option Beam registers.

    Beam's registry is the PipelineOptions subclasses (what its own get_all_options walks);
    walked recursively here, so options of runner-specific subclasses count as known too.
    """
    parser = _RefusingParser(add_help=False, allow_abbrev=False)
    seen = set()
    for cls in _option_classes():
        if cls in seen:
            continue
        seen.add(cls)
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:
            pass  # a subclass registered twice (e.g. re-imported): its options are known
    return parser


def option_names(parser: argparse.ArgumentParser) -> List[str]:
    return sorted({o for a in parser._actions for o in a.option_strings if o.startswith('--')})


def closest_option(name: str, names: List[str]) -> Optional[str]:
    """The known option a typo most likely meant (difflib's ratio, cut-off 0.75)."""
    found = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    return found[0] if found else None


def unknown_option_error(unknown: List[str], names: List[str]) -> Optional[str]:
    """One-line refusal for what no parser knows, naming the closest known option; None if none."""
    for arg in unknown:
        if arg.startswith('-') and arg not in ('-', '--'):
            name = arg.split('=', 1)[0]
            guess = closest_option(name, names)
            hint = f'; did you mean {guess}?' if guess else '; see --help for the options'
            return f'unknown option {name}{hint}'
    if unknown:
        return f'unexpected argument {unknown[0]!r} (options take one value each; see --help)'
    return None


def refuse_unknown_options(argv: List[str], extra=None) -> None:
    """Unknown or misspelt options are refused, never ignored (Beam would only warn).

    `extra(parser)` adds the options of a sub-command (replay's --reasons).
    """
    parser = known_options_parser()
    if extra is not None:
        extra(parser)
    _, unknown = parser.parse_known_args(argv)
    message = unknown_option_error(unknown, option_names(parser))
    if message:
        raise UsageError(message)


@dataclass
class RunSettings:
    """The validated settings one run is built from."""
    input: str
    rejects: str
    selector: FileSelector
    message_id_prefix: str = ''
    dry_run_output: Optional[str] = None
    summary_output: Optional[str] = None
    report: Optional[str] = None
    endpoint: str = ''
    use_gzip: bool = False
    timeout: float = 30.0
    max_retry_seconds: float = 600.0
    max_events_per_second: float = 0.0
    max_in_flight: int = 4
    integrations: Optional[Dict[str, Any]] = None
    key_source: WriteKeySource = field(default_factory=WriteKeySource)
    store_credentials: StoreCredentials = field(default_factory=StoreCredentials)
    run_id: str = ''
    resume: bool = False
    plan: bool = False
    wave_hours: Optional[int] = None
    wave_mb: Optional[float] = None
    wait: bool = False
    fresh_worker_processes: bool = False
    mapping: str = CLASSIC
    include_anonymous: bool = False
    segment_sent_at: bool = False
    progress_seconds: float = DEFAULT_PROGRESS_SECONDS
    verbose: bool = False
    use_env_proxy: bool = False
    skip_files: FrozenSet[str] = frozenset()
    since_last_run: bool = False
    follow: bool = False
    poll_seconds: float = 60.0
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS
    # path -> (bytes, modification stamp) of the listed files: each is recorded with them in
    # the per-file record (transforms/records.py) once it completes.
    file_stamps: Optional[Dict[str, Tuple[int, float]]] = None


def check_argv(argv, extra=None) -> None:
    for arg in argv:
        if arg.split('=', 1)[0] in FORBIDDEN_FLAGS:
            raise UsageError('the write key is never a command-line option (it would show in '
                             'process lists and the Dataflow console): set SEGMENT_WRITE_KEY or '
                             'use --segment_write_key_secret')
    refuse_store_secrets(argv)
    refuse_unknown_options(argv, extra)


S3_SECRET_FLAGS = ('--s3_access_key_id', '--s3_secret_access_key', '--s3_session_token')
_AZURE_SECRET_PART = re.compile(r'(?i)(?:^|;)\s*(?:AccountKey|SharedAccessSignature)\s*=')


def refuse_store_secrets(argv) -> None:
    """Beam's S3/Azure flags that would carry a secret into process lists and job options.

    The access key id alone is not secret, but it is useless without its secret key, so all
    three S3 credential flags are refused: credentials come from one place, boto3's chain.
    """
    for i, arg in enumerate(argv):
        flag, has_value, value = arg.partition('=')
        if flag in S3_SECRET_FLAGS:
            raise UsageError(f'{flag}: AWS credentials are never command-line options (they '
                             f'would show in process lists and the Dataflow job): use '
                             f'AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or '
                             f'a role, or a secret the workers read: --aws_credentials_secret')
        if flag == '--azure_connection_string':
            if not has_value:
                value = argv[i + 1] if i + 1 < len(argv) else ''
            if _AZURE_SECRET_PART.search(value):
                raise UsageError('--azure_connection_string with an AccountKey or '
                                 'SharedAccessSignature is never a command-line option: set '
                                 'AZURE_STORAGE_CONNECTION_STRING, or a secret the workers read: '
                                 '--azure_connection_string_secret')


def did_you_mean_event(profile: str, name: str) -> str:
    """'; did you mean X?' for a misspelt --event_types name (difflib, as for options)."""
    names = sorted(set(row_names(profile).values()) | set(row_names(profile)))
    by_lower = {n.lower(): n for n in names}
    found = difflib.get_close_matches(name.strip().lower(), list(by_lower), n=1, cutoff=0.75)
    return f'; did you mean {by_lower[found[0]]!r}?' if found else ''


def check_message_id_prefix(prefix: str) -> None:
    """A prefix with which the longest Currents id still fits Segment's 100 characters."""
    room = MAX_MESSAGE_ID_CHARS - LONGEST_CURRENTS_ID
    if len(prefix) > room:
        raise UsageError(f'--message_id_prefix has {len(prefix)} characters; with a '
                         f'{LONGEST_CURRENTS_ID}-character Currents id (a UUID) the messageId '
                         f'would pass Segment\'s {MAX_MESSAGE_ID_CHARS}: use at most {room}')


def settings_from(options: PipelineOptions, need_rejects: bool = True,
                  need_input: bool = True) -> RunSettings:
    """Checks the options; raises UsageError with a one-line reason.

    `need_rejects=False` (--plan): nothing is written, so no --rejects is needed.
    `need_input=False` (replay): the rejects say what to send.
    """
    o = options.view_as(CurrentsToSegmentOptions)
    if not o.input and need_input:
        raise UsageError('--input is required (a Currents export folder, file or glob)')
    if not o.rejects and need_rejects:
        raise UsageError('--rejects is required (a folder for undeliverable events)')
    start = parse_hour(o.start, '--start') if o.start else None
    end = parse_hour(o.end, '--end') if o.end else None
    if start and end and start >= end:
        raise UsageError('--start must be before --end')
    if o.mapping not in PROFILES:
        raise UsageError(f'--mapping must be {" or ".join(PROFILES)}, got {o.mapping!r}')
    if o.event_types:
        wanted = set()
        for name in o.event_types.split(','):
            if not name.strip():
                continue
            found = resolve_event_types(o.mapping, name)
            if not found:
                others = [p for p in PROFILES if p != o.mapping
                          and resolve_event_types(p, name)]
                hint = f'; it is a {others[0]} event (--mapping {others[0]})' if others else \
                    did_you_mean_event(o.mapping, name)
                raise UsageError(f'--event_types: unknown event {name.strip()!r} for --mapping '
                                 f'{o.mapping} (use a Segment event name or Currents type from '
                                 f'docs/mapping.md){hint}')
            wanted |= found
        if not wanted:
            raise UsageError('--event_types is empty')
        event_types: FrozenSet[str] = frozenset(wanted)
    else:
        event_types = frozenset(currents_types(o.mapping))
    try:
        endpoint = endpoint_for(o.segment_region, o.segment_endpoint)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    integrations = None
    if o.integrations:
        try:
            integrations = json.loads(o.integrations)
        except ValueError:
            integrations = None
        if not isinstance(integrations, dict):
            raise UsageError('--integrations must be a JSON object, e.g. {"All": false}')
    check_message_id_prefix(o.message_id_prefix or '')
    for flag, name in (('--segment_write_key_secret', o.segment_write_key_secret),
                       ('--aws_credentials_secret', o.aws_credentials_secret),
                       ('--azure_connection_string_secret', o.azure_connection_string_secret)):
        if name and store_of(name) is None:
            raise UsageError(f'{flag} must be {ACCEPTED_FORMS}')
    for flag, value in (('--segment_timeout', o.segment_timeout),
                        ('--max_retry_seconds', o.max_retry_seconds)):
        if value <= 0:
            raise UsageError(f'{flag} must be positive')
    if o.max_events_per_second < 0:
        raise UsageError('--max_events_per_second must be 0 (unthrottled) or positive')
    if o.max_in_flight < 1:
        raise UsageError('--max_in_flight must be at least 1')
    if o.progress_seconds < 0:
        raise UsageError('--progress_seconds must be 0 (silent) or positive')
    if o.wave_hours is not None and o.wave_hours < 0:
        raise UsageError('--wave_hours must be 0 (one wave) or positive')
    if o.poll_seconds <= 0:
        raise UsageError('--poll_seconds must be positive')
    if o.lookback_hours < 0:
        raise UsageError('--lookback_hours must be 0 (the whole input) or positive')
    if o.resume and (o.since_last_run or o.follow):
        raise UsageError('--resume skips completed partitions (backfills), --since_last_run and '
                         '--follow skip delivered files: use one of them')
    if o.follow and o.plan:
        raise UsageError('--follow runs until stopped; --plan only prints: use one of them')
    if o.report and o.plan:
        raise UsageError('--report is written at the end of a run; --plan only prints: use one '
                         'of them')
    if o.wave_mb is not None and not o.wave_mb >= 0:
        raise UsageError('--wave_mb must be 0 (one wave) or positive')
    return RunSettings(
        input=o.input or '', rejects=(o.rejects or '').rstrip('/'),
        selector=FileSelector(event_types, start, end),
        message_id_prefix=o.message_id_prefix or '', dry_run_output=o.dry_run_output,
        summary_output=o.summary_output, report=o.report, endpoint=endpoint, use_gzip=o.segment_gzip,
        timeout=o.segment_timeout, max_retry_seconds=o.max_retry_seconds,
        max_events_per_second=o.max_events_per_second, max_in_flight=o.max_in_flight,
        integrations=integrations,
        key_source=WriteKeySource(secret_name=o.segment_write_key_secret or None),
        store_credentials=StoreCredentials(o.aws_credentials_secret or None,
                                           o.azure_connection_string_secret or None),
        run_id=datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ'),
        resume=o.resume, plan=o.plan, wave_hours=o.wave_hours, wave_mb=o.wave_mb, wait=o.wait,
        fresh_worker_processes=o.fresh_worker_processes, segment_sent_at=o.segment_sent_at,
        progress_seconds=o.progress_seconds, verbose=o.verbose,
        mapping=o.mapping, include_anonymous=o.include_anonymous, use_env_proxy=o.use_env_proxy,
        skip_files=frozenset(p.strip() for p in (o.skip_files or '').split(',') if p.strip()),
        since_last_run=o.since_last_run, follow=o.follow, poll_seconds=o.poll_seconds,
        lookback_hours=o.lookback_hours)
