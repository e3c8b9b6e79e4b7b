"""The backfill report: one self-contained HTML file drawn from a run's summary (docs/report.md,
"The report").

Written by a run with `--report FILE.html`, or later from a summary file with
`currents-to-segment report --summary S.json --out FILE.html` (e.g. a Dataflow job's summary).
The page has no script and loads nothing: the heatmap is inline SVG drawn here, its cells'
tooltips are SVG titles, and a Content-Security-Policy forbids any fetch, so a hostile event name
in a summary can neither run nor call out (every string from the summary is escaped as well).
"""
import argparse
import datetime
import html
import math
import os
import sys
import tempfile
import unicodedata
import uuid
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from pipeline import __version__
from pipeline.coverage import (ALL_REJECTED, COLUMNS, HOUR, MISSING, STARTED_LATE, STOPPED,
                               UNDATED, UNREADABLE, Gap, cells, gaps_from_summary, hour_key,
                               parse_hour)
from pipeline.paths import UsageError
from transforms.records import write_whole

PROG = 'currents-to-segment report'
MAX_SUMMARY_BYTES = 256 * 1024 * 1024   # far above a year of 80 types by hour (~26 MB)
HOURLY_UP_TO = 72                        # hours in the range: one column per hour up to this
DAILY_UP_TO = 120                        # days: one column per day up to this, else per week
LABEL_CHARS = 40                         # event names longer than this are cut on the heatmap
TABLE_CHARS = 200                        # ... and in tables (whole in the tooltip)

_TOTALS = ('read', 'dropped_no_external_user_id', 'sent', 'rejected')
_OPTIONAL_COUNTS = ('files_read', 'files_skipped', 'files_rejected', 'files_without_date_hour',
                    'not_sent_stopped', 'files_not_read_stopped', 'requests', 'requests_retried')
_OPTIONAL_TABLES = ('rejected_by_reason', 'files_skipped_by_reason', 'requests_by_status')
KIND_LABELS = {MISSING: 'missing hours', STOPPED: 'stops early', STARTED_LATE: 'starts late',
               ALL_REJECTED: 'all rejected', UNREADABLE: 'files unreadable'}
KIND_COLOURS = {MISSING: '#d62728', STOPPED: '#d62728', STARTED_LATE: '#d62728',
                ALL_REJECTED: '#ff7f0e', UNREADABLE: '#7b3fa0'}
# When one heatmap cell holds gaps of several kinds, the first of these is drawn.
_KIND_ORDER = (UNREADABLE, ALL_REJECTED, MISSING, STOPPED, STARTED_LATE)
_RAMP = ((0xde, 0xeb, 0xf7), (0x9e, 0xca, 0xe1), (0x6b, 0xae, 0xd6), (0x31, 0x82, 0xbd),
         (0x08, 0x51, 0x9c))          # light to mid-dark blue: events read, log scale
NO_FILE = '#eef0f3'


class SummaryError(ValueError):
    """A summary file this tool did not write (or cannot read): one line, exit 2."""


# ------------------------------------------------------------------------- reading a summary
def _is_count(value) -> bool:
    return type(value) is int and value >= 0   # not bool, not float


