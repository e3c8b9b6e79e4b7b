"""The docs say what the code does: their commands run, their links resolve, their tables are the
code's.

- Every fenced ```bash block marked `<!-- runnable -->` on the line before it (README.md and
  docs/*.md) is run, in order, by bash in a fresh folder holding a generated Currents sample in
  `currents/` (12 hours from 2024-05-01-00, with the sample's deliberate gaps), with
  SEGMENT_WRITE_KEY set and the local Segment-compatible receiver standing in for Segment: a
  `currents-to-segment` first on PATH sends to the receiver whatever `--segment_region` or
  `--segment_endpoint` the block names. `<!-- runnable exit=N -->` expects exit status N. A plain
  fenced block right after it marked `<!-- output -->` is what the commands print: each of its
  lines must appear in their output, in order, `...` standing for any text.
- Every relative link between README.md and docs/ (files and #anchors) resolves.
- The mapping tables in docs/mapping.md are the code's (pipeline/docs.py).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.docs import MARKERS, MAPPING_DOC, current_event_table, event_table, rewrite

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / MAPPING_DOC
DOCS = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))
KEY = 'wk_docs-test-key-never-printed'
SAMPLE_START, SAMPLE_HOURS = '2024-05-01-00', 12
# Written by the benchmarks (bench/run.py, bench/history.py): linked before their first run.
GENERATED = {ROOT / 'bench' / 'RESULTS.md', ROOT / 'bench' / 'HISTORY.md'}

RUNNABLE = re.compile(r'^<!-- runnable(?: exit=(\d+))? -->\n```bash\n(.*?)^```\n'
                      r'(?:\n<!-- output -->\n```\n(.*?)^```$)?', re.MULTILINE | re.DOTALL)
FENCE = re.compile(r'^```.*?^```$', re.MULTILINE | re.DOTALL)
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


# --------------------------------------------------------------------------- runnable blocks
class Block:
    def __init__(self, doc: Path, line: int, code: str, exit_status: int, output: str = ''):
        self.doc, self.line, self.code, self.exit_status = doc, line, code, exit_status
        self.output = output

    def __repr__(self):
        return f'{self.doc.relative_to(ROOT)}:{self.line}'


def runnable_blocks(doc: Path):
    text = doc.read_text()
    return [Block(doc, text.count('\n', 0, m.start()) + 2, m.group(2), int(m.group(1) or 0),
                  m.group(3) or '') for m in RUNNABLE.finditer(text)]


def missing_output(expected: str, output: str):
    """The first expected line not found in `output` after the previous one (None: all are)."""
    lines, at = output.splitlines(), 0
    for want in expected.splitlines():
        pattern = re.compile('.*'.join(re.escape(part) for part in want.split('...')))
        for i in range(at, len(lines)):
            if pattern.fullmatch(lines[i]):
                at = i + 1
                break
        else:
            return want
    return None


def test_expected_output_is_matched_line_by_line_in_order():
    output = 'a: 1\nfiles to read: 17 (236,565 bytes)\nb\nlast line'
    assert missing_output('files to read: 17 (...)\nlast line', output) is None
    assert missing_output('last line\nb', output) == 'b'              # out of order
    assert missing_output('files to read: 18 (...)', output) == 'files to read: 18 (...)'
    assert missing_output('b', 'ab') == 'b'                            # whole lines only


def test_runnable_blocks_are_found_and_use_the_command():
    """The marker is found where it is written, and a runnable block calls the tool only as
    `currents-to-segment` (the name the test routes to the local receiver)."""
    found = {doc.name: runnable_blocks(doc) for doc in DOCS}
    assert len(found['README.md']) >= 6
    for blocks in found.values():
        for block in blocks:
            assert 'python -m pipeline' not in block.code and 'run_local.sh' not in block.code, \
                block
    text = '\n'.join(doc.read_text() for doc in DOCS)
    markers = re.findall(r'^<!-- (runnable|output)', text, re.MULTILINE)
    assert markers.count('runnable') == sum(len(b) for b in found.values())
    assert markers.count('output') == sum(bool(b.output) for v in found.values() for b in v)


# Runs the tool as `currents-to-segment` would, but always to the local receiver.
ROUTER = '''import os, sys
args, out, i = sys.argv[1:], [], 0
while i < len(args):
    flag = args[i].split('=', 1)[0]
    if flag in ('--segment_region', '--segment_endpoint'):
        i += 1 if '=' in args[i] else 2
        continue
    out.append(args[i])
    i += 1
if out[:1] != ['report']:
    out += ['--segment_endpoint', os.environ['DOCS_TEST_ENDPOINT']]
os.execv(sys.executable, [sys.executable, '-m', 'pipeline', *out])
'''


@pytest.fixture
def sandbox(tmp_path):
    """A folder with `currents/` (a generated sample), the receiver, and the command routed."""
    from devtools.receiver import SegmentReceiver
    from devtools.sample import deliberate_gaps, generate
    work = tmp_path / 'work'
    generate(work, events=3000, seed=1, start_hour=SAMPLE_START, hours=SAMPLE_HOURS,
             gaps=deliberate_gaps(SAMPLE_HOURS))
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    router = bin_dir / 'currents-to-segment'
    router.write_text(f'#!{sys.executable}\n{ROUTER}')
    router.chmod(0o755)
    with SegmentReceiver(write_key=KEY) as receiver:
        env = dict(os.environ, SEGMENT_WRITE_KEY=KEY, DOCS_TEST_ENDPOINT=receiver.url,
                   PYTHONPATH=str(ROOT),
                   PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                                         os.environ.get('PATH', '')]))
        yield work, env, receiver


@pytest.mark.slow
@pytest.mark.parametrize('doc', [d for d in DOCS if runnable_blocks(d)],
                         ids=lambda d: str(d.relative_to(ROOT)))
def test_runnable_blocks_run(doc, sandbox):
    work, env, receiver = sandbox
    for block in runnable_blocks(doc):
        done = subprocess.run(['bash', '-euo', 'pipefail', '-c', block.code], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=300)
        output = done.stdout
        assert done.returncode == block.exit_status, f'{block}: exit {done.returncode}\n{output}'
        assert 'Traceback' not in output, f'{block}\n{output}'
        assert KEY not in output, block
        missing = missing_output(block.output, output)
        assert missing is None, f'{block}: expected output line not printed: {missing}\n{output}'
    if doc.name == 'README.md':
        assert receiver.stats()['accepted'] > 0   # the recipes reached the stand-in Segment


# ------------------------------------------------------------------------------------ links
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation out, spaces to hyphens."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(doc: Path):
    """The anchors of a file's headings; a repeated heading gets -1, -2, ..."""
    text = FENCE.sub('', doc.read_text())
    seen, found = {}, set()
    for heading in re.findall(r'^#{1,6} +(.+?) *#*$', text, re.MULTILINE):
        slug_ = slug(heading)
        n = seen.get(slug_, 0)
        seen[slug_] = n + 1
        found.add(slug_ if n == 0 else f'{slug_}-{n}')
    return found


