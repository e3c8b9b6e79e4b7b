"""The README's event table is the code's table."""
from pathlib import Path

from pipeline.docs import event_table

README = Path(__file__).resolve().parent.parent / 'README.md'


def test_readme_event_table_matches_the_mapping_table():
    text = README.read_text()
    start = text.index('<!-- events:start -->\n') + len('<!-- events:start -->\n')
    end = text.index('<!-- events:end -->')
    assert text[start:end].strip() == event_table().strip()
