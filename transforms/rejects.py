"""Rejects: every undeliverable event or unreadable file, as replayable JSON Lines (CONTRACT §5)."""
from typing import Optional, Tuple

import apache_beam as beam
from apache_beam.transforms import window as beam_window

from transforms import counts, progress
from transforms.model import Reject
from transforms.progress import LiveChannel


def count_and_serialize(reject: Reject, input_id: Optional[str] = None,
                        profile: Optional[Tuple[str, bool]] = None) -> str:
    """Counts a reject for the summary (per event type and reason) and makes its JSON line.

    Each line names the run's input, so replay re-reads only files under it; a file's line
    also names the run's mapping `profile` (name, include_anonymous), so replay maps its
    records as the run would have."""
    if input_id and reject.input is None:
        reject = reject._replace(input=input_id)
    if profile and reject.is_file and reject.mapping is None:
        reject = reject._replace(mapping=profile[0], include_anonymous=profile[1])
    if reject.is_file:
        counts.counter(counts.REASON, reject.reason).inc()
    else:
        counts.counter(counts.REJECTED, reject.event_type or '').inc()
        counts.counter(counts.REASON, reject.reason).inc()
    return reject.to_json()


class CountRejectsFn(beam.DoFn):
    """count_and_serialize, also reporting live rejected events to the launcher's progress."""

    reporter, stop = progress.NO_REPORTER, progress.NO_STOP   # until setup()

    def __init__(self, input_id: Optional[str] = None, live: LiveChannel = LiveChannel(),
                 profile: Optional[Tuple[str, bool]] = None):
        self.input_id = input_id
        self.live = live
        self.profile = profile

    def setup(self):
        self.reporter = self.live.reporter()

    def process(self, reject: Reject):
        if not reject.is_file:
            self.reporter.add(progress.REJECTED)
        return [count_and_serialize(reject, self.input_id, self.profile)]


class WriteRejects(beam.PTransform):
    """Flattens the rejects of every step and writes them under --rejects (local or gs://)."""

    def __init__(self, file_path_prefix: str, input_id: Optional[str] = None,
                 live: LiveChannel = LiveChannel(), profile: Optional[Tuple[str, bool]] = None):
        super().__init__()
        self.file_path_prefix = file_path_prefix
        self.input_id = input_id
        self.live = live
        self.profile = profile

    def expand(self, reject_pcolls):
        """Returns the names of the files written (empty when there were no rejects)."""
        return (reject_pcolls
                | 'AllRejects' >> beam.Flatten()
                | 'GlobalWindow' >> beam.WindowInto(beam_window.GlobalWindows())
                | 'ToJsonLine' >> beam.ParDo(CountRejectsFn(self.input_id, self.live, self.profile))
                | 'WriteJsonLines' >> beam.io.WriteToText(
                    self.file_path_prefix, file_name_suffix='.jsonl', skip_if_empty=True))
