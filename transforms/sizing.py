"""Segment's size limits and a packer that fills batches as full as they allow (CONTRACT §4).

Pure code: measured on the exact bytes sent, checked before sending because Segment answers
some violations (over 2,500 messages) with a silent 200.
"""
from typing import List, Optional, Tuple

from transforms.model import SegmentBatch, SegmentMessage

MAX_MESSAGE_BYTES = 32_000
MAX_BODY_BYTES = 500_000
MAX_BATCH_MESSAGES = 2_500
SENT_AT_EXAMPLE = '2024-05-01T12:00:00.000Z'  # every sentAt has this length
ENVELOPE_BYTES = len(SegmentBatch(()).body(SENT_AT_EXAMPLE))


class BatchPacker:
    """Adds messages in order; hands back a full batch whenever the next one would not fit."""

    def __init__(self, max_body_bytes: int = MAX_BODY_BYTES,
                 max_messages: int = MAX_BATCH_MESSAGES):
        if max_body_bytes < ENVELOPE_BYTES + MAX_MESSAGE_BYTES:
            raise ValueError('max_body_bytes too small to hold one message')
        self.budget = max_body_bytes - ENVELOPE_BYTES
        self.max_messages = max_messages
        self.items: List[SegmentMessage] = []
        self.size = 0

    def add(self, message: SegmentMessage) -> Optional[Tuple[SegmentMessage, ...]]:
        """Adds a message (at most MAX_MESSAGE_BYTES); returns the batch it closed, if any."""
        cost = len(message.payload) + (1 if self.items else 0)  # 1 = the comma
        full = None
        if self.items and (self.size + cost > self.budget or len(self.items) >= self.max_messages):
            full = self.flush()
            cost = len(message.payload)
        self.items.append(message)
        self.size += cost
        return full

    def flush(self) -> Optional[Tuple[SegmentMessage, ...]]:
        if not self.items:
            return None
        out = tuple(self.items)
        self.items = []
        self.size = 0
        return out


def pack(messages, max_body_bytes=MAX_BODY_BYTES,
         max_messages=MAX_BATCH_MESSAGES) -> List[Tuple[SegmentMessage, ...]]:
    """All messages packed into batches (for code outside Beam, e.g. tests and replay)."""
    packer = BatchPacker(max_body_bytes, max_messages)
    batches = [b for b in (packer.add(m) for m in messages) if b]
    rest = packer.flush()
    return batches + [rest] if rest else batches
