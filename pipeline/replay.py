"""`currents-to-segment replay`: re-send rejected events once the cause is fixed (CONTRACT §5).

Rejects that kept the mapped `message` are sent as they are (same messageId, so nothing is
double-counted); rejects that kept the original `record` are mapped again with the profile the
reject records; `unreadable_file` rejects re-read their file. Whatever is rejected again lands
in a new rejects folder, each line as replayable as the first (same input, same profile).

Replay accepts only what a run of this tool wrote (docs/resume.md, "Replay rejects"): `track` messages of the
known events in the shape the mapper makes them, records of the types of their profile (mapped
again), and files under the input the original run recorded in the reject (or `--input`).
Anything else is counted as not replayed, with a reason, and never sent or read; the command
then exits 4.

Replay keeps a record of the reject lines it handled (sent, dropped or rejected again into its
own folder) under `<rejects>/replayed/`, committed once its pipeline has finished, so replaying
the same rejects again sends nothing.
"""
import argparse
import hashlib
import json
import logging
import os
import sys
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import pipeline
from pipeline.builder import is_dataflow, job_options, send_step
from pipeline.cli import (EXIT_DELIVERY_REJECTS, EXIT_FAILED, EXIT_OK, PROG, USAGE_ERRORS,
                          answer,
                          check_rejects_writable, check_report_output, check_sending_setup,
                          check_summary_writable, current_console, exit_decision, honour_no_auth,
                          one_line, replay_options, run_failed, usage_error, write_report_file,
                          write_summary)
from pipeline.local_runner import local_runner_options
from pipeline.stores import prepare_stores
from pipeline.options import (OPTIONS, REPLAY_OPTIONS, CurrentsToSegmentOptions,
                              DefaultsHelpFormatter, add_options, check_argv, settings_from)
from pipeline.paths import UsageError, is_glob
from pipeline.summary import ALREADY_REPLAYED, NOT_REPLAYED, NOT_SELECTED, Summary
from transforms import counts
from transforms.credentials import BareWorkerFilesystemsFn
from transforms.deliver import EVENTS, MESSAGES, DeliverToSegment
from transforms.events import BY_CURRENTS_TYPE
from transforms.mapping import serialize
from transforms.model import (INVALID_RECORD, REASONS, UNREADABLE_FILE, CurrentsEvent,
                              Reject, SegmentMessage)
from transforms.profiles import CURRENT_EVENTS, PROFILES, currents_types
from pipeline.resume import input_identity
from pipeline.runners import settle_paths
from transforms.read import REJECTS, ReadCurrentsFileFn

RECORDS, FILES, HANDLED = 'records', 'files', 'handled'
RECORD_FOLDER = 'replayed'
# Every type some profile maps: a reject of any of them can be replayed.
KNOWN_TYPES = frozenset(t for profile in PROFILES for t in currents_types(profile))
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


def line_key(line: str) -> str:
    """A reject line's identity in the record of what replays handled (80 bits of BLAKE2b:
    no two of even a billion lines collide in practice)."""
    return hashlib.blake2b(line.encode('utf-8', 'surrogatepass'), digest_size=10).hexdigest()


Profile = Tuple[str, bool]   # (mapping profile, include_anonymous)


