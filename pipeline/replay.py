"""`currents-to-segment replay`: re-send rejected events once the cause is fixed (CONTRACT §5).

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
from typing import Dict, FrozenSet, List, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.builder import deliver_step, is_dataflow, job_options
from pipeline.cli import (EXIT_OK, USAGE_ERRORS, check_sending_setup, finish, run_failed,
                          usage_error)
from pipeline.local_runner import local_runner_options
from pipeline.stores import prepare_stores
from pipeline.options import check_argv, settings_from
from pipeline.paths import UsageError, is_glob
from pipeline.summary import Summary
from transforms import counts
from transforms.credentials import BareWorkerFilesystemsFn
from transforms.deliver import EVENTS, MESSAGES
from transforms.events import BY_CURRENTS_TYPE
from transforms.mapping import serialize
from transforms.model import (INVALID_RECORD, REASONS, UNREADABLE_FILE, CurrentsEvent,
                              Reject, SegmentMessage)
from transforms.profiles import CURRENT_EVENTS
from pipeline.resume import input_identity
from pipeline.runners import settle_paths
from transforms.read import REJECTS, ReadCurrentsFileFn

RECORDS, FILES = 'records', 'files'
NOT_REPLAYED = 'not_replayed'
_MESSAGE_KEYS = frozenset({'type', 'event', 'userId', 'anonymousId', 'messageId', 'timestamp',
                           'properties', 'context', 'integrations'})


def _strings(value, keys=None) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) and (keys is None or k in keys)
        for k, v in value.items())


class _Shape(NamedTuple):
    """What a message of one type looks like under one mapping profile."""
    names: Optional[FrozenSet[str]]      # None: any non-blank name (custom events)
    context: Dict[str, FrozenSet[str]]   # context object -> keys this profile may set
    string_properties: bool              # classic: every property a string


def _shapes(event_type: str) -> List[_Shape]:
    """The shapes this tool's mappers give a Currents type (classic, current)."""
    shapes = []
    spec = BY_CURRENTS_TYPE.get(event_type)
    if spec is not None:
        shapes.append(_Shape(frozenset({spec.segment_event}),
                             {'traits': frozenset({'email'} if spec.is_email else ())}, True))
    for current in CURRENT_EVENTS:
        if current.currents_type == event_type:
            context: Dict[str, set] = {}
            for path, _ in current.context:
                _, obj, key = path.split('.', 2)
                context.setdefault(obj, set()).add(key)
            names = None if current.segment_event is None else frozenset({current.segment_event})
            shapes.append(_Shape(names, {k: frozenset(v) for k, v in context.items()}, False))
    return shapes


def _fits(message: dict, shape: _Shape) -> bool:
    event = message.get('event')
    if not isinstance(event, str) or not (event in shape.names if shape.names is not None
                                          else event.strip()):
        return False
    context = message.get('context', {})
    if not isinstance(context, dict) or set(context) - {'library'} - set(shape.context):
        return False
    if not all(_strings(context[obj], keys) for obj, keys in shape.context.items()
               if obj in context):
        return False
    properties = message.get('properties', {})
    if shape.string_properties:
        return _strings(properties)
    return isinstance(properties, dict)


