"""The same job as the pipeline, in plain single-process Python, written to be fast.

fastavro over the listed files -> the project's MessageMapper + serialize -> size-bounded batches
with the project's BatchPacker -> POST with Basic auth on one pooled requests.Session. Requests
overlap with decoding through a small thread pool (`--in-flight`, 1 = post synchronously).
Simple retries only (connection errors, 429, 5xx); anything else fails the run.

Because it calls the project's own mapping, serializer and packer, the reference gets faster
when those do: the pipeline/reference ratio measures what the pipeline adds around them.

    SEGMENT_WRITE_KEY=... python -m bench.reference --input DIR --endpoint URL [--in-flight N]

Prints one JSON line (read, dropped, sent, rejected, requests, retries) and exits 0 only if
every request ended in 2xx.
"""
import argparse
import gc
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from requests.adapters import HTTPAdapter

import pipeline
from bench.corpus import iter_records, list_files, report
from pipeline.startup import COLLECTOR_THRESHOLDS
from transforms.mapping import DROPPED, Invalid, MessageMapper, serialize
from transforms.model import SegmentBatch, SegmentMessage
from transforms.segment_client import basic_auth, sent_at_now
from transforms.sizing import MAX_MESSAGE_BYTES, BatchPacker

DEFAULT_IN_FLIGHT = 2
ATTEMPTS = 6


class Sender:
    """POSTs batches on one pooled Session; up to `in_flight` requests overlap the main loop."""

    def __init__(self, endpoint: str, write_key: str, in_flight: int, timeout: float = 30.0):
        self.endpoint = endpoint
        self.timeout = timeout
        self.headers = {'Content-Type': 'application/json', 'Authorization': basic_auth(write_key),
                        'User-Agent': 'currents-to-segment-bench-reference'}
        self.session = requests.Session()
        self.session.trust_env = False   # no proxy/netrc lookups per request (loopback endpoint)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, in_flight), max_retries=0)
        self.session.mount('http://', adapter)
        self.session.mount('https://', adapter)
        self.in_flight = in_flight
        self.pool = ThreadPoolExecutor(in_flight) if in_flight > 1 else None
        self.slots = threading.BoundedSemaphore(in_flight) if in_flight > 1 else None
        self.lock = threading.Lock()
        self.requests = self.retries = self.sent = 0
        self.failures = []

    def submit(self, batch) -> None:
        if self.pool is None:
            self._post(batch)
            return
        self.slots.acquire()          # back-pressure: at most in_flight batches held
        self.pool.submit(self._post_release, batch)

    def _post_release(self, batch):
        try:
            self._post(batch)
        finally:
            self.slots.release()

    def _post(self, batch) -> None:
        n = len(batch)
        last = ''
        for attempt in range(ATTEMPTS):
            body = SegmentBatch(batch).body(sent_at_now())
            try:
                response = self.session.post(self.endpoint, data=body, headers=self.headers,
                                             timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                status, last = None, type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    with self.lock:
                        self.requests += 1
                        self.retries += attempt
                        self.sent += n
                    return
                last = f'HTTP {status}: {response.text[:200]}'
            if status is not None and status != 429 and status < 500:
                break
            time.sleep(min(0.2 * 2 ** attempt, 5.0))
        with self.lock:
            self.requests += 1
            self.failures.append(f'{n} messages not delivered: {last}')

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        self.session.close()


def run(input_dir: str, endpoint: str, write_key: str, in_flight: int = DEFAULT_IN_FLIGHT,
        message_id_prefix: str = '') -> dict:
    files, skipped = list_files(input_dir)
    to_message = MessageMapper(message_id_prefix, pipeline.__version__).to_message
    packer = BatchPacker()
    add = packer.add
    sender = Sender(endpoint, write_key, in_flight)
    read = dropped = rejected = 0
    try:
        for event_type, record in iter_records(files):
            read += 1
            try:
                message = to_message(event_type, record)
            except Invalid:
                rejected += 1
                continue
            if message is DROPPED:
                dropped += 1
                continue
            payload = serialize(message)
            if len(payload) > MAX_MESSAGE_BYTES:
                rejected += 1
                continue
            full = add(SegmentMessage(event_type, message['messageId'], payload))
            if full:
                sender.submit(full)
        rest = packer.flush()
        if rest:
            sender.submit(rest)
    finally:
        sender.close()
    return {'read': read, 'dropped': dropped, 'sent': sender.sent, 'rejected': rejected,
            'files_read': len(files), 'files_skipped': skipped, 'requests': sender.requests,
            'retries': sender.retries, 'failures': sender.failures[:5],
            'failed_batches': len(sender.failures)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bench.reference', description=__doc__.split('\n')[0])
    parser.add_argument('--input', required=True, help='local Currents export folder')
    parser.add_argument('--endpoint', required=True, help='batch URL, e.g. http://127.0.0.1:PORT/v1/batch')
    parser.add_argument('--in-flight', type=int, default=DEFAULT_IN_FLIGHT,
                        help=f'concurrent requests (default {DEFAULT_IN_FLIGHT}; 1 = synchronous)')
    parser.add_argument('--message-id-prefix', default='')
    parser.add_argument('--summary-output', help='also write the JSON summary here')
    args = parser.parse_args(argv)
    key = os.environ.get('SEGMENT_WRITE_KEY', '').strip()
    if not key:
        print('bench.reference: error: set SEGMENT_WRITE_KEY', file=sys.stderr)
        return 2
    # The pipeline's command runs with these cycle-collector thresholds (no pass per request
    # for acyclic messages); any fast plain program can do the same.
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    summary = run(args.input, args.endpoint, key, max(1, args.in_flight), args.message_id_prefix)
    report(summary, args.summary_output)
    return 0 if not summary['failed_batches'] else 1


if __name__ == '__main__':
    sys.exit(main())
