"""Wave planning: whole date= hours in time order, cut by input volume (default) or by hours."""
import datetime
import io
import json

import pytest

from devtools.receiver import SegmentReceiver

from pipeline.listing import list_currents_files, partition_key
from pipeline.main import run
from pipeline.paths import FileSelector, UsageError
from pipeline.waves import (DEFAULT_WAVE_MB, MAX_WAVE_FILES, WaveSize, make_waves, partitions_of,
                            wave_lines, wave_size)
from transforms.events import EVENTS
from tests.helpers import LAYOUT, record, write_file

MIB = 1024 * 1024
SEND, OPEN = 'users.messages.email.Send', 'users.messages.email.Open'
START = datetime.datetime(2024, 5, 1)


def hour_name(h: int) -> str:
    return (START + datetime.timedelta(hours=h)).strftime('%Y-%m-%d-%H')


def listing(days: int, sizes=None, types=(SEND, OPEN)):
    """(path, event type, bytes) for `days` days of date= hours; sizes[type] bytes per file."""
    sizes = sizes or {t: 10 * MIB for t in types}
    return [(LAYOUT.format(t=t, d=hour_name(h), n=0), t, sizes[t])
            for h in range(24 * days) for t in types]


def hours_of(wave):
    return sorted({path.split('date=')[1].split('/')[0] for path, _, _ in wave})


def test_volume_waves_take_whole_hours_in_time_order_until_the_target():
    files = listing(3)                               # 72 hours x 2 files x 10 MiB = 20 MiB/hour
    waves = make_waves(list(reversed(files)), WaveSize(bytes=100 * MIB))
    assert [len(hours_of(w)) for w in waves] == [5] * 14 + [2]
    assert hours_of(waves[0]) == [hour_name(h) for h in range(5)]
    assert hours_of(waves[-1]) == [hour_name(70), hour_name(71)]
    assert [sum(s for _, _, s in w) for w in waves] == [100 * MIB] * 14 + [40 * MIB]
    # Every file once; a partition (event type x hour) never spans two waves.
    assert sorted(f for w in waves for f in w) == sorted(files)
    seen = [p for w in waves for p in partitions_of(w)]
    assert len(seen) == len(set(seen)) == 144


def test_a_wave_closes_at_exactly_the_target_not_one_byte_before():
    files = listing(1, sizes={SEND: 50 * MIB, OPEN: 50 * MIB})     # 100 MiB per hour
    assert [len(w) for w in make_waves(files, WaveSize(bytes=100 * MIB))] == [2] * 24
    assert [len(w) for w in make_waves(files, WaveSize(bytes=100 * MIB + 1))] == [4] * 12


