"""Rejects: every undeliverable event or unreadable file, as replayable JSON Lines (SPEC §5)."""
from typing import Optional

import apache_beam as beam
from apache_beam.transforms import window as beam_window

from transforms import counts
from transforms.model import Reject


def count_and_serialize(reject: Reject, input_id: Optional[str] = None) -> str:
    """Counts a reject for the summary (per event type and reason) and makes its JSON line.

    Each line names the run's input, so replay re-reads only files under it."""
    if input_id and reject.input is None:
        reject = reject._replace(input=input_id)
    if reject.is_file:
        counts.counter(counts.REASON, reject.reason).inc()
    else:
        counts.counter(counts.REJECTED, reject.event_type or '').inc()
        counts.counter(counts.REASON, reject.reason).inc()
    return reject.to_json()


class WriteRejects(beam.PTransform):
    """Flattens the rejects of every step and writes them under --rejects (local or gs://)."""

    def __init__(self, file_path_prefix: str, input_id: Optional[str] = None):
        super().__init__()
        self.file_path_prefix = file_path_prefix
        self.input_id = input_id

    def expand(self, reject_pcolls):
        """Returns the names of the files written (empty when there were no rejects)."""
        return (reject_pcolls
                | 'AllRejects' >> beam.Flatten()
                | 'GlobalWindow' >> beam.WindowInto(beam_window.GlobalWindows())
                | 'ToJsonLine' >> beam.Map(count_and_serialize, self.input_id)
                | 'WriteJsonLines' >> beam.io.WriteToText(
                    self.file_path_prefix, file_name_suffix='.jsonl', skip_if_empty=True))