def _name(value) -> str:
    """A key from the summary, safe to put in an error line (quoted, cut)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def _counts_table(value, where: str) -> Dict[str, int]:
    if not isinstance(value, dict):
        raise SummaryError(f'{where} is not an object')
    for key, n in value.items():
        if not _is_count(n):
            raise SummaryError(f'{where}[{_name(key)}] is not a count')
    return value


def check_summary(summary) -> dict:
    """The summary with its optional parts filled in; SummaryError on anything malformed.

    Counts must be non-negative integers, so every figure shown is one the summary holds.
    """
    if not isinstance(summary, dict):
        raise SummaryError('not a JSON object')
    checked = dict(summary)
    for key in _TOTALS:
        if not _is_count(summary.get(key)):
            raise SummaryError(f'{key} is missing or not a count')
    for key in _OPTIONAL_COUNTS:
        checked[key] = summary.get(key, 0)
        if not _is_count(checked[key]):
            raise SummaryError(f'{key} is not a count')
    for key in _OPTIONAL_TABLES:
        checked[key] = _counts_table(summary.get(key, {}), key)
    by_event = summary.get('by_event')
    if not isinstance(by_event, dict):
        raise SummaryError('by_event is missing or not an object')
    for event, row in by_event.items():
        _counts_table(row, f'by_event[{_name(event)}]')
        for key in _TOTALS:
            if key not in row:
                raise SummaryError(f'by_event[{_name(event)}] has no {key}')
    if 'by_hour' in summary:
        checked['by_hour'] = _check_by_hour(summary['by_hour'])
    return checked


def _check_by_hour(by_hour) -> dict:
    if not isinstance(by_hour, dict) or not isinstance(by_hour.get('columns'), list) \
            or not isinstance(by_hour.get('events'), dict):
        raise SummaryError('by_hour is not {"columns": [...], "events": {...}}')
    columns = by_hour['columns']
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise SummaryError(f'by_hour has no column {missing[0]}')
    for event, per_hour in by_hour['events'].items():
        if not isinstance(per_hour, dict):
            raise SummaryError(f'by_hour events[{_name(event)}] is not an object')
        for hour, values in per_hour.items():
            if hour != UNDATED:
                try:
                    parse_hour(hour)
                except ValueError:
                    raise SummaryError(f'by_hour events[{_name(event)}]: {_name(hour)} is not '
                                       f'a YYYY-MM-DD-HH hour') from None
            if not isinstance(values, list) or len(values) != len(columns) \
                    or not all(_is_count(v) for v in values):
                raise SummaryError(f'by_hour events[{_name(event)}][{_name(hour)}] is not '
                                   f'{len(columns)} counts')
    return by_hour


def parse_summary(data: bytes) -> dict:
    import json
    try:
        return check_summary(json.loads(data.decode('utf-8')))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, SummaryError):
            raise
        raise SummaryError(f'not JSON ({type(exc).__name__})') from None


def read_summary(path: str) -> dict:
    from apache_beam.io.filesystems import FileSystems
    try:
        with FileSystems.open(path) as f:
            data = f.read(MAX_SUMMARY_BYTES + 1)
    except Exception as exc:   # noqa: BLE001 - any store's error is one line
        raise UsageError(f'cannot read --summary {path}: {_reason(exc)}') from None
    if len(data) > MAX_SUMMARY_BYTES:
        raise UsageError(f'--summary {path} is larger than {MAX_SUMMARY_BYTES:,} bytes: not a '
                         f'summary this tool wrote')
    try:
        return parse_summary(data)
    except SummaryError as exc:
        raise UsageError(f'--summary {path} is not a summary this tool wrote: {exc}') from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = ' '.join(str(exc).split())
    return f'{type(exc).__name__}: {text[:200]}' if text else type(exc).__name__


# ------------------------------------------------------------------------- writing a report
def check_writable(path: str, flag: str = '--report') -> None:
    """Before anything runs: the report's folder takes a file (else UsageError, one line).

    A local folder is made if needed and probed with a temporary file; a store URL with a
    probe object beside the report, deleted at once.
    """
    if '://' not in path:
        if os.path.isdir(path):
            raise UsageError(f'{flag} {path} is a folder; give a file name (e.g. report.html)')
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
            tempfile.NamedTemporaryFile(dir=folder, prefix='.write-check-').close()
        except OSError as exc:
            raise UsageError(f'cannot write {flag} {path}: '
                             f'{exc.strerror or type(exc).__name__}') from None
        return
    from apache_beam.io.filesystems import FileSystems
    folder, name = FileSystems.split(path)
    if not name:
        raise UsageError(f'{flag} {path} names a folder; give a file name (e.g. report.html)')
    probe = FileSystems.join(folder, f'.write-check-{uuid.uuid4().hex}')
    try:
        write_whole(probe, b'', 'application/octet-stream')
        FileSystems.delete([probe])
    except Exception as exc:   # noqa: BLE001 - any store's error is one line
        raise UsageError(f'cannot write {flag} {path}: {_reason(exc)}') from None


def write_report(path: str, page: str) -> int:
    """Writes the page (local path or store URL); its size in bytes."""
    data = page.encode('utf-8')
    write_whole(path, data, 'text/html', in_place=True)
    return len(data)


# ------------------------------------------------------------------------------- the page
def _text(value) -> str:
    """A string from the summary, escaped for HTML and SVG text and attributes; control and
    format characters (a right-to-left override could make `gnp.exe` read `exe.png`) and lone
    surrogates (which no UTF-8 file can hold) shown as U+FFFD."""
    text = str(value).encode('utf-8', 'replace').decode('utf-8')
    text = ''.join('\ufffd' if unicodedata.category(c) in ('Cc', 'Cf') else c for c in text)
    return html.escape(text, quote=True)


def _cut(value: str, limit: int = LABEL_CHARS) -> str:
    return value if len(value) <= limit else value[:limit - 1] + '…'


def _n(value: int) -> str:
    return f'{value:,}'


def _colour(read: int, top: int) -> str:
    """Events read on a log scale from the lightest to the darkest blue."""
    if top <= 0 or read <= 0:
        return _hex(_RAMP[0])
    t = math.log1p(read) / math.log1p(top) * (len(_RAMP) - 1)
    i = min(int(t), len(_RAMP) - 2)
    f = t - i
    return _hex(tuple(round(a + (b - a) * f) for a, b in zip(_RAMP[i], _RAMP[i + 1])))


def _hex(rgb) -> str:
    return '#%02x%02x%02x' % tuple(rgb)


def unit_of(first: datetime.datetime, last: datetime.datetime) -> str:
    """The heatmap's column for a range: hour (up to 72 hours), day (up to 120 days), week."""
    if int((last - first) / HOUR) + 1 <= HOURLY_UP_TO:
        return 'hour'
    return 'day' if (last.date() - first.date()).days + 1 <= DAILY_UP_TO else 'week'