class ParseRejectFn(beam.DoFn):
    """One rejects line → a message to resend, a record to re-map, or a file to re-read.

    Each line it turns into something to deliver (or into a reject of its own) is also output
    as HANDLED, its key, for the record of what this replay did. `default_profile` maps what
    records no profile (rejects of older versions).
    """

    def __init__(self, reasons, input_override: Optional[str] = None,
                 default_profile: Profile = ('classic', False)):
        self.reasons = frozenset(reasons)
        self.input_override = input_override
        self.default_profile = default_profile

    @staticmethod
    def _not_replayed(why: str):
        counts.counter(NOT_REPLAYED, why).inc()

    def _profile(self, row) -> Optional[Profile]:
        mapping = row.get('mapping')
        if mapping is None:
            return self.default_profile
        if mapping not in PROFILES:
            return None
        return mapping, bool(row.get('include_anonymous'))

    def process(self, line: str):
        handled = beam.pvalue.TaggedOutput(HANDLED, line_key(line))
        try:
            row = json.loads(line)
            reason, event_type = row['reason'], row.get('event_type')
        except (ValueError, KeyError, TypeError) as exc:
            counts.counter(counts.READ, '').inc()
            yield beam.pvalue.TaggedOutput(REJECTS, Reject(
                INVALID_RECORD, None, 'rejects file', f'unparseable rejects line: {exc}',
                record={'line': line[:10000]}))
            yield handled
            return
        if not isinstance(reason, str) or reason not in REASONS:
            self._not_replayed('unknown reason')
            return
        if reason not in self.reasons:
            counts.counter(NOT_SELECTED, reason).inc()
            return
        if event_type not in KNOWN_TYPES and not (reason == UNREADABLE_FILE
                                                  and event_type is None):
            self._not_replayed('unknown event type')
            return
        profile = self._profile(row)
        if profile is None:
            self._not_replayed('unknown mapping profile')
            return
        source = row.get('source') or ''
        if reason == UNREADABLE_FILE:
            prefix = self.input_override or row.get('input')
            if not isinstance(prefix, str) or not prefix:
                self._not_replayed('file reject without the input it was read from')
            elif not source_under(source, prefix):
                self._not_replayed('file outside the input it was read from')
            else:
                yield beam.pvalue.TaggedOutput(FILES, (source, event_type, profile, prefix))
                yield handled
            return
        message, record = row.get('message'), row.get('record')
        if message is not None:
            why = untrusted_message(message, event_type)
            if why:
                self._not_replayed(f'message: {why}')
                return
        elif record is not None:
            if not isinstance(record, dict):
                self._not_replayed('record is not an object')
                return
            if event_type not in currents_types(profile[0]):
                self._not_replayed(f'record of a type the {profile[0]} profile does not map '
                                   f'(give --mapping)')
                return
        counts.counter(counts.READ, event_type or '').inc()
        if message is not None:
            yield SegmentMessage(event_type or '', str(message.get('messageId', '')),
                                 serialize(message), source)
        elif record is not None:
            # Mapped again as the run that rejected it mapped it.
            yield beam.pvalue.TaggedOutput(RECORDS, CurrentsEvent(event_type, source, record,
                                                                  profile))
        else:
            yield beam.pvalue.TaggedOutput(REJECTS, Reject(
                INVALID_RECORD, event_type, source, 'reject has neither message nor record',
                record=row))
        yield handled


class ReReadFileFn(beam.DoFn):
    """Re-reads an `unreadable_file` reject's file as its run would have: with the types and
    the profile of that run's mapping. A file still unreadable is rejected again naming the
    same input and profile, so that reject replays as it is."""

    def __init__(self, credentials):
        self.readers = {profile: ReadCurrentsFileFn(frozenset(currents_types(profile)),
                                                    credentials=credentials)
                        for profile in PROFILES}

    def setup(self):
        for reader in self.readers.values():
            reader.setup()

    def process(self, element):
        source, event_type, profile, input_id = element
        for out in self.readers[profile[0]].process((source, event_type)):
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(out.tag, out.value._replace(
                    input=input_id, mapping=profile[0], include_anonymous=profile[1]))
            else:
                yield out._replace(mapping=profile)


def _fresh_lines(keyed):
    """Lines no earlier replay handled; the others are counted, not replayed again."""
    _, grouped = keyed
    lines = list(grouped['line'])
    if lines and any(True for _ in grouped['done']):
        counts.counter(ALREADY_REPLAYED).inc(len(lines))
        return []
    return lines


def _keyed_line(line: str):
    return line_key(line), line


def _done_key(text: str):
    return text.strip(), None


class SkipReplayed(beam.PTransform):
    """Reject lines minus those the record of earlier replays (`records_pattern`) names."""

    def __init__(self, records_pattern: str):
        super().__init__()
        self.records_pattern = records_pattern

    def expand(self, lines):
        keyed = lines | 'KeyLines' >> beam.Map(_keyed_line)
        done = (lines.pipeline | 'ReadRecord' >> beam.io.ReadFromText(self.records_pattern)
                | 'KeyRecord' >> beam.Map(_done_key))
        return ({'line': keyed, 'done': done} | 'Join' >> beam.CoGroupByKey()
                | 'NotYetReplayed' >> beam.FlatMap(_fresh_lines))


