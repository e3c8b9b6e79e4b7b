"""Builds the pipeline (read → map → batch → send → rejects → records) without running it.

Builders return what they build and change nothing they are given: the job options a run
needs (experiments) are worked out by `job_options`, which returns a copy.
"""
import copy
from typing import Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import (DebugOptions, PipelineOptions,
                                                  StandardOptions, WorkerOptions)
from apache_beam.runners.runner import PipelineRunner

import pipeline
from pipeline.ledger import window_path
from pipeline.options import RunSettings
from pipeline.resume import input_identity
from transforms.deliver import EVENTS, REJECTS, DeliverToSegment
from transforms.manifest import Manifest, SumTallies, WaveDoneFn, WindowUpdate
from transforms.progress import LiveChannel
from transforms.read import ReadCurrentsEvents, RecordSpec
from transforms.records import records_dir
from transforms.send import SendBatchesFn, WriteRequestBodiesFn

LARGE_GRAPH_FILES = 5000


def is_dataflow(options: PipelineOptions) -> bool:
    return 'dataflow' in (options.view_as(StandardOptions).runner or '').lower()


def sending_processes(options: PipelineOptions) -> int:
    """How many processes send at once, to divide --max_events_per_second between them.

    Local: one process unless multi_processing. Dataflow: one SDK process per worker VM
    (`job_options` asks for that when throttling), so max_num_workers (or num_workers).
    """
    if is_dataflow(options):
        workers = options.view_as(WorkerOptions)
        return max(1, workers.max_num_workers or workers.num_workers or 1)
    from pipeline.local_runner import worker_processes   # local only: not for a Dataflow build
    return max(1, worker_processes(options))


def job_options(settings: RunSettings, options: PipelineOptions,
                files: int = 0) -> PipelineOptions:
    """A copy of `options` with the experiments this run needs on Dataflow.

    Throttled runs send from one SDK process per worker VM (so the rate divides by workers);
    very large inputs upload the job graph separately (over 10 MB).
    """
    options = copy.deepcopy(options)
    if is_dataflow(options):
        debug = options.view_as(DebugOptions)
        if settings.max_events_per_second > 0 and not settings.dry_run_output:
            debug.add_experiment('no_use_multiple_sdk_containers')
        if files > LARGE_GRAPH_FILES:
            debug.add_experiment('upload_graph')
    return options


def send_step(settings: RunSettings, options: PipelineOptions,
              live: LiveChannel = LiveChannel()) -> beam.DoFn:
    """The sending DoFn: to Segment at this run's share of the rate, or to --dry_run_output."""
    if settings.dry_run_output:
        return WriteRequestBodiesFn(settings.dry_run_output, settings.segment_sent_at, live)
    rate = 0.0
    if settings.max_events_per_second > 0:
        rate = settings.max_events_per_second / sending_processes(options)
    return SendBatchesFn(settings.endpoint, settings.key_source, settings.timeout,
                         settings.use_gzip, settings.max_retry_seconds, rate,
                         settings.max_in_flight, settings.segment_sent_at, live,
                         use_env_proxy=settings.use_env_proxy)


def deliver_step(settings: RunSettings, options: PipelineOptions, rejects_prefix: str,
                 live: LiveChannel = LiveChannel()) -> DeliverToSegment:
    """Map → batch → send → rejects with this run's settings (a run and replay alike)."""
    return DeliverToSegment(send_step(settings, options, live), rejects_prefix,
                            settings.message_id_prefix, pipeline.__version__,
                            settings.integrations, settings.mapping, settings.include_anonymous,
                            live, input_identity(settings.input))


def records_files(settings: RunSettings) -> bool:
    """Whether a wave of this run records its done files (transforms/completion.py): a run that
    sends (a dry run sends nothing, so it records nothing)."""
    return bool(settings.rejects) and not settings.dry_run_output


def read_elements(settings: RunSettings, files) -> List[Tuple[str, Optional[str], int, float]]:
    """(path, event type, bytes, stamp) of each file, from (path, type[, bytes]) and the
    stamps the listing took (settings.file_stamps)."""
    stamps = settings.file_stamps or {}
    elements = []
    for entry in files:
        size, stamp = stamps.get(entry[0], (entry[2] if len(entry) > 2 else 0, 0.0))
        elements.append((entry[0], entry[1], size, stamp))
    return elements


def coverage_path(settings: RunSettings, wave: str) -> str:
    return f'{settings.rejects}/coverage/coverage-{settings.run_id}-{wave}.json'


def done_marker(settings: RunSettings, wave: str) -> str:
    """What a `--since_last_run` wave writes once over (a submitted job's lock waits for it)."""
    return f'{records_dir(settings.rejects)}/{DONE_PREFIX}{settings.run_id}-{wave}.json'


DONE_PREFIX = 'done-'


def build_pipeline(settings: RunSettings, files, options: PipelineOptions, wave: str = 'w0',
                   partitions: Iterable[str] = (), manifest_path: Optional[str] = None,
                   runner: Optional[PipelineRunner] = None,
                   live: LiveChannel = LiveChannel(), window: Optional[WindowUpdate] = None
                   ) -> beam.Pipeline:
    """One wave: these files (or a ListOnWorkers of units), sent (or written, in a dry run),
    rejects; each file recorded as it completes (not in a dry run); then, once the rejects are
    durable, the wave's coverage, its manifest (`manifest_path`; a `--since_last_run` wave
    writes a done marker instead) and, given `window`, `--since_last_run`'s next window."""
    p = beam.Pipeline(runner=runner, options=options)
    record = (RecordSpec(settings.rejects, settings.run_id, wave) if records_files(settings)
              else None)
    source = files if isinstance(files, beam.PTransform) else read_elements(settings, files)
    events, read_rejects = p | 'Read' >> ReadCurrentsEvents(
        source, settings.selector.event_types, settings.skip_files, live,
        settings.store_credentials, record)
    tallies = {EVENTS: events, REJECTS: read_rejects} | 'Deliver' >> deliver_step(
        settings, options, f'{settings.rejects}/rejects-{settings.run_id}-{wave}', live)
    incremental = settings.since_last_run or settings.follow
    manifest = None
    if settings.dry_run_output:
        window = None   # a dry run records nothing
    elif incremental:
        # Partitions of a bucket still being written are never complete: a done marker only.
        manifest = Manifest(done_marker(settings, wave), settings.run_id, (), 0,
                            input_identity(settings.input), 'since_last_run')
    elif manifest_path:
        manifest = Manifest(manifest_path, settings.run_id, partitions,
                            0 if isinstance(files, beam.PTransform) else len(files),
                            input_identity(settings.input))
    _ = (tallies
         | 'SumWave' >> beam.CombineGlobally(SumTallies())
         | 'WaveDone' >> beam.ParDo(WaveDoneFn(
             coverage_path(settings, wave), manifest,
             window_path(settings.rejects) if window is not None else None, window, live)))
    return p