class _Bins:
    """Heatmap columns: hours, days or weeks over the range, and the undated files first."""

    def __init__(self, hours: Sequence[datetime.datetime], undated: bool):
        self.undated = undated
        self.starts: List[datetime.datetime] = []
        if not hours:   # only files without a date= hour
            self.unit, self.step = 'hour', HOUR
            return
        first, last = min(hours), max(hours)
        self.unit = unit_of(first, last)
        if self.unit == 'hour':
            self.step = HOUR
            start = first
        elif self.unit == 'day':
            self.step = datetime.timedelta(days=1)
            start = datetime.datetime.combine(first.date(), datetime.time())
        else:
            self.step = datetime.timedelta(days=7)
            monday = first.date() - datetime.timedelta(days=first.weekday())
            start = datetime.datetime.combine(monday, datetime.time())
        while start <= last:
            self.starts.append(start)
            start += self.step

    def index(self, hour: datetime.datetime) -> int:
        return int((hour - self.starts[0]) / self.step) + (1 if self.undated else 0)

    def labels(self) -> List[Tuple[str, str]]:
        """(short label, full name) per column."""
        out = [('no date=', 'files without a date= hour')] if self.undated else []
        for start in self.starts:
            if self.unit == 'hour':
                out.append((start.strftime('%m-%d %H'), hour_key(start)))
            elif self.unit == 'day':
                out.append((start.strftime('%m-%d'), start.strftime('%Y-%m-%d')))
            else:
                out.append((start.strftime('%m-%d'), f'week of {start:%Y-%m-%d}'))
        return out


def _heatmap_data(summary: dict, gaps: List[Gap]):
    """Rows (events, in by_event order then any other), bins, per-cell sums and gap kinds."""
    table = cells(summary['by_hour'])
    rows = list(summary['by_event']) + [e for e in table if e not in summary['by_event']]
    rows = [e for e in rows if e in table]
    hours = {parse_hour(h) for per_hour in table.values() for h in per_hour if h != UNDATED}
    bins = _Bins(sorted(hours), any(UNDATED in per_hour for per_hour in table.values()))
    sums: Dict[Tuple[str, int], Dict[str, int]] = {}
    for event, per_hour in table.items():
        for hour, values in per_hour.items():
            column = 0 if hour == UNDATED else bins.index(parse_hour(hour))
            cell = sums.setdefault((event, column), dict.fromkeys(COLUMNS, 0))
            for key in COLUMNS:
                cell[key] += values[key]
    flagged: Dict[Tuple[str, int], Dict[str, List[str]]] = defaultdict(lambda: defaultdict(list))
    for gap in gaps:
        for event in gap.events:
            for i in range(gap.hours):
                hour = gap.first + i * HOUR
                flagged[(event, bins.index(hour))][gap.kind].append(hour_key(hour))
    return rows, bins, sums, flagged