def rejects_pattern(path: str) -> str:
    if is_glob(path) or path.endswith('.jsonl'):
        return path
    return FileSystems.join(path.rstrip('/'), 'rejects-*.jsonl')


def rejects_folder(path: str) -> str:
    """The folder of --rejects (itself, or that of a rejects-*.jsonl glob or file)."""
    if is_glob(path) or path.endswith('.jsonl'):
        return path.rsplit('/', 1)[0] if '/' in path else '.'
    return path.rstrip('/')


class ReplayPaths(NamedTuple):
    """Where one replay reads and writes, all under the folder of --rejects."""
    pattern: str          # the rejects replayed
    again: str            # the folder of what is rejected again (replayable the same way)
    pending: str          # prefix of this replay's record, until it has finished
    record: str           # prefix of this replay's record, once committed
    records: str          # pattern of every committed record

    @classmethod
    def of(cls, rejects: str, run_id: str) -> 'ReplayPaths':
        folder = rejects_folder(rejects)
        kept = FileSystems.join(folder, RECORD_FOLDER)
        return cls(rejects_pattern(rejects), FileSystems.join(folder, f'replay-{run_id}'),
                   FileSystems.join(kept, f'pending-{run_id}'),
                   FileSystems.join(kept, f'replay-{run_id}'),
                   FileSystems.join(kept, 'replay-*.keys'))

    @property
    def rejects(self) -> str:
        """Prefix of the rejects files of what is rejected again."""
        return FileSystems.join(self.again, 'rejects')


def build_replay(settings, paths: ReplayPaths, reasons, options: PipelineOptions,
                 input_override: Optional[str] = None, skip_replayed: bool = False):
    """Rejects (minus those replayed already) → parsed → delivered through the same step as a
    run (DeliverToSegment); the keys of the lines handled → this replay's pending record."""
    p = beam.Pipeline(options=options)
    # Beam's file reads list the pattern on a worker: a step of ours comes first, so a worker
    # started without the job's options has filesystems to list with (transforms/credentials.py)
    lines = (p | 'RejectsPattern' >> beam.Create([paths.pattern])
             | 'StoreDefaults' >> beam.ParDo(BareWorkerFilesystemsFn())
             | 'ReadRejects' >> beam.io.ReadAllFromText())
    if skip_replayed:
        lines = lines | 'SkipReplayed' >> SkipReplayed(paths.records)
    parsed = lines | 'Parse' >> beam.ParDo(ParseRejectFn(
        reasons, input_override, (settings.mapping, settings.include_anonymous))).with_outputs(
            RECORDS, FILES, REJECTS, HANDLED, main=MESSAGES)
    reread = (parsed[FILES]
              | 'SpreadFiles' >> beam.Reshuffle()
              | 'ReReadFiles' >> beam.ParDo(ReReadFileFn(settings.store_credentials))
              .with_outputs(REJECTS, main='events'))
    events = (parsed[RECORDS], reread.events) | 'AllRecords' >> beam.Flatten()
    rejects = (parsed[REJECTS], reread[REJECTS]) | 'ParseRejects' >> beam.Flatten()
    _ = ({EVENTS: events, MESSAGES: parsed[MESSAGES], 'rejects': rejects}
         | 'Deliver' >> DeliverToSegment(
             send_step(settings, options), paths.rejects, settings.message_id_prefix,
             pipeline.__version__, settings.integrations, settings.mapping,
             settings.include_anonymous))
    _ = parsed[HANDLED] | 'RecordHandled' >> beam.io.WriteToText(
        paths.pending, file_name_suffix='.keys', skip_if_empty=True)
    return p


def commit_record(paths: ReplayPaths) -> None:
    """This replay's record counts from now on (its pipeline finished: rejects are durable)."""
    pending = [m.path for m in FileSystems.match([paths.pending + '*.keys'])[0].metadata_list]
    if pending:
        FileSystems.rename(pending, [paths.record + path[len(paths.pending):]
                                     for path in pending])


