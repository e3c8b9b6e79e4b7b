"""Local stand-in for Segment's ``POST /v1/batch``, used by tests and benchmarks.

It follows CONTRACT §4 closely so that client bugs show up here and not in production: the
500 KB request limit and the 32 KB message limit measured on uncompressed JSON, per-item
validation, silent loss above 2,500 items, de-duplication on messageId, and 429/5xx/reset/slow
faults seeded for reproducibility.

Where it departs from Segment, on purpose:
- An unknown write key gets 401. Segment answers 200 and drops the events silently; the 401
  lets a test check that the client stops.
- An empty ``batch`` gets 400 ``empty_batch``, so a client that posts empty batches is caught.
- A missing ``messageId`` is accepted and one is assigned, as Segment does. It is counted in
  ``missing_message_id``, because a client with no messageId cannot be idempotent.
- A request without ``Content-Type: application/json`` is served but counted in
  ``bad_content_type``. Segment calls the header mandatory but does not say what it does without it.

Stdlib (plus orjson and msgspec, when there) so that it starts fast as a subprocess. Accepted messages are
kept as the request bodies they came in, not as dicts or per-message copies, and turned into
messages only when asked: the receiver shares the benchmark machine's cores with the clients
it measures, and a real Segment costs them no CPU at all.
"""
from __future__ import annotations

import argparse
import base64
import gc
import ipaddress
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import repeat
from typing import Annotated, Any, List, Literal, Optional, Union

__all__ = ['SegmentReceiver', 'FAULT_KINDS', 'MODES', 'control_headers', 'main']

FAULT_KINDS = ('429', '429-no-retry-after', '500', '503', 'reset', 'slow')
MODES = ('normal', 'refuse_503', 'unauthorized_401')
BATCH_PATH = '/v1/batch'
_TYPE_NAMES = ('identify', 'group', 'track', 'page', 'screen', 'alias')
_VALID_TYPES = frozenset(_TYPE_NAMES)
_NAMED_TYPES = frozenset(('page', 'screen'))   # a `name` must be a string
_HARD_BODY_CAP = 64 * 1024 * 1024   # never read more than this off the wire


def _make_compact_encoder():
    """json.dumps(m, separators=(',', ':'), ensure_ascii=False), ~35% faster.

    The C encoder is built once instead of per call. No circular-reference check is needed:
    everything encoded here came out of json.loads.
    """
    from json import encoder as _enc
    if _enc.c_make_encoder is None or _enc.c_encode_basestring is None:
        return json.JSONEncoder(separators=(',', ':'), ensure_ascii=False).encode
    c = _enc.c_make_encoder(None, None, _enc.c_encode_basestring, None, ':', ',', False, False, True)
    join = ''.join
    return lambda o: join(c(o, 0))


_ENCODE = _make_compact_encoder()


def _reject_constant(name):
    raise ValueError(f'{name} is not valid JSON')


# NaN/Infinity are not JSON; Python's json.dumps emits them, a real server refuses them.
_DECODE = json.JSONDecoder(parse_constant=_reject_constant).decode

try:  # orjson (a dependency of Beam) parses and re-encodes ~3-10x faster: the receiver shares
    import orjson  # the benchmark machine's cores with the clients it measures
except ImportError:  # pragma: no cover
    orjson = None


def _decode(body: bytes):
    """The request body as JSON; errors (and what orjson refuses, e.g. >64-bit ints) via json."""
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return _DECODE(body.decode('utf-8'))


def _encode(message) -> bytes:
    """A message as compact UTF-8 JSON bytes (its size as Segment would measure it)."""
    if orjson is not None:
        try:
            return orjson.dumps(message)
        except TypeError:
            pass
    return _ENCODE(message).encode('utf-8')

_UNAUTHORIZED = {'success': False, 'message': 'invalid write key', 'code': 'unauthorized'}
_TOO_LARGE = {'success': False, 'message': 'Exceed payload limit', 'code': 'payload_too_large'}
_OK = {'success': True}


