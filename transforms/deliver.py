"""Deliver: map (where records are given) → batch → send → rejects, the one path to Segment.

A run and `replay` both deliver through this composite, so what reaches Segment, and what is
kept when it cannot, is decided in one place.
"""
from typing import Any, Dict, Optional

import apache_beam as beam

from transforms.batch import BatchMessages
from transforms.map import MapToSegment
from transforms.progress import LiveChannel
from transforms.rejects import WriteRejects
from transforms.send import SendToSegment

EVENTS, MESSAGES, REJECTS = 'events', 'messages', 'rejects'


class DeliverToSegment(beam.PTransform):
    """{'events': CurrentsEvent, 'messages': SegmentMessage, 'rejects': Reject} → reject files.

    Every key is optional. Events are mapped, messages (already mapped, e.g. replayed) join
    them, all are batched within Segment's limits and sent by `sender` (or written, in a dry
    run); the rejects of every step, with those given, become JSON Lines under
    `rejects_prefix`. Returns the rejects step's tallies (transforms/manifest.py), each emitted
    once its bundle's rejects are durable, so a later step can depend on them.
    """

    def __init__(self, sender: beam.DoFn, rejects_prefix: str, message_id_prefix: str = '',
                 library_version: str = '', integrations: Optional[Dict[str, Any]] = None,
                 mapping: str = 'classic', include_anonymous: bool = False,
                 live: LiveChannel = LiveChannel(), input_id: Optional[str] = None):
        super().__init__()
        self.sender = sender
        self.rejects_prefix = rejects_prefix
        self.mapping = (message_id_prefix, library_version, integrations, mapping,
                        include_anonymous, live)
        self.live = live
        self.input_id = input_id
        self.profile = (mapping, bool(include_anonymous))   # recorded in file rejects

    def expand(self, inputs):
        pipeline = next(iter(inputs.values())).pipeline
        rejects = [inputs[REJECTS]] if REJECTS in inputs else []
        messages = [inputs[MESSAGES]] if MESSAGES in inputs else []
        if EVENTS in inputs:
            mapped, map_rejects = inputs[EVENTS] | 'Map' >> MapToSegment(*self.mapping)
            messages.append(mapped)
            rejects.append(map_rejects)
        if len(messages) == 1:
            messages = messages[0]
        else:
            messages = tuple(messages) | 'AllMessages' >> beam.Flatten(pipeline=pipeline)
        batches, batch_rejects = messages | 'Batch' >> BatchMessages()
        send_rejects = batches | 'Send' >> SendToSegment(self.sender)
        return (tuple(rejects) + (batch_rejects, send_rejects)
                | 'Rejects' >> WriteRejects(self.rejects_prefix, self.input_id, self.live,
                                            self.profile))
