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
from pipeline.ledger import pending_path, segment_path
from pipeline.options import RunSettings
from pipeline.resume import input_identity
from transforms.deliver import EVENTS, REJECTS, DeliverToSegment
from transforms.manifest import CommitDeliveredFn, WriteManifestFn
from transforms.progress import LiveChannel
from transforms.read import ReadCurrentsEvents
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
    """Whether a wave of this run records its files (pipeline/ledger.py): a run that sends."""
    return settings.file_stamps is not None and not settings.dry_run_output


def delivered_entries(settings: RunSettings, files) -> List[Tuple[str, int, float]]:
    """The per-file record of a wave of these files (path, bytes, stamp), in path order."""
    stamps = settings.file_stamps or {}
    return [(path, *stamps[path]) for path in sorted([entry[0] for entry in files])
            if path in stamps]


def build_pipeline(settings: RunSettings, files: List[Tuple[str, Optional[str]]],
                   options: PipelineOptions, wave: str = 'w0',
                   partitions: Iterable[str] = (), manifest_path: Optional[str] = None,
                   runner: Optional[PipelineRunner] = None,
                   live: LiveChannel = LiveChannel()) -> beam.Pipeline:
    """One wave: these files, sent (or written, in a dry run), rejects, then its records:
    the resume manifest (`manifest_path`) and the per-file record (when `records_files`: the
    launcher stages it first, see pipeline/running.py), both written only once the rejects are
    durable. A dry run sends nothing, so it records nothing."""
    p = beam.Pipeline(runner=runner, options=options)
    events, read_rejects = p | 'Read' >> ReadCurrentsEvents(
        files, settings.selector.event_types, settings.skip_files, live,
        settings.store_credentials)
    written = {EVENTS: events, REJECTS: read_rejects} | 'Deliver' >> deliver_step(
        settings, options, f'{settings.rejects}/rejects-{settings.run_id}-{wave}', live)
    if settings.dry_run_output:
        return p
    if settings.since_last_run or settings.follow:
        # Partitions of a bucket still being written are never complete: record files only.
        manifest_path = None
    record = records_files(settings)
    if manifest_path or record:
        rejects_written = written | 'CountRejectFiles' >> beam.combiners.Count.Globally()
    if manifest_path:
        _ = rejects_written | 'RecordCompleted' >> beam.ParDo(WriteManifestFn(
            manifest_path, settings.run_id, partitions, len(files),
            input_identity(settings.input), live))
    if record:
        segment = segment_path(settings.rejects, settings.run_id, wave)
        _ = rejects_written | 'RecordDelivered' >> beam.ParDo(CommitDeliveredFn(
            pending_path(segment), segment, live))
    return p