def _cell_title(event: str, label: str, cell: Optional[Dict[str, int]], kinds) -> str:
    if cell is None:
        text = f'{event} · {label}: no file'
    else:
        text = (f'{event} · {label}: {_n(cell["read"])} read, {_n(cell["sent"])} sent, '
                f'{_n(cell["dropped_no_external_user_id"])} dropped, '
                f'{_n(cell["rejected"])} rejected; {_n(cell["files"])} files, '
                f'{_n(cell["files_rejected"])} unreadable')
    for kind in _KIND_ORDER:
        if kind in kinds:
            hours = kinds[kind]
            shown = ', '.join(hours[:6]) + (f' and {len(hours) - 6} more' if len(hours) > 6
                                            else '')
            text += f' — gap: {KIND_LABELS[kind]} {shown}'
    return text


def _heatmap(summary: dict, gaps: List[Gap]) -> str:
    if 'by_hour' not in summary:
        return ('<p class="note" id="no-by-hour">This summary has no per-hour counts (a replay, '
                'or a run of an earlier version): coverage and gaps cannot be shown.</p>')
    rows, bins, sums, flagged = _heatmap_data(summary, gaps)
    if not sums:
        return '<p class="note">No file was read: nothing to show.</p>'
    labels = bins.labels()
    cw = max(12, min(30, 1100 // max(1, len(labels))))
    ch = 16
    label_w = 7 * max([12] + [len(_cut(e)) for e in rows]) + 12
    head_h = 64
    total_w = 110
    width = label_w + cw * len(labels) + total_w
    height = head_h + ch * len(rows) + 8
    top = max(c['read'] for c in sums.values())
    totals: Dict[str, int] = defaultdict(int)
    for (event, _), cell in sums.items():
        totals[event] += cell['read']
    out = [f'<svg id="heatmap" xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="events read by event type and {bins.unit}" '
           f'data-unit="{bins.unit}" data-columns="{len(labels)}" data-rows="{len(rows)}">',
           '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fde0e0"/>'
           '<rect width="3" height="6" fill="#d62728"/></pattern></defs>']
    for j, (short, full) in enumerate(labels):
        x = label_w + j * cw + cw // 2
        out.append(f'<text class="col" x="{x}" y="{head_h - 6}" '
                   f'transform="rotate(-55 {x} {head_h - 6})"><title>{_text(full)}</title>'
                   f'{_text(short)}</text>')
    out.append(f'<text class="col" x="{label_w + cw * len(labels) + 8}" y="{head_h - 6}">'
               f'read</text>')
    overlays = []
    for i, event in enumerate(rows):
        y = head_h + i * ch
        out.append(f'<g data-event="{_text(event)}"><text class="row" x="{label_w - 8}" '
                   f'y="{y + ch - 4}"><title>{_text(event)}</title>{_text(_cut(event))}</text>')
        for j, (_, full) in enumerate(labels):
            cell = sums.get((event, j))
            kinds = flagged.get((event, j), {})
            x = label_w + j * cw
            kind = next((k for k in _KIND_ORDER if k in kinds), None)
            if kind in (UNREADABLE, ALL_REJECTED):
                fill = KIND_COLOURS[kind]
            elif kind is not None:
                fill = 'url(#hatch)'
            else:
                fill = NO_FILE if cell is None else _colour(cell['read'], top)
            data = '' if cell is None else ' ' + ' '.join(
                f'data-{k.replace("_", "-")}="{cell[k]}"' for k in COLUMNS)
            kind_attr = f' data-gap="{" ".join(k for k in _KIND_ORDER if k in kinds)}"' \
                if kinds else ''
            out.append(f'<rect class="cell" x="{x}" y="{y}" width="{cw - 1}" height="{ch - 1}" '
                       f'fill="{fill}" data-bin="{_text(full)}"{data}{kind_attr}><title>'
                       f'{_text(_cell_title(event, full, cell, kinds))}</title></rect>')
            if kind is not None:
                overlays.append(f'<rect class="gap" x="{x + 0.75}" y="{y + 0.75}" '
                                f'width="{cw - 2.5}" height="{ch - 2.5}" fill="none" '
                                f'stroke="{KIND_COLOURS[kind]}" stroke-width="2"/>')
        out.append(f'<text class="total" x="{width - 6}" y="{y + ch - 4}">'
                   f'{_n(totals[event])}</text></g>')
    out += overlays
    out.append('</svg>')
    return '\n'.join(out)


def _legend(unit: str) -> str:
    ramp = ''.join(f'<span class="sw" style="background:{_hex(c)}"></span>' for c in _RAMP)
    some = '' if unit == 'hour' else f' (in some hour of the {unit})'
    items = [f'{ramp} events read (log scale)',
             f'<span class="sw" style="background:{NO_FILE}"></span> no file',
             f'<span class="sw hatch"></span> gap: no file where files were expected{some}',
             f'<span class="sw" style="background:{KIND_COLOURS[ALL_REJECTED]}"></span> gap: '
             f'every event rejected{some}',
             f'<span class="sw" style="background:{KIND_COLOURS[UNREADABLE]}"></span> gap: '
             f'every file unreadable{some}']
    return ('<p class="legend">' + ' '.join(f'<span class="key">{i}</span>' for i in items)
            + ' <span class="key">(hover a cell for its counts)</span></p>')


def _table(table_id: str, head: Sequence[str], rows: List[Tuple[str, Sequence[int]]],
           bar: Optional[int] = None) -> str:
    """A table: a text key then counts; with `bar`, the column whose share is drawn."""
    top = max([r[1][bar] for r in rows] + [1]) if bar is not None else 1
    out = [f'<table id="{table_id}"><thead><tr>'
           + ''.join(f'<th>{h}</th>' for h in head)
           + ('<th></th>' if bar is not None else '') + '</tr></thead><tbody>']
    for key, values in rows:
        tds = ''.join(f'<td class="n">{_n(v)}</td>' for v in values)
        if bar is not None:
            tds += (f'<td class="bar"><span style="width:{100 * values[bar] / top:.1f}%">'
                    f'</span></td>')
        out.append(f'<tr data-key="{_text(key)}"><th scope="row" title="{_text(key)}">'
                   f'{_text(_cut(key, TABLE_CHARS))}</th>{tds}</tr>')
    out.append('</tbody></table>')
    return ''.join(out)


def _per_type(summary: dict, gaps: List[Gap]) -> str:
    table = cells(summary['by_hour']) if 'by_hour' in summary else {}
    stopped = any(r.get('not_sent_stopped') for r in summary['by_event'].values())
    head = ['Segment event', 'read', 'dropped', 'sent', 'rejected'] \
        + (['not sent (stopped)'] if stopped else []) \
        + (['files', 'hours with files', 'gaps'] if table else [])
    gap_count = defaultdict(int)
    for gap in gaps:
        for event in gap.events:
            gap_count[event] += 1
    rows = []
    for event, row in summary['by_event'].items():
        values = [row['read'], row['dropped_no_external_user_id'], row['sent'], row['rejected']]
        if stopped:
            values.append(row.get('not_sent_stopped', 0))
        if table:
            per_hour = table.get(event, {})
            values += [sum(c['files'] for c in per_hour.values()),
                       sum(1 for h in per_hour if h != UNDATED), gap_count[event]]
        rows.append((event, values))
    return _table('types', head, rows)


def _balance(summary: dict) -> Tuple[bool, str]:
    """read = dropped + sent + rejected (+ read but not sent, when a run was stopped)."""
    def holds(r):
        return r['read'] == (r['dropped_no_external_user_id'] + r['sent'] + r['rejected']
                             + r.get('not_sent_stopped', 0))
    ok = holds(summary) and all(holds(r) for r in summary['by_event'].values())
    return ok, ('read = dropped + sent + rejected' + (' + not sent (stopped)'
                                                      if summary['not_sent_stopped'] else ''))


def _hour_sums_check(summary: dict) -> Optional[str]:
    """Whether the per-hour counts add up to each type's totals (None when they do)."""
    table = cells(summary['by_hour'])
    differ = []
    for event, row in summary['by_event'].items():
        per_hour = table.get(event, {})
        for key in _TOTALS:
            if sum(c[key] for c in per_hour.values()) != row[key]:
                differ.append(event)
                break
    files = sum(c['files'] for per_hour in table.values() for c in per_hour.values())
    if files != summary['files_read'] + summary['files_rejected']:
        differ.append('files')
    if not differ:
        return None
    return ('the per-hour counts do not add up to the totals for ' + ', '.join(differ[:5])
            + (f' and {len(differ) - 5} more' if len(differ) > 5 else ''))


def _range(summary: dict) -> Optional[Tuple[str, str, int]]:
    if 'by_hour' not in summary:
        return None
    hours = sorted({parse_hour(h) for per_hour in summary['by_hour']['events'].values()
                    for h in per_hour if h != UNDATED})
    if not hours:
        return None
    return hour_key(hours[0]), hour_key(hours[-1]), int((hours[-1] - hours[0]) / HOUR) + 1


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 margin:24px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.sub{color:#57606a;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:110px}
.card .v{display:block;font-size:20px;font-weight:600}.card .l{color:#57606a;font-size:12px}
.card.bad{border-color:#d62728;background:#fff0f0}.card.ok{border-color:#2da44e;background:#f0fff4}
.status{font-weight:600;padding:8px 12px;border-radius:6px;margin:14px 0;display:inline-block}
.status.ok{background:#dafbe1;color:#116329}.status.bad{background:#ffebe9;color:#a40e26}
.note{color:#57606a}.warn{color:#a40e26}
ol#gap-list{padding-left:22px} ol#gap-list li{margin:3px 0}
.badge{display:inline-block;font-size:11px;font-weight:600;color:#fff;border-radius:4px;
 padding:1px 6px;margin-right:6px;vertical-align:1px}
.scroll{overflow-x:auto;border:1px solid #d0d7de;border-radius:6px;padding:6px}
svg text{font:11px system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 fill:#1f2328} svg text.row{text-anchor:end} svg text.total{text-anchor:end;fill:#57606a}
.legend .key{margin-right:14px;white-space:nowrap}
.sw{display:inline-block;width:14px;height:12px;vertical-align:-1px;margin-right:1px}
.sw.hatch{background:repeating-linear-gradient(45deg,#d62728 0 2px,#fde0e0 2px 4px)}
table{border-collapse:collapse;margin:4px 0 8px}
th,td{padding:3px 10px;border-bottom:1px solid #eaeef2;text-align:left}
th[scope=row],li,p,h1{overflow-wrap:anywhere} td.n,thead th{white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums}
td.bar{width:180px}td.bar span{display:block;height:10px;background:#4292c6;border-radius:2px}
.cols{display:flex;flex-wrap:wrap;gap:40px}
"""


def _types_not_read(types: List[str]) -> str:
    """The event type folders the run does not read: never listed, so no file count."""
    if not types:
        return ''
    return ('<p class="note">Event type folders not read (never listed): '
            f'<span id="types-not-read">{len(types)}</span> ('
            + ', '.join(_text(t) for t in types[:12])
            + (', ...' if len(types) > 12 else '') + ').</p>')


def render(summary: dict, source: str = '') -> str:
    """The report page for a checked summary (`check_summary`)."""
    gaps = gaps_from_summary(summary['by_hour']) if 'by_hour' in summary else []
    span = _range(summary)
    balanced, equation = _balance(summary)
    title = 'Backfill report' + (f': {span[0]} to {span[1]} UTC' if span else '')
    sub = [f'{len(summary["by_event"])} event types']
    if span:
        sub.append(f'{span[2]:,} hours')
    if source:
        sub.append(f'summary {_text(source)}')
    sub.append(f'currents-to-segment {__version__}')
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        'style-src \'unsafe-inline\'; img-src data:; base-uri \'none\'; form-action \'none\'">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<title>{_text(title)}</title><style>{_STYLE}</style></head><body>',
        f'<h1>{_text(title)}</h1><p class="sub">{" · ".join(sub)}</p>',
    ]
    cards = [('total-read', summary['read'], 'events read', ''),
             ('total-sent', summary['sent'], 'sent', ''),
             ('total-dropped', summary['dropped_no_external_user_id'],
              'dropped (no external_user_id)', ''),
             ('total-rejected', summary['rejected'], 'rejected',
              ' bad' if summary['rejected'] else ''),
             ('files-read', summary['files_read'], 'files read', ''),
             ('files-skipped', summary['files_skipped'], 'files skipped', ''),
             ('files-rejected', summary['files_rejected'], 'files unreadable',
              ' bad' if summary['files_rejected'] else '')]
    if summary['not_sent_stopped'] or summary['files_not_read_stopped']:
        cards += [('not-sent-stopped', summary['not_sent_stopped'], 'read, not sent (stopped)',
                   ' bad'),
                  ('files-not-read-stopped', summary['files_not_read_stopped'],
                   'files not read (stopped)', ' bad')]
    if 'by_hour' in summary:
        cards.append(('gap-count', len(gaps), 'gaps', ' bad' if gaps else ' ok'))
    parts.append('<div class="cards">' + ''.join(
        f'<div class="card{cls}"><span class="v" id="{cid}">{_n(v)}</span>'
        f'<span class="l">{label}</span></div>' for cid, v, label, cls in cards) + '</div>')
    problems = []
    if not balanced:
        problems.append(f'the summary does not balance ({equation})')
    if gaps:
        problems.append(f'{len(gaps)} gap{"s" if len(gaps) != 1 else ""} in coverage')
    if summary['rejected']:
        problems.append(f'{_n(summary["rejected"])} events rejected (see rejects by reason)')
    if summary['not_sent_stopped'] or summary['files_not_read_stopped']:
        problems.append('the run was stopped: rerun with --resume')
    status = ('<p class="status bad" id="status">' + _text('; '.join(problems)) + '</p>'
              if problems else
              f'<p class="status ok" id="status">Balanced ({equation}); every hour of every '
              f'type covered; nothing rejected</p>')
    parts.append(status)
    parts.append(f'<p class="note" id="balance">Balance: {equation}: '
                 f'{"OK" if balanced else "MISMATCH"}</p>')

    parts.append('<h2>Gaps</h2>')
    if 'by_hour' not in summary:
        parts.append('<p class="note">Not known: this summary has no per-hour counts.</p>')
    elif not gaps:
        parts.append('<p id="no-gaps">None: every type has a file in every hour it is expected '
                     'to, and no hour had all its events rejected or all its files '
                     'unreadable.</p>')
    else:
        parts.append('<ol id="gap-list">' + ''.join(
            f'<li class="gap" data-kind="{gap.kind}" data-first="{hour_key(gap.first)}" '
            f'data-last="{hour_key(gap.last)}"><span class="badge" style="background:'
            f'{KIND_COLOURS[gap.kind]}">{KIND_LABELS[gap.kind]}</span>{_text(gap.text)}</li>'
            for gap in gaps) + '</ol>')
    parts.append('<p class="note">A gap: hours of a type with no file between hours with '
                 'files, or before the end (stops) or after the start (starts late) of the '
                 'range, counted when the type would have had at least 12 events in those '
                 'hours at its average rate; and hours whose events were all rejected or whose '
                 'files were all unreadable.</p>')

    parts.append(f'<h2>Coverage: events read by event type and {_unit(span)}</h2>')
    if 'by_hour' in summary:
        parts.append(_legend(_unit(span)))
        check = _hour_sums_check(summary)
        if check:
            parts.append(f'<p class="warn" id="hour-sums">Warning: {_text(check)}.</p>')
    parts.append(f'<div class="scroll">{_heatmap(summary, gaps)}</div>')

    parts.append('<h2>Per event type</h2>')
    parts.append(_per_type(summary, gaps))
    reasons = sorted(summary['rejected_by_reason'].items(), key=lambda kv: (-kv[1], kv[0]))
    skipped = sorted(summary['files_skipped_by_reason'].items(), key=lambda kv: (-kv[1], kv[0]))
    statuses = sorted(summary['requests_by_status'].items(), key=lambda kv: (-kv[1], kv[0]))
    parts.append('<div class="cols"><div><h2>Rejects by reason</h2>'
                 + (_table('rejects', ['reason', 'rejects'],
                           [(k, [v]) for k, v in reasons], bar=0)
                    if reasons else '<p class="note">None.</p>')
                 + '<h2>Files skipped by reason</h2>'
                 + (_table('skipped', ['reason', 'files'], [(k, [v]) for k, v in skipped], bar=0)
                    if skipped else '<p class="note">None.</p>')
                 + _types_not_read(summary.get('event_types_not_selected') or [])
                 + '</div><div><h2>Requests to Segment</h2>'
                 + f'<p><span id="requests">{_n(summary["requests"])}</span> requests, '
                 + f'<span id="requests-retried">{_n(summary["requests_retried"])}</span> '
                 + 'retried.</p>'
                 + (_table('statuses', ['answer', 'requests'], [(k, [v]) for k, v in statuses],
                           bar=0) if statuses else '<p class="note">No request made.</p>')
                 + '</div></div>')
    parts.append('</body></html>')
    return '\n'.join(parts)


def _unit(span: Optional[Tuple[str, str, int]]) -> str:
    return unit_of(parse_hour(span[0]), parse_hour(span[1])) if span else 'hour'


# ------------------------------------------------------------------------- the sub-command
def _add_report_args(parser) -> None:
    parser.add_argument('--summary', help='The summary JSON a run wrote (--summary_output): '
                                          'local path, gs://, s3:// or azfs://')
    parser.add_argument('--out', help='Where to write the report (.html): local path, gs://, '
                                      's3:// or azfs://')


def _store_option_classes():
    from apache_beam.options.pipeline_options import AzureOptions, GoogleCloudOptions, S3Options
    return (S3Options, AzureOptions, GoogleCloudOptions)


def _parser():
    from pipeline.options import _RefusingParser
    parser = _RefusingParser(prog=PROG, add_help=False, allow_abbrev=False)
    _add_report_args(parser)
    for cls in _store_option_classes():
        cls._add_argparse_args(parser)
    return parser


def print_report_help(out) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Draw the HTML report of a run from the summary it wrote '
                    '(--summary_output): coverage by hour and event type, gaps, totals, '
                    'rejects and request outcomes, in one self-contained file.',
        epilog="Beam's store options (--s3_endpoint_url, --s3_region_name, "
               '--azure_connection_string without a secret, --project, ...) are accepted for '
               'gs://, s3:// and azfs:// paths; credentials come from the usual environment. '
               'Exit status: 0 written; 2 bad arguments or not a summary; 1 failed.')
    _add_report_args(parser)
    parser.print_help(out)


def run_report(argv: List[str], out=None) -> int:
    from pipeline.cli import EXIT_FAILED, EXIT_OK, error, usage_error
    from pipeline.options import option_names, refuse_store_secrets, unknown_option_error
    out = out or sys.stdout
    if '-h' in argv or '--help' in argv:
        print_report_help(out)
        return EXIT_OK
    try:
        refuse_store_secrets(argv)
        parser = _parser()
        known, unknown = parser.parse_known_args(argv)
        message = unknown_option_error(unknown, option_names(parser))
        if message:
            raise UsageError(message)
        if not known.summary or not known.out:
            raise UsageError('give --summary S.json (a summary a run wrote) and --out '
                             'FILE.html')
        _store_setup(argv, [known.summary, known.out])
        summary = read_summary(known.summary)
        check_writable(known.out, '--out')
    except UsageError as exc:
        return usage_error(exc)
    try:
        size = write_report(known.out, render(summary, known.summary))
    except Exception as exc:   # noqa: BLE001 - one line, never a traceback
        error(f'cannot write --out {known.out}: {_reason(exc)}')
        return EXIT_FAILED
    gaps = len(gaps_from_summary(summary['by_hour'])) if 'by_hour' in summary else None
    print(f'report written: {known.out} ({size:,} bytes; '
          + ('no per-hour counts in this summary' if gaps is None else
             f'{gaps} gap{"s" if gaps != 1 else ""}') + ')', file=out)
    return EXIT_OK


def _store_setup(argv: List[str], paths: List[str]) -> None:
    """Beam's S3/Azure filesystems take their endpoint and region from pipeline options."""
    if not any('://' in p for p in paths):
        return
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _add_report_args(own)
    FileSystems.set_options(PipelineOptions(own.parse_known_args(argv)[1]))