def drop_pending(paths: ReplayPaths) -> None:
    try:
        pending = [m.path for m in FileSystems.match([paths.pending + '*'])[0].metadata_list]
        if pending:
            FileSystems.delete(pending)
    except Exception:  # noqa: BLE001 - best effort: a pending record is never read
        pass


def _exists(pattern: str) -> bool:
    """Whether any file matches; a store that cannot be listed is one line (UsageError)."""
    try:
        return bool(FileSystems.match([pattern])[0].metadata_list)
    except Exception as exc:  # noqa: BLE001 - any store's error
        raise UsageError(f'cannot list {pattern}: {type(exc).__name__}: '
                         f'{one_line(exc, 200)}') from None


def _add_replay_args(parser) -> None:
    parser.add_argument('--reasons', help='Comma-separated reasons to replay (default: all): '
                        + ', '.join(REASONS))


_REPLAY_HELP = {
    '--rejects': 'The rejects to replay: a --rejects folder of a run (its rejects-*.jsonl), a '
                 'replay-<run id> folder in it, or a rejects-*.jsonl glob or file',
    '--input': 'Re-read unreadable files only under this prefix (default: the input each '
               'reject records)',
    '--summary_output': 'Write the replay summary as JSON to this file',
    '--dry_run_output': 'Write the request bodies to this folder; send nothing',
    '--mapping': 'Profile for rejects that record none (older versions): classic or current',
    '--include_anonymous': 'With --mapping, for rejects that record no profile: send events '
                           'without external_user_id with anonymousId only',
    '--message_id_prefix': 'Prefix for the messageId of records mapped again (messages keep '
                           'theirs)',
    '--integrations': 'JSON object put on records mapped again (messages keep theirs)',
}


def print_replay_help(out) -> None:
    parser = argparse.ArgumentParser(
        prog=f'{PROG} replay', formatter_class=DefaultsHelpFormatter,
        usage=f'{PROG} replay --rejects DIR [--reasons r1,r2] [options] [Beam options]',
        description='Re-send the rejects of earlier runs once the cause is fixed: mapped '
                    'messages are sent unchanged (same messageId), kept records are mapped '
                    'again with the profile they record, unreadable files are read again. '
                    'What is rejected again goes to <rejects>/replay-<run id>/; what was '
                    'handled is recorded in <rejects>/replayed/, so a second replay of the '
                    'same rejects sends nothing.',
        epilog='The write key comes from SEGMENT_WRITE_KEY or --segment_write_key_secret; '
               'Beam options (--runner, ...) pass through; options of a run (--plan, --start, '
               '--event_types, --resume, ...) are refused. Exit status: 0 done (or nothing to '
               'replay); 4 events rejected again for delivery, or rejects left not replayed; 1 '
               'failed; 2 bad arguments; 3 Segment refused the configuration.')
    _add_replay_args(parser)
    add_options(parser, only=REPLAY_OPTIONS, help_overrides=_REPLAY_HELP)
    parser.print_help(out)


def refuse_run_options(argv: List[str]) -> None:
    """Options of a run that replay does not use are refused, never ignored."""
    run_only = {flag for _, flag, _ in OPTIONS} - REPLAY_OPTIONS
    for arg in argv:
        name = arg.split('=', 1)[0]
        if name in run_only:
            raise UsageError(f'replay does not take {name} (an option of a run); see '
                             f'{PROG} replay --help')


def replay_decision(d: dict, balanced: bool, again: str,
                    options: Tuple[str, ...] = ()) -> Tuple[int, List[str]]:
    """The exit status of a replay and its last lines (pure): a run's decision about what was
    rejected again, then exit 4 with the reasons and counts if any reject was not replayed."""
    code, line = exit_decision(d, balanced, again, options=options)
    lines = [line] if line else []
    left = d.get(NOT_REPLAYED) or {}
    if code != EXIT_FAILED and left:
        total = sum(left.values())
        lines.append(f'{total:,} rejects were not replayed (' + '; '.join(
            f'{why} {n:,}' for why, n in sorted(left.items()))
            + '): they stay where they are; see docs/resume.md, "Replay rejects"')
        code = EXIT_DELIVERY_REJECTS
    return code, lines


