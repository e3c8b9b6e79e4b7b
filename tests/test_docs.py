"""The README's event tables are the code's tables, for both mapping profiles."""
from pathlib import Path

from pipeline.docs import MARKERS, current_event_table, event_table, rewrite

README = Path(__file__).resolve().parent.parent / 'README.md'


def _between(text, start, end):
    begin = text.index(start) + len(start)
    return text[begin:text.index(end)]


def test_readme_event_table_matches_the_mapping_table():
    text = README.read_text()
    start = text.index('<!-- events:start -->\n') + len('<!-- events:start -->\n')
    end = text.index('<!-- events:end -->')
    assert text[start:end].strip() == event_table().strip()


def test_readme_current_table_matches_the_current_profile():
    text = README.read_text()
    table = _between(text, *MARKERS['current']).strip()
    assert table == current_event_table().strip()
    rows = [line for line in table.splitlines() if line.startswith('| ') and
            not line.startswith('| Segment')]
    assert len(rows) == 80
    assert '| Sent | users.messages.line.Send |' in table
    assert '| Sent | users.messages.rcs.Send |' in table
    assert "the record's `name`" in table


def test_docs_rewrite_is_a_fixed_point_of_the_readme():
    """`python -m pipeline.docs --write README.md` would change nothing."""
    text = README.read_text()
    assert rewrite(text) == text