def relative_links(doc: Path):
    text = FENCE.sub('', doc.read_text())
    for target in LINK.findall(text):
        if not re.match(r'[a-z]+:', target):
            yield target


def test_anchors_follow_githubs_rule(tmp_path):
    assert slug('Exit statuses') == 'exit-statuses'
    assert slug('Keeping Segment fed: `--since_last_run` and `--follow`') == \
        'keeping-segment-fed---since_last_run-and---follow'
    assert slug("What's in a reject (JSON Lines)") == 'whats-in-a-reject-json-lines'
    doc = tmp_path / 'x.md'
    doc.write_text('# Run\n\n```bash\n# not a heading\n```\n\n## Run\n')
    assert anchors(doc) == {'run', 'run-1'}


@pytest.mark.parametrize('doc', DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in relative_links(doc):
        path, _, anchor = target.partition('#')
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.exists() and linked not in GENERATED:
            broken.append(f'{target}: no such file')
        elif anchor and linked.suffix == '.md' and linked.exists() \
                and anchor not in anchors(linked):
            broken.append(f'{target}: no heading #{anchor}')
    assert not broken, f'{doc.relative_to(ROOT)}: ' + '; '.join(broken)


def test_every_doc_is_reachable_from_the_readme():
    linked = {(ROOT / t.partition('#')[0]).resolve() for t in relative_links(ROOT / 'README.md')}
    assert set(sorted((ROOT / 'docs').glob('*.md'))) <= linked


# --------------------------------------------------------------------------- mapping tables
def _between(text, start, end):
    begin = text.index(start) + len(start)
    return text[begin:text.index(end)]


def test_mapping_doc_classic_table_matches_the_mapping_table():
    assert _between(MAPPING.read_text(), *MARKERS['classic']).strip() == event_table().strip()


def test_mapping_doc_current_table_matches_the_current_profile():
    table = _between(MAPPING.read_text(), *MARKERS['current']).strip()
    assert table == current_event_table().strip()
    rows = [line for line in table.splitlines() if line.startswith('| ') and
            not line.startswith('| Segment')]
    assert len(rows) == 80
    assert '| Sent | users.messages.line.Send |' in table
    assert '| Sent | users.messages.rcs.Send |' in table
    assert "the record's `name`" in table


def test_docs_rewrite_is_a_fixed_point_of_the_mapping_doc():
    """`python -m pipeline.docs --write docs/mapping.md` would change nothing."""
    text = MAPPING.read_text()
    assert rewrite(text) == text