def _parse_reasons(text: Optional[str]):
    if not text:
        return REASONS
    reasons = tuple(r.strip() for r in text.split(',') if r.strip())
    unknown = sorted(set(reasons) - set(REASONS))
    if unknown:
        raise UsageError(f'--reasons: unknown reason(s) {", ".join(unknown)}; '
                         f'known: {", ".join(REASONS)}')
    return reasons


def run_replay(argv: List[str], out=None) -> int:
    out = out or sys.stdout
    if '-h' in argv or '--help' in argv:
        print_replay_help(out)
        return EXIT_OK
    parser = argparse.ArgumentParser(prog=f'{PROG} replay', add_help=False, allow_abbrev=False)
    _add_replay_args(parser)
    known, rest = parser.parse_known_args(argv)
    try:
        refuse_run_options(argv)
        check_argv(argv, extra=_add_replay_args)
        options = PipelineOptions(rest)
        if not options.view_as(CurrentsToSegmentOptions).rejects:
            raise UsageError('--rejects is required (the rejects folder of a run, or a '
                             'rejects-*.jsonl glob)')
        settings = settings_from(options, need_input=False)
        reasons = _parse_reasons(known.reasons)
        local_runner_options(options)
        honour_no_auth(options)
        settle_paths(settings, options)   # remote workers read and write under --rejects
        prepare_stores(settings, options, is_dataflow(options))
        check_summary_writable(settings.summary_output)
        paths = ReplayPaths.of(settings.rejects, settings.run_id)
        folder = rejects_folder(settings.rejects)
        if '://' not in folder and not os.path.isdir(folder):
            raise UsageError(f'--rejects {settings.rejects}: no such folder')
        if not _exists(paths.pattern):
            print(f'nothing to replay: no rejects files match {paths.pattern}', file=out)
            return EXIT_OK if write_summary(Summary({}, settings.mapping, replay=True),
                                            settings.summary_output) else EXIT_FAILED
        check_sending_setup(settings, options)
        check_rejects_writable(folder)
        check_report_output(settings, options)
        replayed_before = _exists(paths.records)
    except USAGE_ERRORS as exc:
        return usage_error(exc)
    current_console().replay_options = replay_options(settings)
    try:
        result = build_replay(settings, paths, reasons, job_options(settings, options),
                              input_identity(settings.input) if settings.input else None,
                              replayed_before).run()
        result.wait_until_finish()
    except Exception as exc:   # the runner re-raises worker errors: one line
        drop_pending(paths)
        return run_failed(exc, 'replay')
    except KeyboardInterrupt:
        drop_pending(paths)
        raise
    try:
        commit_record(paths)
    except Exception as exc:  # noqa: BLE001 - what was sent stays sent: say so, go on
        logging.getLogger(__name__).error('recording the replay failed', exc_info=True)
        answer(EXIT_OK, f'could not record what this replay handled ({type(exc).__name__}): '
                        f'replaying the same rejects again would send them again (Segment '
                        f'de-duplicates them on messageId)')
    if '://' not in paths.again and os.path.isdir(paths.again) and not os.listdir(paths.again):
        os.rmdir(paths.again)   # nothing was rejected again: no empty folder to wonder about
    summary = Summary.from_result(result, settings.mapping, replay=True)
    print(summary.table(), file=out)
    d = summary.as_dict()
    if d[ALREADY_REPLAYED] and not d['read']:
        print(f'nothing to replay: all {d[ALREADY_REPLAYED]:,} rejects selected were '
              f'replayed already (record: {FileSystems.join(folder, RECORD_FOLDER)})', file=out)
    if any(d['rejected_by_reason'].values()):   # every reject, file or event, has a reason
        print(f'rejected again: {paths.rejects}-*.jsonl (replay {paths.again} the same way)',
              file=out)
    if not write_summary(summary, settings.summary_output):
        return EXIT_FAILED
    code, lines = replay_decision(d, summary.balanced, paths.again,
                                  current_console().replay_options)
    if settings.report and not write_report_file(summary, settings.report) and code == EXIT_OK:
        code = EXIT_FAILED
    for line in lines[:-1]:
        answer(EXIT_OK, line)
    return answer(code, lines[-1] if lines else None)