def _err(message, code):
    return {'success': False, 'message': message, 'code': code}


def _item_error(m, poison):
    """Return the error code of one batch item, or None if it is valid (Segment's HTTP API spec)."""
    if type(m) is not dict:
        return 'item_not_object'
    mid = m.get('messageId')
    if poison and type(mid) is str and mid in poison:
        return 'poison'
    t = m.get('type')
    if t is None:
        return 'type_required'
    if type(t) is not str or t not in _VALID_TYPES:
        return 'type_invalid'
    uid = m.get('userId')
    aid = m.get('anonymousId')
    if uid is None and aid is None:
        return 'no_user_anon_id'
    if (uid is not None and (type(uid) is not str or not uid)) or \
            (aid is not None and (type(aid) is not str or not aid)):
        return 'id_not_string'
    if t == 'track':
        ev = m.get('event')
        if ev is None or ev == '':
            return 'event_not_defined'
        if type(ev) is not str:
            return 'event_not_string'
    if 'properties' in m and type(m['properties']) is not dict:
        return 'properties_not_object'
    if 'traits' in m and type(m['traits']) is not dict:
        return 'traits_not_object'
    if 'context' in m and type(m['context']) is not dict:
        return 'context_not_object'
    if 'integrations' in m and type(m['integrations']) is not dict:
        return 'integrations_not_object'
    if 'name' in m and t in _NAMED_TYPES and type(m['name']) is not str:
        return 'name_not_string'
    if 'messageId' in m and (type(mid) is not str or not 0 < len(mid) <= 100):
        return 'message_id_invalid'
    if 'timestamp' in m:
        ts = m['timestamp']
        if type(ts) is not str:
            return 'timestamp_invalid'
        try:
            datetime.fromisoformat(ts)
        except ValueError:
            return 'timestamp_invalid'
    return None


# -- the common case, checked without building the messages ----------------------------------------
# A well-formed request from a careful client (every item valid, each with its messageId, no
# envelope context) is checked by msgspec's typed decoder: the checks `_item_error` makes run in
# C, nothing is built for properties or context, and each item's span in the body bounds its
# size. Anything else (an item that fails a check, a missing messageId, an envelope to merge,
# a message that may be near 32 KB, bytes msgspec does not judge as the slow path does) takes
# the full path below, which decides the answer. The receiver shares the benchmark machine's
# cores with the clients it measures; this path costs it less than half the CPU of the other.
try:
    import msgspec
except ImportError:  # pragma: no cover
    msgspec = None

# A compact re-encoding is at most ~4.5x the span of its source (`1e15` -> 1000000000000000.0);
# items whose span is under the limit divided by this margin cannot be over the limit.
_SPAN_MARGIN = 8

if msgspec is not None:
    _NOT_GIVEN = msgspec.UNSET

    class _AnyObject(msgspec.Struct, gc=False):
        """Any JSON object, skipped over (not built); anything else fails."""

    class _Item(msgspec.Struct, gc=False):
        messageId: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
        type: Literal[_TYPE_NAMES]
        userId: Optional[Annotated[str, msgspec.Meta(min_length=1)]] = None
        anonymousId: Optional[Annotated[str, msgspec.Meta(min_length=1)]] = None
        event: Any = None
        name: Any = _NOT_GIVEN
        timestamp: Union[str, msgspec.UnsetType] = _NOT_GIVEN
        properties: _AnyObject = None
        traits: _AnyObject = None
        context: _AnyObject = None
        integrations: _AnyObject = None

    class _Body(msgspec.Struct, gc=False):
        batch: List[_Item]
        sentAt: Any = None
        context: Any = _NOT_GIVEN
        integrations: Any = _NOT_GIVEN

    class _Spans(msgspec.Struct, gc=False):
        batch: List[msgspec.Raw]

    _FAST_BODY = msgspec.json.Decoder(_Body).decode
    _FAST_SPANS = msgspec.json.Decoder(_Spans).decode
    _FAST_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


