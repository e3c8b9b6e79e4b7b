"""Builds the pipeline (read → map → batch → send → rejects → manifest) without running it."""
from typing import Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import (DebugOptions, PipelineOptions,
                                                  StandardOptions, WorkerOptions)
from apache_beam.runners.runner import PipelineRunner

import pipeline
from pipeline.local_runner import worker_processes
from pipeline.options import RunSettings
from transforms.batch import BatchMessages
from transforms.manifest import WriteManifestFn
from transforms.map import MapToSegment
from transforms.read import ReadCurrentsEvents
from transforms.rejects import WriteRejects
from transforms.send import SendBatchesFn, SendToSegment, WriteRequestBodiesFn

LARGE_GRAPH_FILES = 5000


def is_dataflow(options: PipelineOptions) -> bool:
    return 'dataflow' in (options.view_as(StandardOptions).runner or '').lower()


def sending_processes(options: PipelineOptions) -> int:
    """How many processes send at once, to divide --max_events_per_second between them.

    Local: one process unless multi_processing. Dataflow: one SDK process per worker VM
    (the builder asks for that when throttling), so max_num_workers (or num_workers).
    """
    if is_dataflow(options):
        workers = options.view_as(WorkerOptions)
        return max(1, workers.max_num_workers or workers.num_workers or 1)
    return max(1, worker_processes(options))


def send_step(settings: RunSettings, options: PipelineOptions) -> beam.DoFn:
    if settings.dry_run_output:
        return WriteRequestBodiesFn(settings.dry_run_output)
    rate = 0.0
    if settings.max_events_per_second > 0:
        rate = settings.max_events_per_second / sending_processes(options)
        if is_dataflow(options):
            options.view_as(DebugOptions).add_experiment('no_use_multiple_sdk_containers')
    return SendBatchesFn(settings.endpoint, settings.key_source, settings.timeout,
                         settings.use_gzip, settings.max_retry_seconds, rate,
                         settings.max_in_flight)


def build_pipeline(settings: RunSettings, files: List[Tuple[str, Optional[str]]],
                   options: PipelineOptions, wave: str = 'w0',
                   partitions: Iterable[str] = (), manifest_path: Optional[str] = None,
                   runner: Optional[PipelineRunner] = None) -> beam.Pipeline:
    """One wave: these files, sent (or written, in a dry run), rejects, then its manifest."""
    if is_dataflow(options) and len(files) > LARGE_GRAPH_FILES:
        options.view_as(DebugOptions).add_experiment('upload_graph')  # job graph over 10 MB
    sender = send_step(settings, options)  # may add experiments: before Pipeline copies options
    p = beam.Pipeline(runner=runner, options=options)
    events, read_rejects = p | 'Read' >> ReadCurrentsEvents(
        files, settings.selector.event_types, settings.store_credentials)
    messages, map_rejects = events | 'Map' >> MapToSegment(
        settings.message_id_prefix, pipeline.__version__, settings.integrations)
    batches, batch_rejects = messages | 'Batch' >> BatchMessages()
    send_rejects = batches | 'Send' >> SendToSegment(sender)
    written = ((read_rejects, map_rejects, batch_rejects, send_rejects)
               | 'Rejects' >> WriteRejects(f'{settings.rejects}/rejects-{settings.run_id}-{wave}'))
    if manifest_path:
        _ = (written
             | 'CountRejectFiles' >> beam.combiners.Count.Globally()
             | 'RecordCompleted' >> beam.ParDo(WriteManifestFn(
                 manifest_path, settings.run_id, partitions, len(files))))
    return p
