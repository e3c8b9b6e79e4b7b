"""`currents-to-segment replay`: re-send rejected events once the cause is fixed (SPEC §5).

Rejects that kept the mapped `message` are sent as they are (same messageId, so nothing is
double-counted); rejects that kept the original `record` are mapped again; `unreadable_file`
rejects re-read their file. Whatever is rejected again lands in a new rejects folder.

Replay accepts only what a run of this tool wrote (README, "Replay"): `track` messages of the
known events in the shape the mapper makes them, records of the known event types (mapped
again), and files under the input the original run recorded in the reject (or `--input`).
Anything else is counted as not replayed, with a reason, and never sent or read.
"""
import argparse
import json
import os
import sys
from typing import List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import pipeline
from pipeline.builder import send_step
from pipeline.options import check_argv, settings_from
from pipeline.summary import Summary
from transforms import counts
from transforms.batch import BatchMessages
from transforms.map import MapToSegment
from transforms.events import BY_CURRENTS_TYPE
from transforms.mapping import serialize
from transforms.model import (INVALID_RECORD, REASONS, UNREADABLE_FILE, CurrentsEvent,
                              Reject, SegmentMessage)
from pipeline.paths import UsageError, is_glob
from pipeline.resume import input_identity
from transforms.read import REJECTS, ReadCurrentsFileFn
from transforms.rejects import WriteRejects
from transforms.send import SendToSegment
from transforms.write_key import WriteKeyMissing

MESSAGES, RECORDS, FILES = 'messages', 'records', 'files'
NOT_REPLAYED = 'not_replayed'
_MESSAGE_KEYS = frozenset({'type', 'event', 'userId', 'anonymousId', 'messageId', 'timestamp',
                           'properties', 'context', 'integrations'})


def _strings(value, keys=None) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) and (keys is None or k in keys)
        for k, v in value.items())


def untrusted_message(message, event_type: str) -> Optional[str]:
    """Why a reject's `message` is not one this tool's mapper makes, or None if it is."""
    spec = BY_CURRENTS_TYPE.get(event_type)
    if not isinstance(message, dict) or spec is None:
        return 'not a message of a known event type'
    if message.get('type') != 'track' or message.get('event') != spec.segment_event:
        return 'not a track message of its event type'
    if set(message) - _MESSAGE_KEYS:
        return 'fields this tool never sends'
    if not isinstance(message.get('messageId'), str) or not 0 < len(message['messageId']) <= 100:
        return 'no valid messageId'
    if not isinstance(message.get('userId'), str) or not message['userId'].strip():
        return 'no userId'
    context = message.get('context', {})
    if not isinstance(context, dict) or set(context) - {'traits', 'library'} or \
            not _strings(context.get('traits', {}), {'email'}) or \
            not isinstance(context.get('library', {}), dict):
        return 'context this tool never sends'
    if not _strings(message.get('properties', {})):
        return 'properties this tool never sends'
    return None


def _glob_free_prefix(path: str) -> str:
    if not is_glob(path):
        return path
    cut = min(i for i in (path.find(c) for c in '*?[') if i >= 0)
    return path[:path.rfind('/', 0, cut) + 1]


def source_under(source, input_prefix: str) -> bool:
    """Whether `source` is a file under the run's input (no '..', no other folder or bucket)."""
    if not isinstance(source, str) or not source or '\\' in source or '\x00' in source:
        return False
    base = _glob_free_prefix(input_prefix)
    if '://' in base or '://' in source:
        scheme_end = source.find('://') + 3
        if scheme_end < 3 or any(part in ('.', '..') for part in source[scheme_end:].split('/')):
            return False
        base = base.rstrip('/')
        return source == base or source.startswith(base + '/')
    real, real_base = os.path.realpath(source), os.path.realpath(base)
    return real == real_base or real.startswith(real_base.rstrip(os.sep) + os.sep)