def _all_valid(body: bytes, max_messages: int, max_message_bytes: int):
    """(items, sentAt) when every item of the request passes `_item_error` and the size limit,
    nothing is to be merged or assigned and the body is plain UTF-8; else None (take the full
    path, which then finds what is wrong or fine)."""
    if msgspec is None:
        return None
    if not body.isascii():
        try:   # msgspec does not check the UTF-8 of strings it skips; json does
            body.decode('utf-8')
        except UnicodeDecodeError:
            return None
    try:
        parsed = _FAST_BODY(body)
    except _FAST_ERRORS:
        return None
    items = parsed.batch
    if not 0 < len(items) <= max_messages or parsed.context is not _NOT_GIVEN \
            or parsed.integrations is not _NOT_GIVEN:
        return None
    for m in items:
        t = m.type
        if m.userId is None and m.anonymousId is None:
            return None
        if t == 'track':
            ev = m.event
            if type(ev) is not str or not ev:
                return None
        elif t in _NAMED_TYPES and m.name is not _NOT_GIVEN and type(m.name) is not str:
            return None
        ts = m.timestamp
        if ts is not _NOT_GIVEN:
            try:
                datetime.fromisoformat(ts)
            except ValueError:
                return None
    limit = max_message_bytes // _SPAN_MARGIN
    if len(body) > limit:
        try:
            spans = _FAST_SPANS(body).batch
        except _FAST_ERRORS:
            return None
        for span in spans:
            if len(span) > limit and len(_encode(_decode(bytes(span)))) > max_message_bytes:
                return None
    return items, parsed.sentAt


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: 'SegmentReceiver'

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, TimeoutError)):
            return   # client went away (e.g. gave up on a 'slow' fault): not our problem
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True   # headers and body go out as two writes: avoid Nagle stalls
    timeout = 300                    # idle keep-alive connections are dropped after this
    server_version = 'segment-devserver'
    sys_version = ''

    def log_message(self, format, *args):   # quiet: keeps benchmarks fast, never logs headers
        pass

    def setup(self):
        super().setup()
        self.server.receiver._track_conn(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.receiver._track_conn(self.connection, False)

    # -- plumbing -----------------------------------------------------------------------------
    def _read_body(self):
        """Read the request body (Content-Length or chunked). None means: too big, close."""
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                size_field = line.split(b';', 1)[0].strip()
                # Hex digits only: int(..., 16) also takes '-1' and '+1', and a read of -1
                # bytes buffers until the connection closes.
                if not size_field or size_field.strip(b'0123456789abcdefABCDEF') \
                        or len(size_field) > 16:
                    self.close_connection = True
                    return None
                size = int(size_field, 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b'\r\n', b'\n', b''):
                        pass
                    return b''.join(parts)
                total += size
                if total > _HARD_BODY_CAP:   # the same cap as a Content-Length body
                    self.close_connection = True
                    return None
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
        try:
            length = int(self.headers.get('Content-Length') or 0)
        except ValueError:
            length = 0
        if length > _HARD_BODY_CAP:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b''

    def _send(self, status, obj=None, raw=None, ctype='application/json', headers=()):
        data = raw if raw is not None else json.dumps(obj, separators=(',', ':')).encode()
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(data)

    def _reset(self):
        """Drop the connection with an RST and no response."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            self.rfile.close()   # releases the makefile reference so close() really closes
            self.connection.close()
        except OSError:
            pass

    # -- routes -------------------------------------------------------------------------------
    def _control_allowed(self) -> bool:
        """/_receiver/* (stats, stored messages, faults) answer only to the write key."""
        rec = self.server.receiver
        if self.headers.get('Authorization', '').strip() in rec._expected_auth:
            return True
        self._send(401, _UNAUTHORIZED)
        return False

    def do_GET(self):
        path = self.path.split('?', 1)[0]
        rec = self.server.receiver
        if path.startswith('/_receiver/') and not self._control_allowed():
            return
        if path == '/_receiver/stats':
            self._send(200, rec.stats())
        elif path == '/_receiver/messages':
            lines = rec._message_lines()
            raw = ('\n'.join(lines) + '\n' if lines else '').encode()
            self._send(200, raw=raw, ctype='application/x-ndjson')
        else:
            self._send(404, _err('not found', 'not_found'))

    def do_POST(self):
        path = self.path.split('?', 1)[0]
        body = self._read_body()
        rec = self.server.receiver
        if path == BATCH_PATH:
            rec._handle_batch(self, body)
        elif path.startswith('/_receiver/') and not self._control_allowed():
            if body is None:
                self.close_connection = True
        elif path == '/_receiver/mode' and body is not None:
            try:
                req = json.loads(body)
                rec.set_mode(req['mode'], int(req.get('after_requests', 0)))
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, _err(f'bad mode request: {e}', 'invalid_request'))
            else:
                self._send(200, _OK)
        else:
            if body is None:
                self.close_connection = True
            self._send(404, _err('not found', 'not_found'))

    def _other(self):
        self._read_body()
        self._send(404, _err('not found', 'not_found'))

    do_PUT = do_DELETE = do_PATCH = _other

    def do_HEAD(self):
        self.send_response(404)
        self.send_header('Content-Length', '0')
        self.end_headers()


class SegmentReceiver:
    """In-process Segment batch receiver. See the module docstring for the contract."""

    def __init__(self, write_key='test-write-key', host='127.0.0.1', port=0, fault_rate=0.0,
                 faults=('429', '500', '503', 'reset', 'slow'), seed=0, retry_after=1,
                 slow_seconds=5.0, store_path=None, invalid_item_status=400,
                 max_body_bytes=500_000, max_message_bytes=32_000, max_batch_messages=2500,
                 poison_message_ids=()):
        faults = tuple(faults)
        bad = [f for f in faults if f not in FAULT_KINDS]
        if bad:
            raise ValueError(f'unknown fault kinds {bad}; known: {FAULT_KINDS}')
        if fault_rate and not faults:
            raise ValueError('fault_rate > 0 needs at least one fault kind')
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError('fault_rate must be in [0, 1]')
        if invalid_item_status not in (200, 400):
            raise ValueError('invalid_item_status must be 200 or 400')
        self.write_key = write_key
        self.host, self.port = host, port
        self.fault_rate, self.faults = float(fault_rate), faults
        self.retry_after, self.slow_seconds = retry_after, float(slow_seconds)
        self.store_path = store_path
        self.invalid_item_status = invalid_item_status
        self.max_body_bytes = max_body_bytes
        self.max_message_bytes = max_message_bytes
        self.max_batch_messages = max_batch_messages
        self.poison_message_ids = frozenset(poison_message_ids)
        self._expected_auth = {
            'Basic ' + base64.b64encode(f'{write_key}:'.encode()).decode(),
            'Basic ' + base64.b64encode(write_key.encode()).decode(),   # colon-less legacy form
        }
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._work = threading.Lock()   # one request's checks at a time (see _handle_batch)
        self._mode, self._pending_mode, self._mode_at = 'normal', None, 0
        self._store = {}          # messageId -> (body number, item index) or JSON bytes
        self._bodies = []         # accepted request bodies (uncompressed), by body number
        self._records = []        # one dict per accepted request
        self._requests = 0
        self._by_status = {}
        self._faults_injected = {}
        self._duplicates = self._silently_dropped = self._invalid_dropped = 0
        self._max_request_bytes = self._max_batch_seen = 0
        self._sent_at_missing = self._missing_message_id = self._bad_content_type = 0
        self._with_sent_at = 0    # accepted bodies that carried sentAt
        self._conns = set()
        self._server = self._thread = self._store_file = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> 'SegmentReceiver':
        if self._server is not None:
            raise RuntimeError('receiver already started')
        cls = _Server6 if ':' in self.host else _Server
        server = cls((self.host, self.port), _Handler)
        server.receiver = self
        if self.store_path:   # customer data: owner-only, even if the file existed before
            fd = os.open(self.store_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(fd, 0o600)
            self._store_file = open(fd, 'a', encoding='utf-8')
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                                        name=f'segment-receiver-{self.port}', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:   # kept-alive client connections must not outlive the receiver
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        with self._lock:
            if self._store_file:
                self._store_file.close()
                self._store_file = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'http://{host}:{self.port}{BATCH_PATH}'

    def _track_conn(self, conn, add):
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    # -- steering and inspection ----------------------------------------------------------------
    def set_mode(self, mode: str, after_requests: int = 0):
        if mode not in MODES:
            raise ValueError(f'unknown mode {mode!r}; known: {MODES}')
        if after_requests < 0:
            raise ValueError('after_requests must be >= 0')
        with self._lock:
            if after_requests == 0:
                self._mode, self._pending_mode = mode, None
            else:
                self._pending_mode, self._mode_at = mode, self._requests + after_requests

    def stats(self) -> dict:
        """Counters for POST /v1/batch. ``arrivals`` and ``sent_at_values_missing`` cover only
        requests whose messages were stored (not silent drops); ``by_status`` counts resets as
        "reset"; ``max_request_bytes`` is the largest uncompressed body seen, refused or not."""
        with self._lock:
            return {
                'requests': self._requests,
                'by_status': dict(self._by_status),
                'faults_injected': dict(self._faults_injected),
                'accepted': len(self._store),
                'duplicates': self._duplicates,
                'silently_dropped': self._silently_dropped,
                'invalid_dropped': self._invalid_dropped,
                'max_request_bytes': self._max_request_bytes,
                'max_batch_messages_seen': self._max_batch_seen,
                'arrivals': [[r['t'], r['items']] for r in self._records],
                'sent_at_values_missing': self._sent_at_missing,
                'bodies_with_sent_at': self._with_sent_at,
                'missing_message_id': self._missing_message_id,
                'bad_content_type': self._bad_content_type,
                'mode': self._mode,
            }

    def messages(self) -> list:
        return json.loads(b'[' + b','.join(self._texts()) + b']')   # one parse, not 300k

    def accepted_requests(self) -> list:
        """One dict per accepted request: t (monotonic), items, body_bytes, wire_bytes, sent_at."""
        with self._lock:
            return [dict(r) for r in self._records]

    def _message_lines(self):
        return [t.decode('utf-8') for t in self._texts()]

    def _texts(self) -> list:
        """Every accepted message (first copy of each messageId) as compact JSON bytes."""
        with self._lock:
            where, bodies = list(self._store.values()), list(self._bodies)
        parsed = {}
        texts = []
        for w in where:
            if type(w) is bytes:
                texts.append(w)
                continue
            number, index = w
            batch = parsed.get(number)
            if batch is None:
                batch = parsed[number] = _decode(bodies[number])['batch']
            texts.append(_encode(batch[index]))
        return texts

    # -- request handling -----------------------------------------------------------------------
    def _count(self, status):
        with self._lock:
            self._by_status[status] = self._by_status.get(status, 0) + 1

    def _reply(self, h, status, obj, headers=()):
        self._count(str(status))
        h._send(status, obj, headers=headers)

    def _handle_batch(self, h, raw):
        t_arrival = time.monotonic()
        with self._lock:
            self._requests += 1
            if self._pending_mode is not None and self._requests > self._mode_at:
                self._mode, self._pending_mode = self._pending_mode, None
            mode = self._mode
            fault = None
            if self._rng.random() < self.fault_rate:   # drawn per request: same seed, same sequence
                fault = self.faults[self._rng.randrange(len(self.faults))]
        if raw is None:
            return self._reply(h, 400, _TOO_LARGE)
        if mode == 'refuse_503':
            return self._reply(h, 503, _err('Service Unavailable', 'service_unavailable'))
        if mode == 'unauthorized_401':
            return self._reply(h, 401, _UNAUTHORIZED)
        if fault is not None:
            with self._lock:
                self._faults_injected[fault] = self._faults_injected.get(fault, 0) + 1
            if fault == '429':
                ra = str(self.retry_after)
                return self._reply(h, 429, _err('Too Many Requests', 'rate_limited'),
                                   headers=(('Retry-After', ra), ('X-RateLimit-Reset', ra)))
            if fault == '429-no-retry-after':
                return self._reply(h, 429, _err('Too Many Requests', 'rate_limited'))
            if fault == '500':
                return self._reply(h, 500, _err('Internal Server Error', 'internal_error'))
            if fault == '503':
                return self._reply(h, 503, _err('Service Unavailable', 'service_unavailable'))
            if fault == 'reset':
                self._count('reset')
                return h._reset()
            time.sleep(self.slow_seconds)   # 'slow': then carry on as normal

        # One request at a time from here: with a thread per connection, handlers that take
        # turns on this CPU-bound part use ~20% less CPU per message than handlers contending
        # for the GIL (4 connections, bench/), and the receiver shares its cores with the
        # client it measures. Faults, and the 'slow' sleep, stay outside.
        with self._work:
            status, answer = self._accept(h, raw, t_arrival)
        return self._reply(h, status, answer)

    def _accept(self, h, raw, t_arrival):
        """Check, de-duplicate and keep one request's messages: (status, answer)."""
        header_ok = h.headers.get('Authorization', '').strip() in self._expected_auth
        if 'application/json' not in h.headers.get('Content-Type', '').lower():
            with self._lock:
                self._bad_content_type += 1

        # Decompress (bounded: limits apply to the uncompressed body, CONTRACT §4).
        enc = h.headers.get('Content-Encoding', '').strip().lower()
        body, too_large, bad_encoding = raw, False, None
        if enc == 'gzip':
            body, too_large, bad_encoding = self._gunzip(raw)
        elif enc not in ('', 'identity'):
            bad_encoding = f'unsupported Content-Encoding {enc!r}'
        if body is not None and len(body) > self.max_body_bytes:
            too_large = True
        if body is not None:
            with self._lock:
                self._max_request_bytes = max(self._max_request_bytes, len(body))

        if header_ok and bad_encoding is None and not too_large and \
                not self.poison_message_ids and self._store_file is None:
            fast = _all_valid(body, self.max_batch_messages, self.max_message_bytes)
            if fast is not None:
                items, sent_at = fast
                with self._lock:
                    self._max_batch_seen = max(self._max_batch_seen, len(items))
                return self._keep_all(raw, body, t_arrival, sent_at,
                                      [m.messageId for m in items])

        obj, parse_error = None, None
        if bad_encoding is None and not too_large:
            try:
                obj = _decode(body)
            except (ValueError, UnicodeDecodeError) as e:
                parse_error = f'malformed JSON: {e}'

        if not header_ok and not (type(obj) is dict and obj.get('writeKey') == self.write_key):
            return (401, _UNAUTHORIZED)
        if too_large:
            return (400, _TOO_LARGE)
        if bad_encoding is not None:
            return (400, _err(bad_encoding, 'invalid_request'))
        if parse_error is not None:
            return (400, _err(parse_error, 'invalid_request'))
        batch = obj.get('batch') if type(obj) is dict else None
        if type(batch) is not list:
            return (400, _err('body must be a JSON object with a "batch" list',
                              'invalid_request'))
        n = len(batch)
        with self._lock:
            self._max_batch_seen = max(self._max_batch_seen, n)
        if n == 0:
            return (400, _err('empty batch', 'empty_batch'))

        # One oversize message fails the whole request (Segment's HTTP API page).
        # (A body shorter than the limit can still hold a longer message: `1e15` re-encodes
        # as 1000000000000000.0.)
        if len(body) > self.max_message_bytes // _SPAN_MARGIN and \
                max(map(len, map(_encode, batch))) > self.max_message_bytes:
            return (400, _TOO_LARGE)

        if n > self.max_batch_messages:   # Segment answers 200 and drops everything (§1.4)
            with self._lock:
                self._silently_dropped += n
            return (200, _OK)

        poison = self.poison_message_ids
        codes = [_item_error(m, poison) for m in batch]
        keep, invalid = range(n), 0
        if any(codes):
            keep = []
            for i, code in enumerate(codes):
                if code is None:
                    keep.append(i)
                elif self.invalid_item_status == 400:
                    return (400, _err(f'{code} at index {i}', code))
                else:
                    invalid += 1

        # Envelope context/integrations are merged into each item (item keys win, §1.3); such
        # items, and those given a messageId here, are kept as their own text.
        env = [(k, obj[k]) for k in ('context', 'integrations') if type(obj.get(k)) is dict]
        new_ids, missing = [], 0
        for i in keep:
            m = batch[i]
            changed = False
            for k, v in env:
                m[k] = {**v, **m.get(k, {})}
                changed = True
            if 'messageId' not in m:
                m['messageId'] = f'receiver-{uuid.uuid4()}'
                missing += 1
                changed = True
            new_ids.append((m['messageId'], _encode(m) if changed else i))

        return self._keep(raw, body, t_arrival, n, obj.get('sentAt'), new_ids, invalid, missing,
                          batch)

    def _keep(self, raw, body, t_arrival, n, sent_at, new_ids, invalid, missing, batch):
        """Store the first copy of each messageId and count the request: (200, answer)."""
        with self._lock:
            store, fresh, dups = self._store, [], 0
            number = len(self._bodies)
            for mid, where in new_ids:
                if mid in store:
                    dups += 1
                else:
                    store[mid] = where if type(where) is bytes else (number, where)
                    fresh.append(where)
            if any(type(w) is not bytes for w in fresh):
                self._bodies.append(body)
            self._duplicates += dups
            self._invalid_dropped += invalid
            self._missing_message_id += missing
            self._count_kept(raw, body, t_arrival, n, sent_at)
            if self._store_file is not None and fresh:
                lines = [w if type(w) is bytes else _encode(batch[w]) for w in fresh]
                self._store_file.write((b'\n'.join(lines) + b'\n').decode('utf-8'))
                self._store_file.flush()
        return (200, _OK)

    def _keep_all(self, raw, body, t_arrival, sent_at, ids):
        """`_keep` for a request whose items all passed the fast check, in order: when none of
        its messageIds is stored already or repeats within it (a client's normal traffic), one
        bulk insert instead of a lookup and a store per message in Python (~0.1 us a message
        of the receiver's CPU, which it shares with the client it measures)."""
        n = len(ids)
        with self._lock:
            store = self._store
            if store.keys().isdisjoint(ids):
                before, number = len(store), len(self._bodies)
                store.update(zip(ids, zip(repeat(number), range(n))))
                if len(store) - before == n:
                    self._bodies.append(body)
                    self._count_kept(raw, body, t_arrival, n, sent_at)
                    return (200, _OK)
                for mid in ids:   # a messageId repeats within the request: undo, one by one
                    store.pop(mid, None)
        return self._keep(raw, body, t_arrival, n, sent_at, list(zip(ids, range(n))), 0, 0, None)

    def _count_kept(self, raw, body, t_arrival, n, sent_at):
        """Count an accepted request (the caller holds the lock)."""
        if sent_at is None:
            self._sent_at_missing += 1
        else:
            self._with_sent_at += 1
        self._records.append({'t': t_arrival, 'items': n, 'body_bytes': len(body),
                              'wire_bytes': len(raw), 'sent_at': sent_at})

    def _gunzip(self, raw):
        """Return (body, too_large, error); stops inflating past max_body_bytes (no gzip bombs)."""
        cap = self.max_body_bytes + 1
        out, data = [], raw
        try:
            while data:
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                chunk = d.decompress(data, cap)
                out.append(chunk)
                cap -= len(chunk)
                if cap <= 0:
                    return None, True, None
                if not d.eof:
                    return None, False, 'invalid gzip body (truncated)'
                data = d.unused_data
        except zlib.error as e:
            return None, False, f'invalid gzip body: {e}'
        return b''.join(out), False, None


def control_headers(write_key: str) -> dict:
    """The header the /_receiver/* control endpoints want (the same write key as /v1/batch)."""
    return {'Authorization': 'Basic ' + base64.b64encode(f'{write_key}:'.encode()).decode()}


# -- CLI --------------------------------------------------------------------------------------------
def _is_loopback(host):
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m devtools.receiver',
                                description='Local Segment /v1/batch receiver for tests and benchmarks.')
    p.add_argument('--host', default='127.0.0.1', help='loopback address only')
    p.add_argument('--port', type=int, default=0, help='0 picks a free port')
    p.add_argument('--write-key', default=None,
                   help='default: $SEGMENT_WRITE_KEY, else test-write-key (never printed)')
    p.add_argument('--fault-rate', type=float, default=0.0)
    p.add_argument('--faults', default='429,500,503,reset,slow',
                   help=f'comma-separated, from {",".join(FAULT_KINDS)}')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--retry-after', type=int, default=1, help='seconds, for 429 faults')
    p.add_argument('--slow-seconds', type=float, default=5.0)
    p.add_argument('--store', default=None, help='append accepted messages here as JSON Lines')
    p.add_argument('--port-file', default=None, help='write the bound port here')
    p.add_argument('--invalid-item-status', type=int, choices=(400, 200), default=400)
    a = p.parse_args(argv)

    if not _is_loopback(a.host):
        print(f'devserver: refusing non-loopback --host {a.host!r}', file=sys.stderr)
        return 2
    key = a.write_key or os.environ.get('SEGMENT_WRITE_KEY') or 'test-write-key'
    faults = tuple(f.strip() for f in a.faults.split(',') if f.strip())
    try:
        rec = SegmentReceiver(write_key=key, host=a.host, port=a.port, fault_rate=a.fault_rate,
                              faults=faults, seed=a.seed, retry_after=a.retry_after,
                              slow_seconds=a.slow_seconds, store_path=a.store,
                              invalid_item_status=a.invalid_item_status)
    except ValueError as e:
        print(f'devserver: {e}', file=sys.stderr)
        return 2

    os.umask(0o077)   # the store and port file hold customer data / local details
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    rec.start()
    try:
        if a.port_file:
            tmp = f'{a.port_file}.tmp{os.getpid()}'
            with open(tmp, 'w') as f:
                f.write(f'{rec.port}\n')
            os.replace(tmp, a.port_file)   # readers never see a half-written file
        print(f'listening on {rec.url}', flush=True)
        # Everything accepted is kept (acyclic: bodies, ids, counts). Freezing it out of the
        # cycle collector every half second keeps the cost of a request flat as the store
        # grows: a benchmark's receiver shares its cores with the client it measures. A parsed
        # request (~25,000 objects, none cyclic) is dropped before a young-generation pass
        # every 100,000 allocations sees it, instead of being scanned ~35 times (~0.3 µs less a
        # message, of ~2.4 to parse and check it).
        gc.set_threshold(100_000, 20, 100)
        while not stop.wait(0.5):
            gc.freeze()
    finally:
        rec.stop()
    summary = rec.stats()
    summary.pop('arrivals', None)
    print(json.dumps(summary, separators=(',', ':')), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
