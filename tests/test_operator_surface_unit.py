"""The operator surface's pure parts: replay's options and decisions, the exit-4 hint, the
--message_id_prefix limit, the help's groups and defaults (end to end: test_operator_surface)."""
import argparse
import io
import json
import re
import shlex
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.cli import PROG, exit_decision, replay_command, replay_options
from pipeline.main import print_help
from pipeline.options import (GROUPS, OPTIONS, REPLAY_OPTIONS, CurrentsToSegmentOptions,
                              check_argv, check_message_id_prefix, settings_from)
from pipeline.paths import UsageError
from pipeline.replay import (ParseRejectFn, line_key, print_replay_help, refuse_run_options,
                             replay_decision)
from pipeline.summary import Summary
from transforms import counts
from transforms.model import SegmentMessage
from transforms.profiles import currents_types

README = Path(__file__).resolve().parent.parent / 'README.md'
SECRET = 'projects/p/secrets/s/versions/1'


def _settings(*argv):
    return settings_from(PipelineOptions(['--input', 'in', '--rejects', 'r', *argv]))


# ------------------------------------------------------------------ 7: the prefix limit
def test_message_id_prefix_limit_is_100_minus_a_uuid():
    check_message_id_prefix('p' * 64)          # 64 + 36 = 100: fits exactly
    with pytest.raises(UsageError) as refused:
        check_message_id_prefix('p' * 65)
    assert str(refused.value) == (
        "--message_id_prefix has 65 characters; with a 36-character Currents id (a UUID) the "
        "messageId would pass Segment's 100: use at most 64")
    assert _settings('--message_id_prefix', 'p' * 64).message_id_prefix == 'p' * 64
    with pytest.raises(UsageError, match='use at most 64'):
        _settings('--message_id_prefix', 'p' * 65)