def test_uneven_hours_a_wave_holds_at_least_the_target():
    sizes = [3, 90, 1, 1, 60, 45, 2, 200, 7]             # MiB of the one file of each hour
    files = [(LAYOUT.format(t=SEND, d=hour_name(h), n=0), SEND, mib * MIB)
             for h, mib in enumerate(sizes)]
    waves = make_waves(files, WaveSize(bytes=64 * MIB))
    assert [sum(s for _, _, s in w) // MIB for w in waves] == [93, 107, 202, 7]
    assert [len(w) for w in waves] == [2, 4, 2, 1]


def test_input_smaller_than_the_default_target_is_one_wave():
    default = wave_size(None, None, dataflow=False, wait=False)
    assert default == WaveSize(bytes=512 * MIB, files=25_000)
    assert DEFAULT_WAVE_MB == 512 and MAX_WAVE_FILES == 25_000
    # 30 days, 2 x 720 files: 536,652,000 bytes, under 512 MiB (536,870,912).
    files = listing(30, sizes={SEND: 363_350, OPEN: 382_000})
    assert sum(s for _, _, s in files) == 536_652_000
    assert make_waves(files, default) == [files]
    # Exactly the target is still one wave; one more byte in a later hour is a second wave.
    exact = [(LAYOUT.format(t=SEND, d=hour_name(h), n=0), SEND, MIB) for h in range(512)]
    assert make_waves(exact, default) == [exact]
    one_more = exact + [(LAYOUT.format(t=SEND, d=hour_name(512), n=0), SEND, 1)]
    assert make_waves(one_more, default) == [exact, one_more[-1:]]
    # At the target and beyond: a second wave only for the hours past it.
    bigger = listing(30, sizes={SEND: 400_000, OPEN: 400_000})      # 800,000 bytes per hour
    waves = make_waves(bigger, default)
    assert len(waves) == 2
    assert sum(s for _, _, s in waves[0]) == 672 * 800_000     # 537,600,000 >= 536,870,912
    assert len(hours_of(waves[0])) == 672 and len(hours_of(waves[1])) == 48


def test_a_wave_of_many_small_files_closes_at_the_file_cap():
    """Two months of a small workspace: 34 types x 1,440 hours of 1 KB files, far below 512 MiB."""
    types = [e.currents_type for e in EVENTS]
    files = listing(60, sizes={t: 1024 for t in types}, types=types)
    assert len(files) == 48_960
    waves = make_waves(files, wave_size(None, None, dataflow=False, wait=False))
    # 735 hours hold 24,990 files, one more hour 25,024: the wave closes there.
    assert [len(w) for w in waves] == [25_024, 23_936]
    assert [len(hours_of(w)) for w in waves] == [736, 704]
    assert make_waves(files, WaveSize(bytes=512 * MIB)) == [files]       # no cap: one wave
    month = listing(30, sizes={t: 1024 for t in types}, types=types)     # 24,480 files
    assert make_waves(month, wave_size(None, None, dataflow=False, wait=False)) == [month]


def test_explicit_wave_hours_cut_by_time_whatever_the_volume():
    files = listing(3, sizes={SEND: 1000, OPEN: 2000})
    by_day = make_waves(files, wave_size(24, None, dataflow=False, wait=False))
    assert [hours_of(w)[0] for w in by_day] == ['2024-05-01-00', '2024-05-02-00', '2024-05-03-00']
    assert [len(w) for w in by_day] == [48, 48, 48]
    assert len(make_waves(files, wave_size(1, None, False, False))) == 72
    assert make_waves(files, 24) == by_day                          # an int still means hours
    assert make_waves(files, wave_size(0, None, False, False)) == [files]
    assert make_waves(files, wave_size(None, 0, False, False)) == [files]
    assert make_waves([], wave_size(None, None, False, False)) == []


def test_files_without_a_date_hour_come_first():
    dated = listing(2, sizes={SEND: 30 * MIB, OPEN: 30 * MIB})
    loose = [('/data/export/loose-1.avro', SEND, 5 * MIB), ('/data/export/loose-2.avro', None, MIB)]
    waves = make_waves(dated + loose, WaveSize(bytes=100 * MIB))
    assert waves[0][:2] == loose and hours_of(waves[0][2:]) == [hour_name(0), hour_name(1)]
    by_hours = make_waves(dated + loose, WaveSize(hours=24))
    assert by_hours[0] == loose and len(by_hours) == 3


def test_wave_options_defaults_and_refusals():
    assert wave_size(None, None, dataflow=True, wait=False) == WaveSize()          # one job
    assert wave_size(None, None, dataflow=True, wait=True) == WaveSize()
    assert wave_size(168, None, dataflow=True, wait=True) == WaveSize(hours=168)
    assert wave_size(None, 1.5, dataflow=False, wait=False) == WaveSize(bytes=1_572_864,
                                                                        files=25_000)
    assert wave_size(None, 0, dataflow=False, wait=False) == WaveSize()
    with pytest.raises(UsageError, match='give one'):
        wave_size(24, 512, dataflow=False, wait=False)
    with pytest.raises(UsageError, match='need --wait'):
        wave_size(24, None, dataflow=True, wait=False)
    with pytest.raises(UsageError, match='need --wait'):
        wave_size(None, 100, dataflow=True, wait=False)


def test_plan_lines_name_each_wave_and_elide_the_middle():
    waves = make_waves(listing(3), WaveSize(bytes=100 * MIB))
    lines = wave_lines(waves, limit=4)
    assert lines[0] == ('  wave 1: 2024-05-01-00 .. 2024-05-01-04, 10 files, '
                        f'{100 * MIB:,} bytes')
    assert lines[2] == '  ... 11 more waves ...'
    assert lines[-1].startswith('  wave 15: 2024-05-03-22 .. 2024-05-03-23, 4 files')


def _tree(root, days):
    """A real Currents tree: one small Email Sent file per date= hour."""
    for h in range(24 * days):
        write_file(root, SEND, [record(h * 10 + i) for i in range(10)], date=hour_name(h), n=h)


def test_resume_skips_completed_partitions_then_cuts_the_rest_into_waves(tmp_path):
    _tree(tmp_path / 'in', 3)
    pattern = str(tmp_path / 'in') + '/**'
    everything = list_currents_files(pattern, FileSelector(frozenset({SEND}))).files
    per_file = everything[0][2]
    first_day = {partition_key(p) for p, _, _ in everything[:24]}
    listed = list_currents_files(pattern, FileSelector(frozenset({SEND})), frozenset(first_day))
    assert listed.skipped == {'skip_done': 24} and len(listed.files) == 48
    waves = make_waves(listed.files, WaveSize(bytes=12 * per_file))
    assert [len(w) for w in waves] == [12, 12, 12, 12]
    assert hours_of(waves[0])[0] == '2024-05-02-00'
    assert not first_day & {partition_key(p) for w in waves for p, _, _ in w}


def test_plan_shows_the_waves_a_run_would_make(tmp_path):
    _tree(tmp_path / 'in', 2)
    argv = ['--input', str(tmp_path / 'in'), '--rejects', str(tmp_path / 'r'), '--plan']
    out = io.StringIO()
    assert run(argv, out=out) == 0
    text = out.getvalue()
    assert '48 partitions' in text
    assert '1 wave(s) (whole date= hours until a wave holds >= 512 MiB or 25,000 files)' in text
    assert '  wave 1: 2024-05-01-00 .. 2024-05-02-23, 48 files' in text
    out = io.StringIO()
    assert run(argv + ['--wave_hours', '24'], out=out) == 0
    assert '2 wave(s) (24 date= hour(s) each)' in out.getvalue()
    assert '  wave 2: 2024-05-02-00 .. 2024-05-02-23, 24 files' in out.getvalue()


def test_bad_wave_options_are_one_line_usage_errors(tmp_path, capsys):
    _tree(tmp_path / 'in', 1)
    base = ['--input', str(tmp_path / 'in'), '--rejects', str(tmp_path / 'r'), '--plan']
    assert run(base + ['--wave_mb', '-1']) == 2
    assert capsys.readouterr().err.strip() == \
        'currents-to-segment: error: --wave_mb must be 0 (one wave) or positive'
    assert run(base + ['--wave_mb', '8', '--wave_hours', '24']) == 2
    assert 'give one' in capsys.readouterr().err


@pytest.mark.slow
def test_a_multi_day_run_is_one_wave_by_default_and_resumes_by_volume(tmp_path, monkeypatch):
    """Only sending runs record their waves (a dry run records nothing), so this one sends."""
    monkeypatch.setenv('SEGMENT_WRITE_KEY', 'wk_waves')
    receiver = SegmentReceiver(write_key='wk_waves').start()
    _tree(tmp_path / 'in', 3)
    rejects = tmp_path / 'rejects'
    base = ['--input', str(tmp_path / 'in'), '--rejects', str(rejects),
            '--segment_endpoint', receiver.url]
    out = io.StringIO()
    assert run(base + ['--summary_output', str(tmp_path / 's1.json')], out=out) == 0
    manifests = list((rejects / 'manifest').glob('wave-*.json'))
    assert len(manifests) == 1 and 'wave 1/' not in out.getvalue()
    assert len(json.loads(manifests[0].read_text())['partitions']) == 72
    assert json.loads((tmp_path / 's1.json').read_text())['read'] == 720
    # A small --wave_mb: waves of whole hours, recorded one by one; --resume skips them all.
    size = sum(f.stat().st_size for f in (tmp_path / 'in').rglob('*.avro'))
    rejects2 = tmp_path / 'rejects2'
    small = ['--input', str(tmp_path / 'in'), '--rejects', str(rejects2),
             '--segment_endpoint', receiver.url, '--wave_mb', str(size / 3 / MIB)]
    out = io.StringIO()
    assert run(small, out=out) == 0
    assert len(list((rejects2 / 'manifest').glob('wave-*.json'))) == 3
    assert 'wave 3/3 done' in out.getvalue()
    out = io.StringIO()
    assert run(small + ['--resume', '--plan'], out=out) == 0
    assert 'files to read: 0 ' in out.getvalue() and 'completed_by_earlier_run 72' in out.getvalue()
    receiver.stop()
