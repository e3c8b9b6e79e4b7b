"""Renders the event tables of docs/mapping.md from the mapping tables, so docs and code cannot
drift (tests/test_docs.py checks the file is what this would write).

    python -m pipeline.docs                          # prints both tables (classic, then current)
    python -m pipeline.docs --write docs/mapping.md  # rewrites them in place between their markers
"""
import argparse
import sys

from transforms.events import COMMON_PROPERTIES, EVENTS
from transforms.profiles import CURRENT_EVENTS, CUSTOM_EVENT_ROW

MAPPING_DOC = 'docs/mapping.md'
# Markers in MAPPING_DOC: (start, end) per table.
MARKERS = {
    'classic': ('<!-- events:start -->\n', '<!-- events:end -->'),
    'current': ('<!-- events-current:start -->\n', '<!-- events-current:end -->'),
}


def event_table() -> str:
    """The `classic` profile's table."""
    lines = ['| Segment `event` | Currents event type | event-specific properties '
             '(Segment name <- Avro field) | `context.traits.email` |',
             '|---|---|---|---|']
    for spec in EVENTS:
        props = ', '.join(name if name == field else f'{name} <- {field}'
                          for name, field in spec.properties)
        lines.append(f'| {spec.segment_event} | {spec.currents_type} | {props} | '
                     f'{"yes" if spec.is_email else ""} |')
    lines.append('')
    lines.append('Common properties (each only where the record has a non-null value): '
                 + ', '.join(f'`{p}`' for p in COMMON_PROPERTIES) + '.')
    return '\n'.join(lines)


def current_event_table() -> str:
    """The `current` profile's table: every property and context path of every type."""
    lines = ['| Segment `event` | Currents event type | context (path <- Avro field) | '
             'properties (Segment name <- Avro field) |',
             '|---|---|---|---|']
    for spec in CURRENT_EVENTS:
        event = spec.segment_event if spec.segment_event is not None else \
            f'the record\'s `name` (summary row "{CUSTOM_EVENT_ROW}")'
        context = ', '.join(f'{path} <- {field}' for path, field in spec.context)
        props = ', '.join((name if name == field else f'{name} <- {field}')
                          + ('*' if name in spec.absent_from_writer_schema else '')
                          for name, field in spec.properties)
        lines.append(f'| {event} | {spec.currents_type} | {context} | {props} |')
    lines.append('')
    lines.append('\\* documented by Braze but absent from the type\'s current writer schema: '
                 'sent if a future schema adds the field.')
    return '\n'.join(lines)


TABLES = {'classic': event_table, 'current': current_event_table}


def rewrite(text: str) -> str:
    """A document's text with both tables regenerated between their markers."""
    for profile, (start, end) in MARKERS.items():
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f'{head}{start}{TABLES[profile]()}\n{end}{tail}'
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m pipeline.docs',
                                     description='Print the event tables, or rewrite them in a document.')
    parser.add_argument('--write', metavar='FILE',
                        help=f'rewrite the tables between their markers in FILE ({MAPPING_DOC})')
    args = parser.parse_args(argv)
    if args.write:
        with open(args.write, encoding='utf-8') as f:
            text = f.read()
        with open(args.write, 'w', encoding='utf-8') as f:
            f.write(rewrite(text))
        return 0
    for profile, render in TABLES.items():
        print(f'Mapping profile `{profile}`:\n\n{render()}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