class ParseRejectFn(beam.DoFn):
    """One rejects line → a message to resend, a record to re-map, or a file to re-read."""

    def __init__(self, reasons, input_override: Optional[str] = None):
        self.reasons = frozenset(reasons)
        self.input_override = input_override

    @staticmethod
    def _not_replayed(why: str):
        counts.counter(NOT_REPLAYED, why).inc()

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
            self._not_replayed(f'{reason} (reason not selected)' if isinstance(reason, str)
                               else 'no reason')
            return
        if event_type not in BY_CURRENTS_TYPE and not (reason == UNREADABLE_FILE
                                                       and event_type is None):
            self._not_replayed('unknown event type')
            return
        source = row.get('source') or ''
        if reason == UNREADABLE_FILE:
            prefix = self.input_override or row.get('input')
            if not isinstance(prefix, str) or not prefix:
                self._not_replayed('file reject without the input it was read from')
            elif not source_under(source, prefix):
                self._not_replayed('file outside the input it was read from')
            else:
                yield beam.pvalue.TaggedOutput(FILES, (source, event_type))
            return
        message, record = row.get('message'), row.get('record')
        if message is not None:
            why = untrusted_message(message, event_type)
            if why:
                self._not_replayed(f'message: {why}')
                return
        elif record is not None and not isinstance(record, dict):
            self._not_replayed('record is not an object')
            return
        counts.counter(counts.READ, event_type or '').inc()
        if message is not None:
            yield SegmentMessage(event_type or '', str(message.get('messageId', '')),
                                 serialize(message), source)
        elif record is not None and event_type:
            yield beam.pvalue.TaggedOutput(RECORDS, CurrentsEvent(event_type, source, row['record']))
        else:
            yield beam.pvalue.TaggedOutput(REJECTS, Reject(
                INVALID_RECORD, event_type, source, 'reject has neither message nor record',
                record=row))


def rejects_pattern(path: str) -> str:
    if is_glob(path) or path.endswith('.jsonl'):
        return path
    return FileSystems.join(path.rstrip('/'), 'rejects-*.jsonl')


def build_replay(settings, pattern: str, reasons, options: PipelineOptions, out_prefix: str,
                 input_override: Optional[str] = None):
    sender = send_step(settings, options)  # may add experiments: before Pipeline copies options
    p = beam.Pipeline(options=options)
    parsed = (p | 'ReadRejects' >> beam.io.ReadFromText(pattern)
              | 'Parse' >> beam.ParDo(ParseRejectFn(reasons, input_override)).with_outputs(
                  RECORDS, FILES, REJECTS, main=MESSAGES))
    reread = (parsed[FILES]
              | 'SpreadFiles' >> beam.Reshuffle()
              | 'ReReadFiles' >> beam.ParDo(ReadCurrentsFileFn(settings.selector.event_types))
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
    parser.add_argument('--input', help='only re-read unreadable files under this input')
    known, rest = parser.parse_known_args(argv)
    try:
        check_argv(rest)
        options = PipelineOptions(rest)
        # --rejects names the rejects to replay; --input is not used (files come from rejects).
        settings = settings_from(PipelineOptions(rest + ['--input', '-']))
        local_runner_options(options)
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
        result = build_replay(settings, pattern, reasons, options, out_prefix,
                              input_identity(known.input) if known.input else None).run()
        result.wait_until_finish()
    except Exception as exc:
        reason = stop_reason(exc)
        error(reason[0] if reason else f'the replay failed: {type(exc).__name__}: {_one_line(exc)}')
        return reason[1] if reason else EXIT_FAILED
    summary = Summary.from_result(result)
    print(summary.table(), file=out)
    not_replayed = {k.split(counts.SEP, 1)[1]: v for k, v in summary.values.items()
                    if k.startswith(NOT_REPLAYED + counts.SEP)}
    if not_replayed:
        print(f'not replayed: {not_replayed}', file=out)
    print(f'rejected again: {out_prefix}-*.jsonl', file=out)
    return finish(summary, settings.summary_output)
