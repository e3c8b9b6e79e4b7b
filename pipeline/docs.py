"""Renders the README's event table from the mapping table, so docs and code cannot drift.

    python -m pipeline.docs      # prints the Markdown table
"""
from transforms.events import COMMON_PROPERTIES, EVENTS


def event_table() -> str:
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


if __name__ == '__main__':
    print(event_table())
