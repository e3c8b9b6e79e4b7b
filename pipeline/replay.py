"""`currents-to-segment replay`: re-send rejected events once the cause is fixed (SPEC §5).

Rejects that kept the mapped `message` are sent as they are (same messageId, so nothing is
double-counted); rejects that kept the original `record` are mapped again; `unreadable_file`
rejects re-read their file. Whatever is rejected again lands in a new rejects folder.
"""
import argparse
import json
import sys
from typing import List

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import pipeline
from pipeline.builder import is_dataflow, send_step
from pipeline.stores import prepare_stores
from pipeline.options import check_argv, settings_from
from pipeline.summary import Summary
from transforms import counts
from transforms.batch import BatchMessages
from transforms.map import MapToSegment
from transforms.mapping import serialize
from transforms.model import (INVALID_RECORD, REASONS, UNREADABLE_FILE, CurrentsEvent,
                              Reject, SegmentMessage)
from pipeline.paths import UsageError, is_glob
from transforms.read import REJECTS, ReadCurrentsFileFn
from transforms.rejects import WriteRejects
from transforms.send import SendToSegment
from transforms.write_key import WriteKeyMissing

MESSAGES, RECORDS, FILES = 'messages', 'records', 'files'


class ParseRejectFn(beam.DoFn):
    """One rejects line → a message to resend, a record to re-map, or a file to re-read."""

    def __init__(self, reasons):
        self.reasons = frozenset(reasons)

    def process(self, line: str):
        try:
            row = json.loads(line)
            reason, event_type = row['reason'], row.get('event_type')
        except (ValueError, KeyError, TypeError) as exc:
            counts.counter(counts.READ, '').inc()
            yield beam.pvalue.TaggedOutput(REJECTS, Reject(
                INVALID_RECORD, None, 'rejects file', f'unparseable rejects line: {exc}',
                record={'line': line[:10000]}))
            return
        if reason not in self.reasons:
            counts.counter('not_replayed', reason).inc()
            return
        source = row.get('source') or ''
        if reason == UNREADABLE_FILE:
            yield beam.pvalue.TaggedOutput(FILES, (source, event_type))
            return
        counts.counter(counts.READ, event_type or '').inc()
        if row.get('message') is not None:
            message = row['message']
            yield SegmentMessage(event_type or '', str(message.get('messageId', '')),
                                 serialize(message), source)
        elif row.get('record') is not None and event_type:
            yield beam.pvalue.TaggedOutput(RECORDS, CurrentsEvent(event_type, source, row['record']))
        else:
            yield beam.pvalue.TaggedOutput(REJECTS, Reject(
                INVALID_RECORD, event_type, source, 'reject has neither message nor record',
                record=row))


def rejects_pattern(path: str) -> str:
    if is_glob(path) or path.endswith('.jsonl'):
        return path
    return FileSystems.join(path.rstrip('/'), 'rejects-*.jsonl')


def build_replay(settings, pattern: str, reasons, options: PipelineOptions, out_prefix: str):
    sender = send_step(settings, options)  # may add experiments: before Pipeline copies options
    p = beam.Pipeline(options=options)
    parsed = (p | 'ReadRejects' >> beam.io.ReadFromText(pattern)
              | 'Parse' >> beam.ParDo(ParseRejectFn(reasons)).with_outputs(
                  RECORDS, FILES, REJECTS, main=MESSAGES))
    reread = (parsed[FILES]
              | 'SpreadFiles' >> beam.Reshuffle()
              | 'ReReadFiles' >> beam.ParDo(ReadCurrentsFileFn(settings.selector.event_types,
                                                      settings.store_credentials))
              .with_outputs(REJECTS, main='events'))
    events = (parsed[RECORDS], reread.events) | 'AllRecords' >> beam.Flatten()
    mapped, map_rejects = events | 'Map' >> MapToSegment(
        settings.message_id_prefix, pipeline.__version__, settings.integrations)
    messages = (parsed[MESSAGES], mapped) | 'AllMessages' >> beam.Flatten()
    batches, batch_rejects = messages | 'Batch' >> BatchMessages()
    send_rejects = batches | 'Send' >> SendToSegment(sender)
    _ = ((parsed[REJECTS], reread[REJECTS], map_rejects, batch_rejects, send_rejects)
         | 'Rejects' >> WriteRejects(out_prefix))
    return p


def run_replay(argv: List[str], out=None) -> int:
    from pipeline.main import (EXIT_FAILED, EXIT_USAGE, _one_line, check_sending_setup,
                               error, finish, local_runner_options, stop_reason)
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog='currents-to-segment replay', add_help=False)
    parser.add_argument('--reasons')
    known, rest = parser.parse_known_args(argv)
    try:
        check_argv(rest)
        options = PipelineOptions(rest)
        # --rejects names the rejects to replay; --input is not used (files come from rejects).
        settings = settings_from(PipelineOptions(rest + ['--input', '-']))
        local_runner_options(options)
        prepare_stores(settings, options, is_dataflow(options))
        reasons = REASONS
        if known.reasons:
            reasons = tuple(r.strip() for r in known.reasons.split(',') if r.strip())
            unknown = sorted(set(reasons) - set(REASONS))
            if unknown:
                raise UsageError(f'--reasons: unknown reason(s) {", ".join(unknown)}; '
                                 f'known: {", ".join(REASONS)}')
        pattern = rejects_pattern(settings.rejects)
        if not FileSystems.match([pattern])[0].metadata_list:
            raise UsageError(f'no rejects files match {pattern}')
        check_sending_setup(settings, options)
    except (UsageError, WriteKeyMissing) as exc:
        error(_one_line(exc))
        return EXIT_USAGE
    folder = settings.rejects if not (is_glob(settings.rejects) or
                                      settings.rejects.endswith('.jsonl')) else \
        settings.rejects.rsplit('/', 1)[0]
    out_prefix = FileSystems.join(folder, f'replay-{settings.run_id}', 'rejects')
    try:
        result = build_replay(settings, pattern, reasons, options, out_prefix).run()
        result.wait_until_finish()
    except Exception as exc:
        reason = stop_reason(exc)
        error(reason[0] if reason else f'the replay failed: {type(exc).__name__}: {_one_line(exc)}')
        return reason[1] if reason else EXIT_FAILED
    summary = Summary.from_result(result)
    print(summary.table(), file=out)
    not_replayed = {k.split(counts.SEP, 1)[1]: v for k, v in summary.values.items()
                    if k.startswith('not_replayed' + counts.SEP)}
    if not_replayed:
        print(f'not replayed (reason not selected): {not_replayed}', file=out)
    print(f'rejected again: {out_prefix}-*.jsonl', file=out)
    return finish(summary, settings.summary_output)
