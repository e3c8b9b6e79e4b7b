"""Rejects: every undeliverable event or unreadable file, as replayable JSON Lines (CONTRACT §5)."""
import apache_beam as beam
from apache_beam.transforms import window as beam_window

from transforms import counts
from transforms.model import Reject


def count_and_serialize(reject: Reject) -> str:
    """Counts a reject for the summary (per event type and reason) and makes its JSON line."""
    if reject.is_file:
        counts.counter(counts.REASON, reject.reason).inc()
    else:
        counts.counter(counts.REJECTED, reject.event_type or '').inc()
        counts.counter(counts.REASON, reject.reason).inc()
    return reject.to_json()


class WriteRejects(beam.PTransform):
    """Flattens the rejects of every step and writes them under --rejects (local or gs://)."""

    def __init__(self, file_path_prefix: str):
        super().__init__()
        self.file_path_prefix = file_path_prefix

    def expand(self, reject_pcolls):
        """Returns the names of the files written (empty when there were no rejects)."""
        return (reject_pcolls
                | 'AllRejects' >> beam.Flatten()
                | 'GlobalWindow' >> beam.WindowInto(beam_window.GlobalWindows())
                | 'ToJsonLine' >> beam.Map(count_and_serialize)
                | 'WriteJsonLines' >> beam.io.WriteToText(
                    self.file_path_prefix, file_name_suffix='.jsonl', skip_if_empty=True))