def untrusted_message(message, event_type: str) -> Optional[str]:
    """Why a reject's `message` is not one this tool's mappers make, or None if it is.

    Classic messages carry string properties and at most `context.traits.email`; `current` ones
    keep Avro types and carry the context paths their type's table names.
    """
    shapes = _shapes(event_type)
    if not isinstance(message, dict) or not shapes:
        return 'not a message of a known event type'
    if message.get('type') != 'track':
        return 'not a track message of its event type'
    if set(message) - _MESSAGE_KEYS:
        return 'fields this tool never sends'
    if not isinstance(message.get('messageId'), str) or not 0 < len(message['messageId']) <= 100:
        return 'no valid messageId'
    if not any(isinstance(message.get(k), str) and message[k].strip()
               for k in ('userId', 'anonymousId')):
        return 'no userId or anonymousId'
    if not isinstance(message.get('context', {}).get('library', {})
                      if isinstance(message.get('context', {}), dict) else None, dict):
        return 'context this tool never sends'
    if not any(_fits(message, shape) for shape in shapes):
        names = {n for shape in shapes for n in (shape.names or ())}
        if not isinstance(message.get('event'), str) or (names and message['event'] not in names
                                                         and all(s.names for s in shapes)):
            return 'not a track message of its event type'
        return 'context or properties this tool never sends'
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
        elif row.get('record') is not None and event_type:
            # Mapped again as the run that rejected it mapped it (older rejects: this run's).
            mapping = (row['mapping'], bool(row.get('include_anonymous'))) \
                if row.get('mapping') else None
            yield beam.pvalue.TaggedOutput(RECORDS, CurrentsEvent(event_type, source,
                                                                  row['record'], mapping))
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
    """Rejects → parsed → delivered through the same step as a run (DeliverToSegment)."""
    p = beam.Pipeline(options=options)
    # Beam's file reads list the pattern on a worker: a step of ours comes first, so a worker
    # started without the job's options has filesystems to list with (transforms/credentials.py)
    parsed = (p | 'RejectsPattern' >> beam.Create([pattern])
              | 'StoreDefaults' >> beam.ParDo(BareWorkerFilesystemsFn())
              | 'ReadRejects' >> beam.io.ReadAllFromText()
              | 'Parse' >> beam.ParDo(ParseRejectFn(reasons, input_override)).with_outputs(
                  RECORDS, FILES, REJECTS, main=MESSAGES))
    reread = (parsed[FILES]
              | 'SpreadFiles' >> beam.Reshuffle()
              | 'ReReadFiles' >> beam.ParDo(ReadCurrentsFileFn(
                  settings.selector.event_types, credentials=settings.store_credentials))
              .with_outputs(REJECTS, main='events'))
    events = (parsed[RECORDS], reread.events) | 'AllRecords' >> beam.Flatten()
    rejects = (parsed[REJECTS], reread[REJECTS]) | 'ParseRejects' >> beam.Flatten()
    _ = ({EVENTS: events, MESSAGES: parsed[MESSAGES], 'rejects': rejects}
         | 'Deliver' >> deliver_step(settings, options, out_prefix))
    return p


def _add_replay_args(parser) -> None:
    parser.add_argument('--reasons', help='Comma-separated reasons to replay (default: all): '
                        + ', '.join(REASONS))


def print_replay_help(out) -> None:
    from pipeline.options import CurrentsToSegmentOptions
    parser = argparse.ArgumentParser(
        prog='currents-to-segment replay',
        description='Re-send the rejects of earlier runs once the cause is fixed: mapped '
                    'messages are sent unchanged (same messageId), kept records are mapped '
                    'again, unreadable files are read again. What is rejected again goes to '
                    '<rejects>/replay-<run id>/.',
        epilog='--rejects names the folder (or a rejects-*.jsonl glob) to replay; --input, if '
               'given, re-reads unreadable files only under it (default: the input each reject '
               'records). The write key, endpoint, throttle and Beam options work as for a run. '
               'Exit status as for a run (0, 4, 1, 2, 3).')
    _add_replay_args(parser)
    CurrentsToSegmentOptions._add_argparse_args(parser)
    parser.print_help(out)


def run_replay(argv: List[str], out=None) -> int:
    out = out or sys.stdout
    if '-h' in argv or '--help' in argv:
        print_replay_help(out)
        return EXIT_OK
    parser = argparse.ArgumentParser(prog='currents-to-segment replay', add_help=False)
    _add_replay_args(parser)
    parser.add_argument('--input')   # re-read unreadable files only under it (see --help)
    known, rest = parser.parse_known_args(argv)
    try:
        check_argv(argv, extra=_add_replay_args)
        options = PipelineOptions(rest)
        # --rejects names the rejects to replay; --input is not used (files come from rejects).
        settings = settings_from(PipelineOptions(rest + ['--input', '-']))
        local_runner_options(options)
        settle_paths(settings, options)   # remote workers read and write under --rejects
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
    except USAGE_ERRORS as exc:
        return usage_error(exc)
    folder = settings.rejects if not (is_glob(settings.rejects) or
                                      settings.rejects.endswith('.jsonl')) else \
        settings.rejects.rsplit('/', 1)[0]
    out_prefix = FileSystems.join(folder, f'replay-{settings.run_id}', 'rejects')
    try:
        result = build_replay(settings, pattern, reasons, job_options(settings, options),
                              out_prefix,
                              input_identity(known.input) if known.input else None).run()
        result.wait_until_finish()
    except Exception as exc:   # the runner re-raises worker errors: one line
        return run_failed(exc, 'replay')
    summary = Summary.from_result(result, settings.mapping)
    print(summary.table(), file=out)
    not_replayed = {k.split(counts.SEP, 1)[1]: v for k, v in summary.values.items()
                    if k.startswith(NOT_REPLAYED + counts.SEP)}
    if not_replayed:
        print(f'not replayed: {not_replayed}', file=out)
    print(f'rejected again: {out_prefix}-*.jsonl', file=out)
    return finish(summary, settings.summary_output, FileSystems.join(folder, f'replay-{settings.run_id}'))