# ------------------------------------------------------------------ 6: the exit-4 hint
def test_replay_options_repeat_where_and_how_never_the_key(monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', 'wk_never-in-a-hint')
    assert replay_options(_settings()) == ()
    eu = _settings('--segment_region', 'eu', '--message_id_prefix', "it's 1-",
                   '--mapping', 'current', '--include_anonymous', '--integrations',
                   '{"All": false, "Warehouses": true}', '--max_events_per_second', '250',
                   '--segment_gzip', '--segment_sent_at', '--use_env_proxy',
                   '--segment_write_key_secret', SECRET, '--max_retry_seconds', '5')
    assert replay_options(eu) == (
        '--segment_region', 'eu', '--segment_write_key_secret', SECRET,
        '--message_id_prefix', "it's 1-", '--mapping', 'current', '--include_anonymous',
        '--integrations', '{"All":false,"Warehouses":true}', '--max_events_per_second', '250',
        '--segment_gzip', '--segment_sent_at', '--use_env_proxy')
    endpoint = _settings('--segment_endpoint', 'http://127.0.0.1:9/v1/batch')
    assert replay_options(endpoint) == ('--segment_endpoint', 'http://127.0.0.1:9/v1/batch')
    line = exit_decision({'read': 2, 'sent': 0, 'rejected': 2, 'dropped_no_external_user_id': 0,
                          'rejected_by_reason': {'retries_exhausted': 2}}, True, '/r x',
                         options=replay_options(eu))[1]
    command = line.split('re-send them with: ', 1)[1]
    assert shlex.split(command) == [PROG, 'replay', '--rejects', '/r x', '--reasons',
                                    'retries_exhausted', *replay_options(eu)]
    assert 'wk_never-in-a-hint' not in line
    assert replay_command('r', {'b', 'a'}) == f'{PROG} replay --rejects r --reasons a,b'


# ------------------------------------------------------------------ 1: replay's option set
def test_replay_takes_only_its_options():
    run_only = {flag for _, flag, _ in OPTIONS} - REPLAY_OPTIONS
    assert {'--plan', '--start', '--end', '--event_types', '--resume', '--follow',
            '--since_last_run', '--wave_hours', '--wave_mb', '--wait', '--skip_files',
            '--poll_seconds', '--progress_seconds', '--fresh_worker_processes',
            '--lookback_hours'} == run_only
    for flag in sorted(run_only):
        with pytest.raises(UsageError) as refused:
            refuse_run_options(['--rejects', 'r', f'{flag}=1'])
        assert str(refused.value) == (f'replay does not take {flag} (an option of a run); '
                                      f'see {PROG} replay --help')
    refuse_run_options(['--rejects', 'r', '--segment_endpoint', 'x', '--runner', 'FnApiRunner'])
    out = io.StringIO()
    print_replay_help(out)
    flags = set(re.findall(r'(?m)^  (--[a-z_]+)', out.getvalue()))
    assert flags == REPLAY_OPTIONS | {'--reasons'}
    assert '(default: 30)' in out.getvalue()    # --segment_timeout


def _parse(line, reasons=('retries_exhausted', 'message_id_too_long', 'unreadable_file'),
           profile=('classic', False)):
    return list(ParseRejectFn(reasons, None, profile).process(line))


def _tagged(outputs, tag):
    return [o.value for o in outputs if getattr(o, 'tag', None) == tag]


# ------------------------------------------------------------------ 2 and 8: parsing rejects
def test_records_of_every_current_type_replay_with_their_recorded_profile():
    for event_type in currents_types('current'):
        line = json.dumps({'reason': 'message_id_too_long', 'event_type': event_type,
                           'source': 's', 'detail': '', 'record': {'id': 'x'},
                           'mapping': 'current', 'include_anonymous': True})
        outputs = _parse(line)
        [event] = _tagged(outputs, 'records')
        assert event.event_type == event_type and event.mapping == ('current', True)
        assert _tagged(outputs, 'handled') == [line_key(line)]


def test_a_record_without_profile_outside_the_default_is_not_replayed_nor_handled():
    line = json.dumps({'reason': 'message_id_too_long', 'event_type': 'users.messages.line.Send',
                       'source': 's', 'detail': '', 'record': {'id': 'x'}})
    assert _parse(line) == []          # counted as not replayed (classic maps no LINE type)
    [event] = _tagged(_parse(line, profile=('current', False)), 'records')
    assert event.mapping == ('current', False)


def test_a_message_of_a_current_only_type_is_sent_as_it_is():
    message = {'type': 'track', 'event': 'Sent', 'userId': 'u', 'messageId': 'm-1',
               'timestamp': '2024-05-01T12:00:00.000Z', 'properties': {},
               'context': {'library': {'name': 'currents-to-segment', 'version': '1'}}}
    outputs = _parse(json.dumps({'reason': 'retries_exhausted', 'source': 's', 'detail': '',
                                 'event_type': 'users.messages.line.Send', 'message': message}))
    assert [o for o in outputs if isinstance(o, SegmentMessage)][0].message_id == 'm-1'


def test_file_rejects_carry_their_input_and_profile_to_the_re_read():
    line = json.dumps({'reason': 'unreadable_file', 'event_type': None, 'source': '/in/a.avro',
                       'detail': '', 'input': '/in', 'mapping': 'current',
                       'include_anonymous': False})
    [element] = _tagged(_parse(line), 'files')
    assert element == ('/in/a.avro', None, ('current', False), '/in')


def test_reasons_left_out_are_not_selected_not_refused():
    line = json.dumps({'reason': 'segment_rejected', 'event_type': currents_types('classic')[0],
                       'source': 's', 'detail': '', 'message': {}})
    assert _parse(line) == []


def test_replay_decision_exits_4_with_what_was_not_replayed_last():
    d = {'read': 3, 'sent': 3, 'rejected': 0, 'dropped_no_external_user_id': 0,
         'rejected_by_reason': {}, 'not_replayed': {'unknown event type': 2, 'x': 1}}
    assert replay_decision(d, True, 'again') == (4, [
        '3 rejects were not replayed (unknown event type 2; x 1): they stay where they are; '
        'see docs/resume.md, "Replay rejects"'])
    d['not_replayed'] = {}
    assert replay_decision(d, True, 'again') == (0, [])
    d.update(rejected=1, sent=2, rejected_by_reason={'segment_rejected': 1},
             not_replayed={'x': 1})
    code, lines = replay_decision(d, True, 'again', ('--segment_region', 'eu'))
    assert code == 4 and lines[0].endswith(
        f'{PROG} replay --rejects again --reasons segment_rejected --segment_region eu')
    assert lines[1].startswith('1 rejects were not replayed (x 1)')
    assert replay_decision(d, False, 'again')[0] == 1


def test_replay_summary_says_what_it_left():
    values = {f'{counts.READ}{counts.SEP}users.messages.email.Send': 1,
              f'{counts.SENT}{counts.SEP}users.messages.email.Send': 1,
              f'not_replayed{counts.SEP}unknown event type': 2,
              f'not_selected{counts.SEP}invalid_record': 3, 'already_replayed': 4}
    d = Summary(values, replay=True).as_dict()
    assert d['not_replayed'] == {'unknown event type': 2}
    assert d['not_selected'] == {'invalid_record': 3} and d['already_replayed'] == 4
    table = Summary(values, replay=True).table()
    assert 'not replayed: unknown event type 2' in table
    assert 'not selected by --reasons: invalid_record 3' in table
    assert 'replayed already (skipped): 4 rejects' in table
    assert 'not_replayed' not in Summary(values).as_dict()    # a run's summary: unchanged


# ------------------------------------------------------------------ 11: smaller things
def test_text_summary_gives_the_skip_reasons():
    values = {f'{counts.FILES_SKIPPED}{counts.SEP}skip_type': 2,
              f'{counts.FILES_SKIPPED}{counts.SEP}skip_not_avro': 1, counts.FILES_READ: 4}
    assert 'files: 4 read, 3 skipped (not_avro_name 1, other_event_type 2), 0 unreadable' in \
        Summary(values).table()
    assert 'files: 0 read, 0 skipped, 0 unreadable' in Summary({}).table()


def test_misspelt_event_type_gets_the_closest_name():
    with pytest.raises(UsageError, match=r"did you mean 'Email Link Clicked'\?$"):
        _settings('--event_types', 'Email Link Clickd')
    with pytest.raises(UsageError, match=r"did you mean 'users.messages.whatsapp.Send'\?$"):
        _settings('--mapping', 'current', '--event_types', 'users.messages.whatsap.Send')
    with pytest.raises(UsageError) as refused:
        _settings('--event_types', 'Quantum Teleported')
    assert 'did you mean' not in str(refused.value)


# One valid value per option that takes one (flags take none).
VALUES = {'--input': 'gs://b/x', '--start': '2024-01-01', '--end': '2024-02-01',
          '--event_types': 'Email Sent', '--skip_files': 'a.avro', '--mapping': 'current',
          '--message_id_prefix': 'dev-', '--integrations': '{"All": false}',
          '--segment_region': 'eu', '--segment_endpoint': 'https://example.com/v1/batch',
          '--segment_write_key_secret': SECRET, '--segment_timeout': '12.5',
          '--max_retry_seconds': '30', '--max_events_per_second': '900',
          '--max_in_flight': '8', '--wave_hours': '6', '--wave_mb': '64',
          '--lookback_hours': '6', '--poll_seconds': '5', '--aws_credentials_secret': SECRET,
          '--azure_connection_string_secret': SECRET, '--rejects': 'gs://b/r',
          '--summary_output': 'gs://b/s.json', '--dry_run_output': 'gs://b/d',
          '--progress_seconds': '0', '--report': 'gs://b/r.html'}


def test_every_option_parses_the_same_through_beam_and_the_grouped_help():
    """Beam parses with the same _add_argparse_args: groups must change no value."""
    parser = argparse.ArgumentParser(add_help=False)
    CurrentsToSegmentOptions._add_argparse_args(parser)
    for group, flag, keywords in OPTIONS:
        argv = [flag] if keywords.get('action') == 'store_true' else [flag, VALUES[flag]]
        check_argv(argv)
        got = getattr(PipelineOptions(argv).view_as(CurrentsToSegmentOptions), flag[2:])
        expected = True if len(argv) == 1 else keywords.get('type', str)(VALUES[flag])
        assert got == expected, flag
        assert vars(parser.parse_args(argv))[flag[2:]] == expected
    assert {a.dest for a in parser._actions} == {flag[2:] for _, flag, _ in OPTIONS}


def test_help_is_grouped_in_readme_order_with_defaults_and_choices():
    out = io.StringIO()
    print_help(out)
    text = out.getvalue()
    headings = re.findall(r'(?m)^([A-Za-z][A-Za-z ]+):\n  ', text)
    assert headings == ['options'] + list(GROUPS)
    for flag, default in (('--segment_timeout', '30'), ('--max_retry_seconds', '600'),
                          ('--max_in_flight', '4'), ('--max_events_per_second', '0'),
                          ('--poll_seconds', '60'), ('--progress_seconds', '10'),
                          ('--mapping', 'classic'), ('--segment_region', 'us')):
        entry = text.split(f'\n  {flag}', 1)[1].split('\n  --', 1)[0]
        assert f'(default: {default})' in ' '.join(entry.split()), flag
    assert '--mapping {classic,current}' in text


def test_readme_options_table_follows_the_help():
    text = README.read_text()
    table = text.split('| Option | Meaning |', 1)[1].split('\n\n', 1)[0]
    rows = [line for line in table.splitlines()[2:]]
    order, groups = [], []
    for row in rows:
        first = row.split('|')[1].strip()
        if first.startswith('**'):
            groups.append(first.strip('*'))
        else:
            order += re.findall(r'`(--[a-z_]+)', first)
    assert [g.lower() for g in groups] == [g.lower() for g in GROUPS]
    assert order == [flag for _, flag, _ in OPTIONS]
