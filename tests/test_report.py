"""The HTML report (pipeline/report.py): every figure equal to the summary's, hostile text
escaped, and the page as a real browser shows it (headless Chromium: no console error, no
request, a heatmap that is not blank)."""
import datetime
import io
import json
import subprocess
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from pipeline.coverage import COLUMNS, UNDATED, gaps_from_summary, parse_hour
from pipeline.main import run
from pipeline.report import (SummaryError, check_summary, parse_summary, render)
from tests.browser import Chromium, chromium_binary
from tests.helpers import command
from tests.summaries import make_summary
from transforms.events import EVENTS
from transforms.profiles import CURRENT, row_names

ROOT = Path(__file__).resolve().parent.parent
NAMES = [e.segment_event for e in EVENTS]
HOLES = dict(missing=[('Email Opened', '2024-05-01-06')], stops={'SMS Delivered': '2024-05-01-08'},
             all_rejected=[('Content Card Sent', '2024-05-01-03')],
             unreadable=[('Email Sent', '2024-05-01-10')])


def gap_summary(**kw):
    """12 hours of the 34 classic events with a hole of each kind (and undated files)."""
    return make_summary(NAMES, 12, undated=['Email Sent', 'Webhook Sent'],
                        rates={'News Feed Card Clicked': 0.02}, **HOLES, **kw)


def month_summary(types=80, days=30):
    """A month of hourly files of 80 types (the `current` profile's rows, and more)."""
    names = list(dict.fromkeys(row_names(CURRENT).values()))
    names = (names + [f'Custom type {i}' for i in range(types)])[:types]
    return make_summary(names, 24 * days, per_hour=60, seed=2,
                        missing=[(names[3], '2024-05-10-05')], stops={names[5]: '2024-05-21-00'},
                        all_rejected=[(names[7], '2024-05-15-12')],
                        rates={n: 0.05 for n in names[-6:]})


# ------------------------------------------------------------------------ reading the page back
class Element:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.text = tag, attrs, parent, ''


