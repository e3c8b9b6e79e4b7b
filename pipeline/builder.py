"""Builds the pipeline (read → map → batch → send → rejects) without running it."""
import apache_beam as beam
from apache_beam.options.pipeline_options import (DebugOptions, DirectOptions,
                                                  PipelineOptions, StandardOptions,
                                                  WorkerOptions)

import pipeline
from pipeline.options import RunSettings
from transforms.batch import BatchMessages
from transforms.map import MapToSegment
from transforms.read import ReadCurrentsEvents
from transforms.rejects import WriteRejects
from transforms.send import SendBatchesFn, SendToSegment, WriteRequestBodiesFn


def sending_processes(options: PipelineOptions) -> int:
    """How many processes send at once, to divide --max_events_per_second between them.

    Local: one process unless multi_processing. Dataflow: one SDK process per worker VM
    (the builder asks for that when throttling), so max_num_workers (or num_workers).
    """
    runner = (options.view_as(StandardOptions).runner or '').lower()
    if 'dataflow' in runner:
        workers = options.view_as(WorkerOptions)
        return max(1, workers.max_num_workers or workers.num_workers or 1)
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == 'multi_processing':
        return max(1, direct.direct_num_workers or 1)
    return 1


def build_pipeline(settings: RunSettings, pattern: str, options: PipelineOptions) -> beam.Pipeline:
    per_process_rate = 0.0
    if settings.max_events_per_second > 0:
        per_process_rate = settings.max_events_per_second / sending_processes(options)
        if 'dataflow' in (options.view_as(StandardOptions).runner or '').lower():
            options.view_as(DebugOptions).add_experiment('no_use_multiple_sdk_containers')
    p = beam.Pipeline(options=options)
    events, read_rejects = p | 'Read' >> ReadCurrentsEvents(pattern, settings.selector)
    messages, map_rejects = events | 'Map' >> MapToSegment(
        settings.message_id_prefix, pipeline.__version__, settings.integrations)
    batches, batch_rejects = messages | 'Batch' >> BatchMessages()
    if settings.dry_run_output:
        send_fn = WriteRequestBodiesFn(settings.dry_run_output)
    else:
        send_fn = SendBatchesFn(settings.endpoint, settings.key_source, settings.timeout,
                                settings.use_gzip, settings.max_retry_seconds, per_process_rate,
                                settings.max_in_flight)
    send_rejects = batches | 'Send' >> SendToSegment(send_fn)
    _ = ((read_rejects, map_rejects, batch_rejects, send_rejects)
         | 'Rejects' >> WriteRejects(f'{settings.rejects}/rejects-{settings.run_id}'))
    return p
