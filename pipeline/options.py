"""Command-line options of the pipeline (one place), and the checked settings derived from them."""
import datetime
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Optional

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.events import EVENTS, resolve_event_type
from pipeline.paths import FileSelector, UsageError, parse_hour
from pipeline.endpoint import endpoint_for
from transforms.write_key import WriteKeySource

SECRET_NAME = re.compile(r'^projects/[^/]+/secrets/[^/]+/versions/[^/]+$')
FORBIDDEN_FLAGS = ('--segment_write_key', '--write_key', '--segment-write-key', '--writeKey')
# Options for local runs: not Flex Template parameters (metadata.json). A Dataflow job cuts its
# input by --wave_hours; --wave_mb sizes waves against the local runner's per-pipeline costs.
LOCAL_ONLY = frozenset({'fresh_worker_processes', 'wave_mb'})


class CurrentsToSegmentOptions(PipelineOptions):
    """Options of currents-to-segment; Beam's own options (--runner, ...) pass through."""

    @classmethod
    def _add_argparse_args(cls, parser):
        a = parser.add_argument
        a('--input', help='Currents export: prefix, folder, file or glob; local or gs://')
        a('--rejects', help='Folder (local or gs://) for rejects JSON Lines')
        a('--start', help='First date= hour read, YYYY-MM-DD[-HH] UTC (inclusive)')
        a('--end', help='Date= hour where reading stops, YYYY-MM-DD[-HH] UTC (exclusive)')
        a('--event_types', help='Comma-separated Segment event names or Currents types to read')
        a('--message_id_prefix', default='', help='Prefix for every messageId (e.g. dev-)')
        a('--dry_run_output', help='Write the request bodies to this folder; send nothing')
        a('--summary_output', help='Write the run summary as JSON to this file')
        a('--segment_region', default='us', choices=('us', 'eu'), help='Segment region')
        a('--segment_endpoint', help='Override the batch endpoint URL')
        a('--segment_gzip', action='store_true', default=False, help='gzip request bodies')
        a('--segment_timeout', type=float, default=30.0, help='Seconds per HTTP request')
        a('--max_retry_seconds', type=float, default=600.0,
          help='Retry budget per batch before its messages become retries_exhausted rejects')
        a('--max_events_per_second', type=float, default=0.0,
          help='Aggregate send rate of the run (0 = unthrottled)')
        a('--max_in_flight', type=int, default=4, help='Concurrent requests per sending worker')
        a('--integrations', help='JSON object sent as each message\'s `integrations`')
        a('--segment_write_key_secret',
          help='Secret Manager version holding the write key: projects/P/secrets/S/versions/V')
        a('--resume', action='store_true', default=False,
          help='Skip input partitions that earlier runs with the same --rejects completed')
        a('--plan', action='store_true', default=False,
          help='Print what the run would read and how long sending would take; do nothing')
        a('--wave_hours', type=int, default=None,
          help='Run the input in waves of this many date= hours, each recorded for --resume '
               'when it completes (0 = one wave; default: waves by --wave_mb locally, one job '
               'on Dataflow)')
        a('--wave_mb', type=float, default=None,
          help='Local default: waves of whole date= hours holding at least this many MiB of '
               'input (or 15,000 files) each (default 512, about a million events; 0 = one wave)')
        a('--wait', action='store_true', default=False,
          help='On Dataflow, wait for the job(s) and print the summary (default: submit, return)')
        a('--fresh_worker_processes', action='store_true', default=False,
          help='Local worker processes: start each cold, as Beam does, instead of forking '
               'warm ones from this process (Linux)')


@dataclass
class RunSettings:
    """The validated settings one run is built from."""
    input: str
    rejects: str
    selector: FileSelector
    message_id_prefix: str = ''
    dry_run_output: Optional[str] = None
    summary_output: Optional[str] = None
    endpoint: str = ''
    use_gzip: bool = False
    timeout: float = 30.0
    max_retry_seconds: float = 600.0
    max_events_per_second: float = 0.0
    max_in_flight: int = 4
    integrations: Optional[Dict[str, Any]] = None
    key_source: WriteKeySource = field(default_factory=WriteKeySource)
    run_id: str = ''
    resume: bool = False
    plan: bool = False
    wave_hours: Optional[int] = None
    wave_mb: Optional[float] = None
    wait: bool = False
    fresh_worker_processes: bool = False


def check_argv(argv) -> None:
    for arg in argv:
        if arg.split('=', 1)[0] in FORBIDDEN_FLAGS:
            raise UsageError('the write key is never a command-line option (it would show in '
                             'process lists and the Dataflow console): set SEGMENT_WRITE_KEY or '
                             'use --segment_write_key_secret')


def settings_from(options: PipelineOptions) -> RunSettings:
    """Checks the options; raises UsageError with a one-line reason."""
    o = options.view_as(CurrentsToSegmentOptions)
    if not o.input:
        raise UsageError('--input is required (a Currents export folder, file or glob)')
    if not o.rejects:
        raise UsageError('--rejects is required (a folder for undeliverable events)')
    start = parse_hour(o.start, '--start') if o.start else None
    end = parse_hour(o.end, '--end') if o.end else None
    if start and end and start >= end:
        raise UsageError('--start must be before --end')
    if o.event_types:
        wanted = set()
        for name in o.event_types.split(','):
            if not name.strip():
                continue
            found = resolve_event_type(name)
            if found is None:
                raise UsageError(f'--event_types: unknown event {name.strip()!r} (use a Segment '
                                 f'event name or Currents type from the README table)')
            wanted.add(found)
        if not wanted:
            raise UsageError('--event_types is empty')
        event_types: FrozenSet[str] = frozenset(wanted)
    else:
        event_types = frozenset(e.currents_type for e in EVENTS)
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
    if o.segment_write_key_secret and not SECRET_NAME.match(o.segment_write_key_secret):
        raise UsageError('--segment_write_key_secret must look like '
                         'projects/P/secrets/S/versions/V')
    for flag, value in (('--segment_timeout', o.segment_timeout),
                        ('--max_retry_seconds', o.max_retry_seconds)):
        if value <= 0:
            raise UsageError(f'{flag} must be positive')
    if o.max_events_per_second < 0:
        raise UsageError('--max_events_per_second must be 0 (unthrottled) or positive')
    if o.max_in_flight < 1:
        raise UsageError('--max_in_flight must be at least 1')
    if o.wave_hours is not None and o.wave_hours < 0:
        raise UsageError('--wave_hours must be 0 (one wave) or positive')
    if o.wave_mb is not None and not o.wave_mb >= 0:
        raise UsageError('--wave_mb must be 0 (one wave) or positive')
    return RunSettings(
        input=o.input, rejects=o.rejects.rstrip('/'),
        selector=FileSelector(event_types, start, end),
        message_id_prefix=o.message_id_prefix or '', dry_run_output=o.dry_run_output,
        summary_output=o.summary_output, endpoint=endpoint, use_gzip=o.segment_gzip,
        timeout=o.segment_timeout, max_retry_seconds=o.max_retry_seconds,
        max_events_per_second=o.max_events_per_second, max_in_flight=o.max_in_flight,
        integrations=integrations,
        key_source=WriteKeySource(secret_name=o.segment_write_key_secret or None),
        run_id=datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ'),
        resume=o.resume, plan=o.plan, wave_hours=o.wave_hours, wave_mb=o.wave_mb, wait=o.wait,
        fresh_worker_processes=o.fresh_worker_processes)