class ParsedPage(HTMLParser):
    """Every element of the page with its attributes and text (children's included)."""
    VOID = {'meta', 'br', 'img', 'input', 'link', 'hr'}

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.elements, self._open = [], []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs), self._open[-1] if self._open else None)
        self.elements.append(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_endtag(self, tag):
        while self._open:
            element = self._open.pop()
            if self._open:
                self._open[-1].text += element.text
            if element.tag == tag:
                break

    def handle_data(self, data):
        if self._open:
            self._open[-1].text += data

    def by_id(self, ident):
        found = [e for e in self.elements if e.attrs.get('id') == ident]
        assert len(found) == 1, ident
        return found[0]

    def number(self, ident) -> int:
        return int(self.by_id(ident).text.replace(',', ''))

    def table(self, ident):
        """{row key: [counts]} of a table the report drew."""
        table = self.by_id(ident)
        rows = {}
        for e in self.elements:
            if e.tag == 'tr' and 'data-key' in e.attrs and self._inside(e, table):
                cells = [c for c in self.elements if c.tag == 'td' and c.parent is e
                         and 'n' in c.attrs.get('class', '').split()]
                rows[e.attrs['data-key']] = [int(c.text.replace(',', '')) for c in cells]
        return rows

    def _inside(self, element, ancestor):
        while element is not None:
            if element is ancestor:
                return True
            element = element.parent
        return False

    def cells(self):
        """{(event, column name): {count column: n} or None (no file), gap kinds}."""
        out = {}
        for e in self.elements:
            if e.tag == 'rect' and e.attrs.get('class') == 'cell':
                event = e.parent.attrs['data-event']
                counts = None if 'data-read' not in e.attrs else {
                    c: int(e.attrs[f'data-{c.replace("_", "-")}']) for c in COLUMNS}
                out[(event, e.attrs['data-bin'])] = (counts, e.attrs.get('data-gap', ''))
        return out


def expected_cells(summary, unit):
    """The summary's by_hour summed per heatmap column, worked out here independently."""
    columns = summary['by_hour']['columns']
    sums = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    for event, per_hour in summary['by_hour']['events'].items():
        for hour, values in per_hour.items():
            if hour == UNDATED:
                name = 'files without a date= hour'
            elif unit == 'hour':
                name = hour
            elif unit == 'day':
                name = hour[:10]
            else:
                day = parse_hour(hour).date()
                name = f'week of {day - datetime.timedelta(days=day.weekday()):%Y-%m-%d}'
            for column, n in zip(columns, values):
                sums[(event, name)][column] += n
    return dict(sums)


def assert_figures(page: str, summary: dict, unit: str):
    """Every figure of the report equals the summary's."""
    parsed = ParsedPage(page)
    for ident, key in (('total-read', 'read'), ('total-sent', 'sent'),
                       ('total-dropped', 'dropped_no_external_user_id'),
                       ('total-rejected', 'rejected'), ('files-read', 'files_read'),
                       ('files-skipped', 'files_skipped'), ('files-rejected', 'files_rejected'),
                       ('requests', 'requests'), ('requests-retried', 'requests_retried')):
        assert parsed.number(ident) == summary[key], ident
    by_hour = summary['by_hour']['events']
    files = {e: sum(v[0] for v in per_hour.values()) for e, per_hour in by_hour.items()}
    dated = {e: sum(1 for h in per_hour if h != UNDATED) for e, per_hour in by_hour.items()}
    gaps = gaps_from_summary(summary['by_hour'])
    per_type_gaps = defaultdict(int)
    for gap in gaps:
        for event in gap.events:
            per_type_gaps[event] += 1
    assert parsed.table('types') == {
        e: [r['read'], r['dropped_no_external_user_id'], r['sent'], r['rejected'], files[e],
            dated[e], per_type_gaps[e]] for e, r in summary['by_event'].items()}
    assert parsed.table('rejects') == {k: [v] for k, v in summary['rejected_by_reason'].items()}
    if summary['files_skipped_by_reason']:
        assert parsed.table('skipped') == {k: [v]
                                           for k, v in summary['files_skipped_by_reason'].items()}
    if summary.get('event_types_not_selected'):
        assert parsed.number('types-not-read') == len(summary['event_types_not_selected'])
    if summary['requests_by_status']:   # a dry run makes no request: no table
        assert parsed.table('statuses') == {k: [v]
                                            for k, v in summary['requests_by_status'].items()}
    assert parsed.number('gap-count') == len(gaps)
    items = [e for e in parsed.elements if e.tag == 'li' and e.attrs.get('class') == 'gap']
    assert [(i.attrs['data-kind'], i.attrs['data-first'], i.attrs['data-last']) for i in items] \
        == [(g.kind, g.first.strftime('%Y-%m-%d-%H'), g.last.strftime('%Y-%m-%d-%H'))
            for g in gaps]
    assert all(i.text.endswith(g.text) for i, g in zip(items, gaps))
    cells = parsed.cells()
    expected = expected_cells(summary, unit)
    drawn = {k: v[0] for k, v in cells.items() if v[0] is not None}
    assert drawn == expected
    heatmap = parsed.by_id('heatmap')
    assert heatmap.attrs['data-unit'] == unit
    assert int(heatmap.attrs['data-rows']) == len(by_hour)
    return parsed, cells, gaps


# --------------------------------------------------------------------------------- figures
def test_every_figure_of_a_twelve_hour_report_equals_the_summary():
    summary = gap_summary()
    page = render(check_summary(summary), 'summary.json')
    parsed, cells, gaps = assert_figures(page, summary, 'hour')
    assert len(gaps) == 4
    # the gaps are highlighted on their cells, and only there
    flagged = {k: v[1] for k, v in cells.items() if v[1]}
    assert flagged == {('Email Opened', '2024-05-01-06'): 'missing_hours',
                       **{('SMS Delivered', f'2024-05-01-{h:02d}'): 'stopped'
                          for h in range(8, 12)},
                       ('Content Card Sent', '2024-05-01-03'): 'all_rejected',
                       ('Email Sent', '2024-05-01-10'): 'files_unreadable'}
    assert cells[('Email Opened', '2024-05-01-06')][0] is None          # no file: hatched
    assert 'gap: missing hours 2024-05-01-06' in ParsedPage(page).by_id('heatmap').text
    assert int(parsed.by_id('heatmap').attrs['data-columns']) == 13     # 12 hours + undated
    assert parsed.by_id('balance').text.endswith(': OK')
    assert '4 gaps in coverage' in parsed.by_id('status').text


def test_a_month_is_drawn_by_day_and_a_long_range_by_week():
    summary = month_summary()
    page = render(check_summary(summary))
    parsed, cells, gaps = assert_figures(page, summary, 'day')
    assert [g.kind for g in gaps] == ['missing_hours', 'all_rejected', 'stopped']
    assert cells[(gaps[0].events[0], '2024-05-10')][1] == 'missing_hours'
    assert int(parsed.by_id('heatmap').attrs['data-columns']) == 30
    size = len(page.encode('utf-8'))
    print(f'report of 30 days x 80 types: {size:,} bytes')
    assert size < 1_500_000
    long = make_summary(NAMES[:3], 24 * 200, per_hour=20, start='2024-01-03-00')
    parsed, cells, _ = assert_figures(render(check_summary(long)), long, 'week')
    assert int(parsed.by_id('heatmap').attrs['data-columns']) == 29    # weeks of Jan 1 .. Jul 15


def test_units_switch_at_72_hours_and_120_days():
    from pipeline.report import unit_of
    first = datetime.datetime(2024, 5, 1)
    assert unit_of(first, first + datetime.timedelta(hours=71)) == 'hour'
    assert unit_of(first, first + datetime.timedelta(hours=72)) == 'day'
    assert unit_of(first, first + datetime.timedelta(days=119, hours=23)) == 'day'
    assert unit_of(first, first + datetime.timedelta(days=120)) == 'week'


def test_a_summary_without_holes_says_so():
    summary = make_summary(NAMES, 12, rates={'News Feed Card Clicked': 0.02}, seed=5)
    summary['rejected_by_reason'] = {}
    for row in summary['by_event'].values():          # nothing rejected: all sent
        row['sent'] += row['rejected']
        row['rejected'] = 0
    summary['sent'] += summary['rejected']
    summary['rejected'] = 0
    for per_hour in summary['by_hour']['events'].values():
        for values in per_hour.values():
            values[4] += values[5]
            values[5] = 0
    parsed = ParsedPage(render(check_summary(summary)))
    assert parsed.number('gap-count') == 0
    assert parsed.by_id('no-gaps').text.startswith('None')
    assert parsed.by_id('status').attrs['class'] == 'status ok'


def test_a_summary_without_per_hour_counts_still_reports_its_totals():
    """A replay's summary, or one of an earlier version: no heatmap, no gap list."""
    summary = gap_summary()
    del summary['by_hour']
    parsed = ParsedPage(render(check_summary(summary)))
    assert parsed.number('total-read') == summary['read']
    assert 'no per-hour counts' in parsed.by_id('no-by-hour').text
    assert not [e for e in parsed.elements if e.tag == 'svg']
    assert parsed.table('types') == {e: [r['read'], r['dropped_no_external_user_id'], r['sent'],
                                         r['rejected']] for e, r in summary['by_event'].items()}


def test_only_undated_files_and_no_files():
    summary = make_summary(NAMES[:2], 1, undated=NAMES[:2])
    for per_hour in summary['by_hour']['events'].values():
        del per_hour['2024-05-01-00']
    for event, row in summary['by_event'].items():
        row.update(dict(zip(COLUMNS[2:], summary['by_hour']['events'][event][UNDATED][2:])))
    parsed = ParsedPage(render(check_summary(summary)))
    assert int(parsed.by_id('heatmap').attrs['data-columns']) == 1
    assert {k[1] for k in parsed.cells()} == {'files without a date= hour'}
    assert parsed.number('gap-count') == 0
    summary['by_hour']['events'] = {}
    parsed = ParsedPage(render(check_summary(summary)))
    assert not [e for e in parsed.elements if e.tag == 'svg']
    assert 'No file was read' in parsed.elements[0].text


def test_unbalanced_and_stopped_runs_are_said_at_the_top():
    summary = gap_summary()
    summary['not_sent_stopped'], summary['files_not_read_stopped'] = 5, 2
    summary['by_event']['Email Sent']['not_sent_stopped'] = 5
    summary['by_event']['Email Sent']['read'] += 5
    summary['by_hour']['events']['Email Sent']['2024-05-01-00'][2] += 5
    summary['read'] += 5
    parsed = ParsedPage(render(check_summary(summary)))
    assert parsed.number('not-sent-stopped') == 5 and parsed.number('files-not-read-stopped') == 2
    assert 'the run was stopped: rerun with --resume' in parsed.by_id('status').text
    assert parsed.by_id('balance').text.endswith('+ not sent (stopped): OK')
    assert parsed.table('types')['Email Sent'][4] == 5       # the "not sent (stopped)" column
    assert not [e for e in parsed.elements if e.attrs.get('id') == 'hour-sums']
    summary['sent'] += 1
    parsed = ParsedPage(render(check_summary(summary)))
    assert parsed.by_id('balance').text.endswith('MISMATCH')
    assert 'does not balance' in parsed.by_id('status').text


def test_per_hour_counts_that_do_not_add_up_are_flagged():
    summary = gap_summary()
    summary['by_hour']['events']['Webhook Sent']['2024-05-01-00'][2] += 1
    summary['files_read'] += 1
    text = ParsedPage(render(check_summary(summary))).by_id('hour-sums').text
    assert text == ('Warning: the per-hour counts do not add up to the totals for Webhook Sent, '
                    'files.')


# --------------------------------------------------------------------------------- hostile text
HOSTILE = ['<script>alert(1)</script>', '"><img src=http://127.0.0.1:9/x onerror=alert(2)>',
           "</title><style>body{background:url(http://127.0.0.1:9/y)}</style>",
           'a\x00b\x1b[31mc', 'bidi \u202e gnp.exe', 'lone \ud800 surrogate', 'x' * 5000,
           '&amp; &lt;b&gt;']


def hostile_summary():
    summary = make_summary(HOSTILE + NAMES[:2], 6, missing=[(HOSTILE[0], '2024-05-01-02')])
    summary['rejected_by_reason'] = {HOSTILE[1]: summary['rejected']}
    summary['requests_by_status'] = {HOSTILE[2]: summary['requests']}
    summary['files_skipped_by_reason'] = {HOSTILE[4]: 3}
    return summary


def shown(name: str) -> str:
    """What the page shows for a hostile string: controls and lone surrogates replaced."""
    name = name.encode('utf-8', 'replace').decode('utf-8')
    return ''.join('\ufffd' if ord(c) < 32 or 127 <= ord(c) < 160 or c == '\u202e' else c
                   for c in name)


def test_hostile_strings_are_shown_as_text_never_as_markup():
    summary = hostile_summary()
    page = render(check_summary(summary), '<b>summary</b>.json')
    page.encode('utf-8')                                  # no lone surrogate left
    lowered = page.lower()
    assert '<script' not in lowered and '<img' not in lowered and lowered.count('<style') == 1
    assert '&lt;script&gt;alert(1)&lt;/script&gt;' in page
    assert '&quot;&gt;&lt;img src=http://127.0.0.1:9/x onerror=alert(2)&gt;' in page
    parsed = ParsedPage(page)
    assert not [e for e in parsed.elements if e.tag in ('script', 'img', 'iframe', 'object')]
    assert [e.tag for e in parsed.elements].count('style') == 1
    assert set(parsed.table('types')) == {shown(n) for n in summary['by_event']}
    assert set(parsed.table('rejects')) == {shown(HOSTILE[1])}
    assert set(parsed.table('statuses')) == {shown(HOSTILE[2])}
    rows = [e.attrs['data-event'] for e in parsed.elements if e.tag == 'g']
    assert rows == [shown(n) for n in summary['by_event']]
    assert shown(HOSTILE[0]) + ': no file in 2024-05-01-02' in parsed.by_id('gap-list').text
    csp = [e for e in parsed.elements if e.tag == 'meta'
           and e.attrs.get('http-equiv') == 'Content-Security-Policy']
    assert csp and csp[0].attrs['content'].startswith("default-src 'none'")


@pytest.mark.parametrize('change, message', [
    (lambda s: s.update(read=1.5), 'read is missing or not a count'),
    (lambda s: s.update(sent=-1), 'sent is missing or not a count'),
    (lambda s: s.update(rejected=True), 'rejected is missing or not a count'),
    (lambda s: s.pop('by_event'), 'by_event is missing'),
    (lambda s: s['by_event']['Email Sent'].pop('sent'), "by_event['Email Sent'] has no sent"),
    (lambda s: s.update(requests='7'), 'requests is not a count'),
    (lambda s: s['rejected_by_reason'].update(x=None), "rejected_by_reason['x'] is not a count"),
    (lambda s: s['by_hour'].update(columns=['files']), 'by_hour has no column files_rejected'),
    (lambda s: s['by_hour'].update(events=[]), 'by_hour is not'),
    (lambda s: s['by_hour']['events']['Email Sent'].update({'2024-05-01': [0] * 6}),
     "'2024-05-01' is not a YYYY-MM-DD-HH hour"),
    (lambda s: s['by_hour']['events']['Email Sent'].update({'2024-05-01-00': [1, 0, 2]}),
     "by_hour events['Email Sent']['2024-05-01-00'] is not 6 counts"),
    (lambda s: s['by_hour']['events'].update({'<b>': {'2024-05-01-00': [1] * 5 + [2.0]}}),
     "by_hour events['<b>']['2024-05-01-00'] is not 6 counts"),
])
def test_malformed_summaries_are_refused_with_the_place(change, message):
    summary = gap_summary()
    change(summary)
    with pytest.raises(SummaryError) as caught:
        check_summary(summary)
    assert message in str(caught.value) and '\n' not in str(caught.value)


def test_not_json_is_refused():
    for data in (b'{', b'\xff\xfe', b'[' * 100000, b'NaN'):
        with pytest.raises(SummaryError):
            parse_summary(data)
    assert parse_summary(json.dumps(gap_summary()).encode())['read'] > 0


# ------------------------------------------------------------------------ the report command
def _report(*argv):
    out = io.StringIO()
    return run(['report', *map(str, argv)], out=out), out.getvalue()


def test_report_command_writes_the_page_of_a_summary(tmp_path, capsys):
    summary = gap_summary()
    path = tmp_path / 'summary.json'
    path.write_text(json.dumps(summary))
    code, out = _report('--summary', path, '--out', tmp_path / 'deep' / 'report.html')
    assert code == 0
    page = (tmp_path / 'deep' / 'report.html').read_text()
    assert out == f'report written: {tmp_path / "deep" / "report.html"} ({len(page.encode()):,} ' \
                  f'bytes; 4 gaps)\n'
    assert page == render(check_summary(summary), str(path))
    assert oct((tmp_path / 'deep' / 'report.html').stat().st_mode & 0o777) == '0o600'


def test_report_command_usage_errors(tmp_path, capsys):
    good = tmp_path / 'summary.json'
    good.write_text(json.dumps(gap_summary()))
    (tmp_path / 'bad.json').write_text('{"read": 1}')
    (tmp_path / 'file').write_text('')
    cases = [
        (['--summary', good, '--out', tmp_path / 'r.html', '--outt', 'x'],
         'unknown option --outt; did you mean --out?'),
        (['--summary', good, '--out', tmp_path / 'r.html', '--input', 'x'],
         'unknown option --input'),
        (['--summary', good], 'give --summary S.json'),
        (['--summary', tmp_path / 'none.json', '--out', tmp_path / 'r.html'],
         'cannot read --summary'),
        (['--summary', tmp_path / 'bad.json', '--out', tmp_path / 'r.html'],
         'is not a summary this tool wrote: dropped_no_external_user_id is missing'),
        (['--summary', good, '--out', tmp_path / 'file' / 'r.html'], 'cannot write --out'),
        (['--summary', good, '--out', tmp_path], 'is a folder'),
        (['--summary', good, '--out', tmp_path / 'r.html', 'extra'],
         "unexpected argument 'extra'"),
    ]
    for argv, message in cases:
        code, out = _report(*argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert message in err and len(err.strip().splitlines()) == 1, (message, err)
        assert not out and not (tmp_path / 'r.html').exists()


@pytest.mark.slow
def test_report_command_from_the_command_line(tmp_path):
    path = tmp_path / 'summary.json'
    path.write_text(json.dumps(gap_summary()))
    proc = command('report', '--summary', path, '--out', tmp_path / 'report.html', timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f'report written: {tmp_path / "report.html"} (')
    assert_figures((tmp_path / 'report.html').read_text(), gap_summary(), 'hour')
    proc = command('report', '--summary', path, '--out', tmp_path / 'r.html', '--sumary', 'x')
    assert proc.returncode == 2 and proc.stderr.strip() == (
        'currents-to-segment: error: unknown option --sumary; did you mean --summary?')
    proc = command('report', '--help')
    assert proc.returncode == 0 and '--summary' in proc.stdout and '--out' in proc.stdout


# -------------------------------------------------------------------------------- a real browser
def _cells_clip(page):
    """Where the heatmap's cells are drawn, in page pixels."""
    return page.evaluate("""(() => {
        const rs = [...document.querySelectorAll('#heatmap rect.cell')]
            .map(c => c.getBoundingClientRect());
        const x = Math.min(...rs.map(r => r.left)), y = Math.min(...rs.map(r => r.top));
        return {x: x + scrollX, y: y + scrollY,
                width: Math.max(...rs.map(r => r.right)) - x,
                height: Math.max(...rs.map(r => r.bottom)) - y}; })()""")


def _colours(png: Path):
    image = Image.open(png).convert('RGB')
    return image, image.getcolors(maxcolors=1 << 20)


@pytest.mark.slow
def test_the_report_in_headless_chromium(tmp_path):
    """No console error, no request but the page itself, and a heatmap that is drawn: its
    screenshot holds the blues of the counts and the red and orange of the gaps."""
    if chromium_binary() is None:
        pytest.fail('chromium not found: run scripts/chromium.sh (run_tests.sh does)')
    pages = {'twelve-hours': gap_summary(), 'month-80-types': month_summary(),
             'hostile': hostile_summary()}
    for name, summary in pages.items():
        (tmp_path / f'{name}.html').write_text(render(check_summary(summary)), encoding='utf-8')
    with Chromium(tmp_path / 'profile') as browser:
        for name, summary in pages.items():
            page = browser.open(tmp_path / f'{name}.html')
            load = page.settle()
            assert load.errors == [], (name, load.errors)
            assert load.requests == [load.url] and load.other_requests == [], name
            assert page.evaluate('document.scripts.length') == 0
            # fits the window's width (1400): a long name wraps, the heatmap scrolls in its box
            assert page.evaluate('document.documentElement.scrollWidth') <= 1400, name
            page.screenshot(tmp_path / f'{name}.png')
            clip = _cells_clip(page)
            assert clip['width'] > 150 and clip['height'] > 80, (name, clip)
            shot = page.screenshot(tmp_path / f'{name}-heatmap.png', clip)
            image, colours = _colours(shot)
            assert image.size == (round(clip['width']), round(clip['height']))
            white = sum(n for n, c in colours if c == (255, 255, 255))
            assert white < 0.2 * image.size[0] * image.size[1], name     # not blank
            present = {c for n, c in colours if n >= 20}
            assert len(present) >= 6, (name, len(present))
            assert (0xd6, 0x27, 0x28) in present, name                   # a gap: no file
            if name != 'hostile':
                assert (0xff, 0x7f, 0x0e) in present, name               # a gap: all rejected
                assert (0x08, 0x51, 0x9c) in present, name               # the busiest cells
            if name == 'hostile':
                text = page.evaluate('document.body.innerText')
                assert '<script>alert(1)</script>' in text and '"><img src=' in text
                assert 'bidi \ufffd gnp.exe' in text and 'x' * 199 + '…' in text
        print(f'screenshots for a human to look at: {tmp_path}/*.png')


def test_the_browser_setup_fails_clearly_when_chromium_cannot_be_installed(tmp_path):
    """scripts/chromium.sh: no chromium and no way to install it is one clear line, exit 1."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'id').write_text('#!/bin/sh\necho 1000\n')
    (bin_dir / 'id').chmod(0o755)
    proc = subprocess.run(['/bin/bash', str(ROOT / 'scripts' / 'chromium.sh')],
                          env={'PATH': str(bin_dir)}, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert 'chromium not found and not installable here (needs apt-get as root)' in proc.stderr


# -------------------------------------------------------------------------- --report on a run
def _run_args(tmp_path, *extra):
    return ['--input', str(tmp_path / 'in'), '--rejects', str(tmp_path / 'rejects'),
            '--dry_run_output', str(tmp_path / 'bodies'), *map(str, extra)]


@pytest.mark.slow
def test_a_run_writes_its_report_with_the_figures_of_its_summary(tmp_path):
    from devtools.sample import deliberate_gaps, generate
    generate(tmp_path / 'in', events=3000, seed=6, hours=6, gaps=deliberate_gaps(6))
    proc = command(*_run_args(tmp_path, '--summary_output', tmp_path / 'summary.json',
                              '--report', tmp_path / 'out' / 'report.html'))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / 'out' / 'report.html').read_text()
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert f'report written: {tmp_path / "out" / "report.html"} ({len(page.encode()):,} bytes; ' \
        in proc.stderr
    assert summary['rejected_by_reason'] == {'message_id_too_long': summary['rejected']}
    parsed = ParsedPage(page)
    for ident, key in (('total-read', 'read'), ('total-sent', 'sent'),
                       ('total-rejected', 'rejected'), ('files-read', 'files_read')):
        assert parsed.number(ident) == summary[key]
    assert parsed.table('rejects') == {'message_id_too_long': [summary['rejected']]}
    if 'by_hour' in summary:   # the workers' per-hour counts: the deliberate gaps are shown
        _, _, gaps = assert_figures(page, summary, 'hour')
        assert [(g.kind, g.events) for g in gaps] == [
            ('all_rejected', ('Content Card Sent',)), ('missing_hours', ('Email Opened',)),
            ('stopped', ('SMS Delivered',))]
    else:                      # a summary without them: totals only, said so
        assert 'no per-hour counts' in parsed.by_id('no-by-hour').text
        assert '; no per-hour counts)' in proc.stderr


def test_a_report_that_cannot_be_written_stops_the_run_before_anything_runs(tmp_path, capsys):
    (tmp_path / 'in').mkdir()
    (tmp_path / 'file').write_text('')
    for report, message in ((tmp_path / 'file' / 'report.html', 'cannot write --report'),
                            (tmp_path, 'is a folder; give a file name')):
        assert run(_run_args(tmp_path, '--report', report), out=io.StringIO()) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / 'rejects').exists() and not (tmp_path / 'bodies').exists()
    assert run(_run_args(tmp_path, '--report', tmp_path / 'r.html', '--plan'),
               out=io.StringIO()) == 2
    assert '--report is written at the end of a run; --plan only prints' in capsys.readouterr().err


def test_report_on_dataflow_needs_wait(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('GOOGLE_APPLICATION_CREDENTIALS', str(tmp_path / 'none.json'))
    code = run(['--input', 'gs://bkt/in', '--rejects', 'gs://bkt/rejects', '--runner',
                'DataflowRunner', '--project', 'p', '--region', 'europe-west1',
                '--temp_location', 'gs://bkt/tmp', '--report', 'gs://bkt/report.html'],
               out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2 and 'on Dataflow add --wait' in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_replay_writes_a_report_of_its_totals(tmp_path):
    """A replay's summary has no per-hour counts: its report gives the totals."""
    message = {'type': 'track', 'event': 'Email Sent', 'userId': 'u1', 'messageId': 'm-1',
               'timestamp': '2024-05-01T12:00:00.000Z', 'properties': {'campaign_id': 'c'},
               'context': {'traits': {'email': 'a@example.com'},
                           'library': {'name': 'currents-to-segment', 'version': '1'}}}
    (tmp_path / 'rejects').mkdir()
    (tmp_path / 'rejects' / 'rejects-1-00000-of-00001.jsonl').write_text(json.dumps({
        'reason': 'retries_exhausted', 'event_type': 'users.messages.email.Send',
        'source': 'f.avro', 'detail': '', 'message': message}) + '\n')
    code = run(['replay', '--rejects', str(tmp_path / 'rejects'), '--dry_run_output',
                str(tmp_path / 'bodies'), '--summary_output', str(tmp_path / 'summary.json'),
                '--report', str(tmp_path / 'report.html')], out=io.StringIO())
    assert code == 0
    summary = json.loads((tmp_path / 'summary.json').read_text())
    parsed = ParsedPage((tmp_path / 'report.html').read_text())
    assert parsed.number('total-read') == parsed.number('total-sent') == summary['sent'] == 1
    assert parsed.table('types') == {'Email Sent': [1, 0, 1, 0]}
    assert 'no per-hour counts' in parsed.by_id('no-by-hour').text
