"""The same job with Segment's official Python library (segment-analytics-python), tuned for bulk.

fastavro over the listed files -> the project's MessageMapper (so the same events, fields and
messageIds as the pipeline) -> `Client.track(...)`; the library batches (up to `--upload-size`
messages, its own 475 kB cap) and posts from its consumer thread(s). `flush()` + `join()` at the
end. The producer waits while the library's queue is full instead of letting `track` drop events
(the library returns False and discards the event when its queue is full).

    SEGMENT_WRITE_KEY=... python -m bench.official_client --input DIR --host http://127.0.0.1:PORT

Prints one JSON line and exits 0 only if the library reported no error.
"""
import argparse
import datetime
import logging
import os
import sys
import threading
import time

import pipeline
from bench.corpus import iter_records, list_files, report
from transforms.mapping import DROPPED, Invalid, MessageMapper

DEFAULT_THREADS = 2          # 1 and 2 measured within noise of each other; 2 slightly ahead
DEFAULT_UPLOAD_SIZE = 2500          # Segment's per-request maximum
DEFAULT_QUEUE = 10_000
DEFAULT_UPLOAD_INTERVAL = 0.5

_UTC = datetime.timezone.utc
_from_ts = datetime.datetime.fromtimestamp


def run(input_dir: str, host: str, write_key: str, threads: int = DEFAULT_THREADS,
        upload_size: int = DEFAULT_UPLOAD_SIZE, max_queue_size: int = DEFAULT_QUEUE,
        upload_interval: float = DEFAULT_UPLOAD_INTERVAL, message_id_prefix: str = '') -> dict:
    from segment.analytics import Client   # imported here: `--help` works without the extra

    errors = []
    lock = threading.Lock()

    def on_error(exc, batch):
        with lock:
            errors.append((f'{type(exc).__name__}: {exc}'[:300], len(batch)))

    client = Client(write_key, host=host, upload_size=upload_size, max_queue_size=max_queue_size,
                    upload_interval=upload_interval, thread=threads, gzip=False,
                    on_error=on_error, max_retries=5)
    files, skipped = list_files(input_dir)
    to_message = MessageMapper(message_id_prefix, pipeline.__version__).to_message
    track = client.track
    full = client.queue.full
    read = dropped = rejected = queued = refused = waits = 0
    for event_type, record in iter_records(files):
        read += 1
        try:
            m = to_message(event_type, record)
        except Invalid:
            rejected += 1
            continue
        if m is DROPPED:
            dropped += 1
            continue
        timestamp = _from_ts(record['time'], _UTC)
        while True:
            if full():                 # back-pressure instead of the library dropping the event
                waits += 1
                time.sleep(0.002)
                continue
            ok, _ = track(user_id=m['userId'], event=m['event'], properties=m['properties'],
                          context=m['context'], timestamp=timestamp, message_id=m['messageId'],
                          anonymous_id=m.get('anonymousId'))
            if ok:
                queued += 1
                break
            refused += 1
    client.flush()
    client.join()
    failed = sum(n for _, n in errors)
    return {'read': read, 'dropped': dropped, 'rejected': rejected, 'queued': queued,
            'sent': queued - failed, 'failed_messages': failed, 'errors': [e for e, _ in errors[:5]],
            'files_read': len(files), 'files_skipped': skipped, 'queue_full_waits': waits,
            'track_refused': refused, 'threads': threads, 'upload_size': upload_size,
            'max_queue_size': max_queue_size, 'upload_interval': upload_interval}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bench.official_client',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--input', required=True, help='local Currents export folder')
    parser.add_argument('--host', required=True, help='e.g. http://127.0.0.1:PORT (the library adds /v1/batch)')
    parser.add_argument('--threads', type=int, default=DEFAULT_THREADS, help='consumer threads (1 or 2)')
    parser.add_argument('--upload-size', type=int, default=DEFAULT_UPLOAD_SIZE)
    parser.add_argument('--max-queue-size', type=int, default=DEFAULT_QUEUE)
    parser.add_argument('--upload-interval', type=float, default=DEFAULT_UPLOAD_INTERVAL)
    parser.add_argument('--message-id-prefix', default='')
    parser.add_argument('--summary-output', help='also write the JSON summary here')
    args = parser.parse_args(argv)
    key = os.environ.get('SEGMENT_WRITE_KEY', '').strip()
    if not key:
        print('bench.official_client: error: set SEGMENT_WRITE_KEY', file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    summary = run(args.input, args.host, key, args.threads, args.upload_size, args.max_queue_size,
                  args.upload_interval, args.message_id_prefix)
    report(summary, args.summary_output)
    return 0 if not summary['failed_messages'] else 1


if __name__ == '__main__':
    sys.exit(main())
