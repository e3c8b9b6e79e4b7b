"""Read: decode the listed Currents files; what will not decode becomes a reject.

Reading never trusts the file (docs/security.md, "Hostile input"): the container is parsed here, with
limits, and only the records go through fastavro's decoder. A file that breaks a limit is one
`unreadable_file` reject and the run goes on:

- codecs: only those Braze writes (null, deflate, snappy);
- writer schema: no recursive types, at most MAX_SCHEMA_DEPTH levels of nesting, checked on the
  parsed JSON before fastavro sees it (its compiled decoder recurses and can crash the process);
- blocks: at most MAX_BLOCK_BYTES decompressed, and a record count the block's bytes can hold
  (count x smallest possible record <= bytes), both checked before any record is produced.
"""
import io
import json
import re
import zlib
from typing import FrozenSet, Iterator, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import fastavro
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import completion, counts, progress
from transforms.credentials import StoreCredentials
from transforms.events import event_type_from_schema_name
from transforms.model import UNREADABLE_FILE, CurrentsEvent, Reject
from transforms.packing import PackedList
from transforms.progress import LiveChannel

REJECTS = 'rejects'
REPORT_EVERY = 1024   # records between live progress reports (and stop checks) within a file

AVRO_MAGIC = b'Obj\x01'
SYNC_SIZE = 16
CODECS = ('null', 'deflate', 'snappy')
# Braze writes up to 100,000 events per file and its real records are at most ~850 bytes
# (currents-samples): even a whole file in one block is ~85 MB (Avro writers flush blocks far
# sooner, every ~64 KB by default). 128 MiB is 1.5x that worst case; a block is held twice
# while it is decompressed, so a worker thread never needs more than ~256 MiB for one.
MAX_BLOCK_BYTES = 128 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024     # real headers are a few KB (one schema)
MAX_SCHEMA_DEPTH = 32              # Braze's schemas need 4 (record, field type, union, {type})
_PRIMITIVE_MIN_BYTES = {'null': 0, 'boolean': 1, 'int': 1, 'long': 1, 'float': 4, 'double': 8,
                        'bytes': 1, 'string': 1}


class UnreadableFile(ValueError):
    """The file (or its rest) cannot be read; the message says why, in one line."""


class NotAvro(UnreadableFile):
    pass


class CorruptBlock(UnreadableFile):
    pass


class RefusedFile(UnreadableFile):
    """The file breaks one of the reading limits above."""


class Header(NamedTuple):
    writer: 'WriterSchema'   # the checked schema: parsed JSON, full name, smallest record
    codec: str
    sync: bytes


def _read_exact(handle, n: int, what: str) -> bytes:
    data = handle.read(n) if n else b''
    if len(data) != n:
        raise UnreadableFile(f'file ends inside {what} ({len(data)} of {n} bytes)')
    return data


def _read_long(handle, what: str, eof_ok: bool = False) -> Optional[int]:
    """An Avro zig-zag varint (at most 10 bytes); None at a clean end of file if eof_ok."""
    shift = value = 0
    for i in range(10):
        b = handle.read(1)
        if not b:
            if i == 0 and eof_ok:
                return None
            raise UnreadableFile(f'file ends inside {what}')
        byte = b[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1)
        shift += 7
    raise CorruptBlock(f'{what}: varint longer than 10 bytes')


def _json_depth(text: str) -> int:
    """Bracket nesting of a JSON text, strings left out: checked before json.loads."""
    brackets = re.sub(r'[^\[\]{}]', '', re.sub(r'"(?:[^"\\]|\\.)*"', '', text))
    depth = deepest = 0
    for c in brackets:
        depth += 1 if c in '[{' else -1
        deepest = max(deepest, depth)
    return deepest


def schema_min_record_bytes(schema) -> int:
    """The fewest bytes one record of `schema` can take; refuses recursive or too-deep schemas.

    Walks the parsed JSON itself (fastavro's parser and decoder recurse; a record holding its
    own type, or thousands of nested records, can crash them).
    """
    named = {}                  # full name -> min bytes, once defined

    def fullname(name: str, namespace: str) -> str:
        return name if '.' in name or not namespace else f'{namespace}.{name}'

    def walk(s, namespace: str, depth: int, open_names: tuple) -> int:
        if depth > MAX_SCHEMA_DEPTH:
            raise RefusedFile(f'writer schema nests deeper than {MAX_SCHEMA_DEPTH} levels')
        if isinstance(s, str):
            if s in _PRIMITIVE_MIN_BYTES:
                return _PRIMITIVE_MIN_BYTES[s]
            for candidate in (fullname(s, namespace), s):
                if candidate in open_names:
                    raise RefusedFile(f'writer schema is recursive (type {s!r} contains itself)')
                if candidate in named:
                    return named[candidate]
            raise RefusedFile(f'writer schema names an unknown type {s!r}')
        if isinstance(s, list):
            if not s:
                raise RefusedFile('writer schema has an empty union')
            return 1 + min(walk(b, namespace, depth + 1, open_names) for b in s)
        if not isinstance(s, dict):
            raise RefusedFile(f'writer schema has an invalid type {s!r:.60}')
        t = s.get('type')
        if t in ('record', 'error', 'enum', 'fixed'):
            name = s.get('name')
            if not isinstance(name, str):
                raise RefusedFile(f'writer schema has a {t} without a name')
            ns = s.get('namespace') if isinstance(s.get('namespace'), str) else namespace
            full = fullname(name, ns)
            ns = full.rsplit('.', 1)[0] if '.' in full else ''
            if t == 'enum':
                named[full] = 1
            elif t == 'fixed':
                size = s.get('size')
                named[full] = size if isinstance(size, int) and size >= 0 else 0
            else:
                fields = s.get('fields')
                if not isinstance(fields, list):
                    raise RefusedFile(f'writer schema record {full!r} has no fields list')
                total = 0
                for f in fields:
                    if not isinstance(f, dict) or 'type' not in f:
                        raise RefusedFile(f'writer schema record {full!r} has an invalid field')
                    total += walk(f['type'], ns, depth + 1, open_names + (full,))
                named[full] = total
            return named[full]
        if t in ('array', 'map'):
            item = s.get('items' if t == 'array' else 'values')
            if walk(item, namespace, depth + 1, open_names) == 0:
                raise RefusedFile(f'writer schema has an {t} of zero-byte items')
            return 1
        if t is not None:   # {"type": "string", ...} and friends
            return walk(t, namespace, depth + 1, open_names)
        raise RefusedFile('writer schema has a type without "type"')

    return walk(schema, '', 0, ())


def read_header(handle) -> Header:
    """Magic, metadata (codec, schema) and sync marker, each bounded and checked."""
    head = handle.read(4)
    if not head:
        raise NotAvro('empty file (0 bytes)')
    if head != AVRO_MAGIC:
        raise NotAvro('not an Avro object container file (no Obj\\x01 magic)')
    meta, used = {}, 4
    while True:
        count = _read_long(handle, 'the header')
        if count == 0:
            break
        if count < 0:
            count = -count
            _read_long(handle, 'the header')   # the block's byte size: not needed
        if count > 1000:
            raise RefusedFile(f'header declares {count} metadata entries')
        for _ in range(count):
            parts = []
            for what in ('a header key', 'a header value'):
                n = _read_long(handle, what)
                used += n if n > 0 else 0
                if n < 0 or used > MAX_HEADER_BYTES:
                    raise RefusedFile(f'header larger than {MAX_HEADER_BYTES:,} bytes'
                                      if n >= 0 else 'header has a negative length')
                parts.append(_read_exact(handle, n, what))
            meta[parts[0].decode('utf-8', 'replace')] = parts[1]
    sync = _read_exact(handle, SYNC_SIZE, 'the header sync marker')
    codec = meta.get('avro.codec', b'null').decode('utf-8', 'replace') or 'null'
    if codec not in CODECS:
        raise RefusedFile(f'codec {codec[:40]!r} is not one Braze writes '
                          f'(only {", ".join(CODECS)} are read)')
    if 'avro.schema' not in meta:
        raise NotAvro('Avro header has no writer schema')
    return Header(writer_schema(meta['avro.schema']), codec, sync)


class WriterSchema:
    """A writer schema checked once: its parsed JSON, full name, smallest record, and fastavro's
    compiled form with its named types (made on first use: --plan never needs them)."""

    __slots__ = ('schema', 'fullname', 'min_record_bytes', '_compiled', '_named')

    def __init__(self, schema: dict, fullname: str, min_record_bytes: int):
        self.schema = schema
        self.fullname = fullname
        self.min_record_bytes = min_record_bytes
        self._compiled = self._named = None

    def compiled(self):
        if self._compiled is None:
            self._compiled = fastavro.parse_schema(self.schema)
        return self._compiled

    def named_types(self) -> dict:
        """The named types `schemaless_reader` looks up again for every record, looked up once."""
        if self._named is None:
            self._named = _named_types(self.compiled())
        return self._named


def _named_types(parsed) -> dict:
    """A parsed schema's named types, as `_read_data` takes them (what `schemaless_reader`
    builds before each record)."""
    named = {'writer': {}, 'reader': {}}
    fastavro.parse_schema(parsed, named['writer'])
    return named


_DEFAULT_OPTIONS: dict = {}   # schemaless_reader's defaults: strict UTF-8, no record names


def _fast_decoder():
    """fastavro's private `_read_data`, if it decodes as `schemaless_reader` does; else None.

    `schemaless_reader` repeats its set-up for every record (named types, an options dict):
    ~5,700 of the ~124,000 instructions a record of the benchmark's corpus takes to decode
    (callgrind). `_read_data` is the decoding alone, as fastavro's own file reader calls it per
    record. It is private, so it is used only after it decodes a probe record of every kind of
    field exactly as the public call does: a release that renames or changes it gets the
    public call, and the tests check that the fastavro this project pins gets the fast one.
    """
    try:
        from fastavro._read import _read_data
        schema = fastavro.parse_schema({
            'type': 'record', 'name': 'Probe', 'namespace': 'probe', 'fields': [
                {'name': 's', 'type': ['null', 'string']}, {'name': 'n', 'type': 'long'},
                {'name': 'd', 'type': ['null', 'double']}, {'name': 'b', 'type': 'boolean'},
                {'name': 'a', 'type': {'type': 'array', 'items': 'string'}},
                {'name': 'm', 'type': {'type': 'map', 'values': 'int'}},
                {'name': 'e', 'type': {'type': 'enum', 'name': 'E', 'symbols': ['X', 'Y']}},
                {'name': 'e2', 'type': ['null', 'probe.E']},
                {'name': 'r', 'type': ['null', {'type': 'record', 'name': 'R', 'fields': [
                    {'name': 'x', 'type': 'bytes'}]}]}]})
        record = {'s': 'é', 'n': -3, 'd': 1.5, 'b': True, 'a': ['p', 'q'], 'm': {'k': 7},
                  'e': 'Y', 'e2': 'X', 'r': {'x': b'\x00\xff'}}
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, record)
        fast_stream, public_stream = io.BytesIO(buffer.getvalue()), io.BytesIO(buffer.getvalue())
        fast = _read_data(fast_stream, schema, _named_types(schema), None, _DEFAULT_OPTIONS)
        public = fastavro.schemaless_reader(public_stream, schema, None)
        same = fast == public == record and fast_stream.tell() == public_stream.tell()
        return _read_data if same else None
    except Exception:  # noqa: BLE001 - any difference at all means the public call
        return None


FAST_DECODE = _fast_decoder()


# An export holds thousands of files of a few dozen schemas: each schema is checked and parsed
# once per process (~0.1 ms a file otherwise, most of the per-file cost of a 30-day backfill).
# Bounded, so a hostile input of unique schemas costs time, never memory.
MAX_CACHED_SCHEMAS = 256
MAX_CACHED_SCHEMA_BYTES = 64 * 1024
_WRITER_SCHEMAS: dict = {}


def writer_schema(text: bytes) -> WriterSchema:
    """The header's schema text, checked (as `_check_writer_schema`) or found already checked."""
    found = _WRITER_SCHEMAS.get(text)
    if found is None:
        found = _check_writer_schema(text)   # a refused schema raises: never cached
        if len(text) <= MAX_CACHED_SCHEMA_BYTES and len(_WRITER_SCHEMAS) < MAX_CACHED_SCHEMAS:
            _WRITER_SCHEMAS[text] = found
    return found


def _check_writer_schema(raw: bytes) -> WriterSchema:
    try:
        text = raw.decode('utf-8')
        if _json_depth(text) > MAX_SCHEMA_DEPTH * 2:
            raise RefusedFile(f'writer schema nests deeper than {MAX_SCHEMA_DEPTH} levels')
        schema = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, RefusedFile):
            raise
        raise NotAvro(f'writer schema is not valid JSON: {type(exc).__name__}') from None
    min_bytes = schema_min_record_bytes(schema)
    if min_bytes == 0:
        raise RefusedFile('writer schema allows zero-byte records (no record could be counted '
                          'against its bytes)')
    name = schema.get('name', '') if isinstance(schema, dict) else ''
    namespace = schema.get('namespace', '') if isinstance(schema, dict) else ''
    full = name if not isinstance(namespace, str) or not namespace or '.' in str(name) \
        else f'{namespace}.{name}'
    return WriterSchema(schema, str(full), min_bytes)


def _check_block(number: int, count: int, size: int, header: Header) -> None:
    if count < 0:
        raise CorruptBlock(f'block {number} declares {count} records')
    if size < 0:
        raise CorruptBlock(f'block {number} declares {size} bytes')
    if size > MAX_BLOCK_BYTES:
        raise RefusedFile(f'block {number} declares {size:,} bytes, over the '
                          f'{MAX_BLOCK_BYTES:,}-byte limit')
    if count * header.writer.min_record_bytes > MAX_BLOCK_BYTES:
        raise RefusedFile(f'block {number} declares {count:,} records, more than '
                          f'{MAX_BLOCK_BYTES:,} bytes can hold')


def _decompress(number: int, codec: str, data: bytes) -> bytes:
    """A block's data, decompressed to at most MAX_BLOCK_BYTES (no decompression bombs)."""
    if codec == 'null':
        return data
    if codec == 'deflate':
        inflater = zlib.decompressobj(-15)
        try:
            out = inflater.decompress(data, MAX_BLOCK_BYTES + 1)
        except zlib.error as exc:
            raise CorruptBlock(f'block {number}: deflate data is corrupt ({exc})') from None
        if len(out) > MAX_BLOCK_BYTES or inflater.unconsumed_tail:
            raise RefusedFile(f'block {number} inflates past the {MAX_BLOCK_BYTES:,}-byte limit')
        return out
    # snappy (Avro: raw snappy, then a 4-byte CRC32); its preamble states the size.
    stream = io.BytesIO(data[:-4])
    size = shift = 0
    for _ in range(5):
        b = stream.read(1)
        if not b:
            raise CorruptBlock(f'block {number}: snappy data is corrupt (no length)')
        size |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    if size > MAX_BLOCK_BYTES:
        raise RefusedFile(f'block {number} declares {size:,} bytes uncompressed, over the '
                          f'{MAX_BLOCK_BYTES:,}-byte limit')
    from cramjam import snappy
    try:
        return bytes(snappy.decompress_raw(data[:-4]))
    except Exception as exc:  # noqa: BLE001 - cramjam raises its own DecompressionError
        raise CorruptBlock(f'block {number}: snappy data is corrupt ({exc})') from None


def _blocks(handle, header: Header) -> Iterator[Tuple[int, int, int]]:
    """(block number, record count, block bytes) for each block, its header checked against the
    limits; the caller consumes or skips the block's data before asking for the next one, and
    the sync marker that must follow it is checked then."""
    number = 0
    while True:
        count = _read_long(handle, f'block {number} header', eof_ok=True)
        if count is None:
            return
        size = _read_long(handle, f'block {number} header')
        _check_block(number, count, size, header)
        yield number, count, size
        if _read_exact(handle, SYNC_SIZE, f'block {number} sync marker') != header.sync:
            raise CorruptBlock(f'block {number} is not followed by the sync marker')
        number += 1


def block_headers(handle, header: Header) -> Iterator[Tuple[int, int]]:
    """(record count, block bytes) per block, reading only the block headers and sync markers:
    the data is skipped with seek, never read or decompressed (--plan)."""
    for number, count, size in _blocks(handle, header):
        if header.codec == 'null' and count * header.writer.min_record_bytes > size:
            raise CorruptBlock(f'block {number} declares {count:,} records in {size:,} bytes')
        handle.seek(size, io.SEEK_CUR)
        yield count, size


def records(handle, header: Header) -> Iterator[dict]:
    """Every record, block by block, each block checked before its first record is produced."""
    for chunk in record_chunks(handle, header):
        yield from chunk


def record_chunks(handle, header: Header) -> Iterator[List[dict]]:
    """Every record, in lists of at most REPORT_EVERY from one block, each block checked before
    its first record is decoded; a record that does not decode raises once the records before
    it are out, as `records` would have given them.

    A list comprehension per chunk instead of a generator step per record: with the events
    built by tuple.__new__, ~0.23 us of the workers' time per record (~0.27 CPU-s on 1.2M
    events), and a chunk's size bounds what is held at once whatever a block declares.
    """
    parsed = header.writer.compiled()
    named = header.writer.named_types() if FAST_DECODE else None
    min_record_bytes = header.writer.min_record_bytes
    for number, count, size in _blocks(handle, header):
        data = _decompress(number, header.codec,
                           _read_exact(handle, size, f'block {number} data'))
        if count * min_record_bytes > len(data):
            raise CorruptBlock(f'block {number} declares {count:,} records in {len(data):,} '
                               f'bytes')
        stream = io.BytesIO(data)
        left = count
        while left:
            n = min(left, REPORT_EVERY)
            left -= n
            start = stream.tell()
            try:
                if FAST_DECODE:
                    chunk = [FAST_DECODE(stream, parsed, named, None, _DEFAULT_OPTIONS)
                             for _ in range(n)]
                else:
                    chunk = [fastavro.schemaless_reader(stream, parsed, None) for _ in range(n)]
            except Exception as exc:
                stream.seek(start)
                before = _decodable(stream, parsed, named, n)
                if before:
                    yield before
                raise exc
            yield chunk
        if stream.tell() != len(data):
            raise CorruptBlock(f'block {number} holds more data than its {count} records')


def _decodable(stream, parsed, named, n: int) -> List[dict]:
    """The records that decode one by one from `stream`, up to `n`, until one does not."""
    found = []
    try:
        for _ in range(n):
            found.append(FAST_DECODE(stream, parsed, named, None, _DEFAULT_OPTIONS) if FAST_DECODE
                         else fastavro.schemaless_reader(stream, parsed, None))
    except Exception:  # noqa: BLE001 - the caller raises the first decoding error itself
        pass
    return found


# CurrentsEvent(event_type, path, record) without the Python-level __new__ a NamedTuple adds:
# 0.15 instead of 0.23 us an event (the tuple holds every field, its default too).
_event = tuple.__new__


class RecordSpec(NamedTuple):
    """Where a wave records its done files (transforms/completion.py)."""
    rejects: str
    run_id: str
    wave: str


class ReadCurrentsFileFn(beam.DoFn):
    """Decodes one Avro file by field name with its own writer schema.

    A corrupt, truncated, empty, non-Avro or hostile file never stops the run: the records that
    decode go on, the rest of the file becomes one `unreadable_file` reject. Each bundle's files
    are accounted (transforms/completion.py) unless `account` is off (replay), and recorded as
    done once every event is settled when `record` says where.
    """

    reporter, stop = progress.NO_REPORTER, progress.NO_STOP   # until setup()
    completion = None   # until start_bundle()

    def __init__(self, event_types: FrozenSet[str], skip_files: FrozenSet[str] = frozenset(),
                 live: LiveChannel = LiveChannel(),
                 credentials: StoreCredentials = StoreCredentials(),
                 record: Optional[RecordSpec] = None, account: bool = True):
        self.event_types = event_types
        self.skip_files = skip_files
        self.live = live
        self.credentials = credentials
        self.record = record
        self.account = account

    def setup(self):
        self.credentials.install()  # S3/Azure secrets, once per worker process
        self.reporter = self.live.reporter()
        self.stop = self.live.stop()

    def start_bundle(self):
        self.completion = None
        if self.account:
            self.completion = completion.begin(
                completion.RecordWriter(*self.record) if self.record else None)

    def process(self, element):
        path, event_type = element[0], element[1]
        done = self.completion
        if done is not None:
            size, stamp = (element[2], element[3]) if len(element) > 3 else (0, 0.0)
            done.opened(path, event_type, size, stamp)
        if self.stop.is_set():   # stopping: this file stays for --resume
            counts.counter(counts.FILES_UNREAD).inc()
            if done is not None:
                done.read_stopped(path, 0)
            return
        decoded = reported = 0
        handle = None
        ended = rejected = False   # read to its end, or to where it would not (one reject)
        try:
            try:
                if path in self.skip_files:   # a worker died on it: one reject, never opened
                    raise UnreadableFile('not read: listed in --skip_files')
                handle = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
                header = read_header(handle)
                if event_type is None:
                    event_type = self._type_from_header(header)
                    if event_type is None:
                        ended = True
                        return
                    if done is not None:
                        done.typed(path, event_type)
                chunks = record_chunks(handle, header)
            except Exception as exc:
                ended = rejected = True
                yield self._unreadable(path, event_type, exc, decoded)
                return
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except Exception as exc:
                    ended = rejected = True
                    yield self._unreadable(path, event_type, exc, decoded)
                    return
                if decoded - reported >= REPORT_EVERY:
                    self.reporter.add(progress.READ, decoded - reported)
                    reported = decoded
                    if self.stop.is_set():   # this chunk and the rest stay for --resume
                        counts.counter(counts.FILES_UNREAD).inc()
                        return
                # Yield outside the try: an error downstream must not pass for a bad file.
                decoded += len(chunk)
                yield from [_event(CurrentsEvent, (event_type, path, record, None))
                            for record in chunk]
            ended = True
            counts.counter(counts.FILES_READ).inc()
        finally:
            self.reporter.add(progress.READ, decoded - reported)
            self.reporter.add(progress.FILES_DONE)
            if decoded:
                counts.counter(counts.READ, event_type).inc(decoded)
            if handle is not None:
                handle.close()
            if done is not None:
                if ended:
                    done.read_done(path, decoded, file_rejected=rejected)
                else:
                    done.read_stopped(path, decoded)

    def _type_from_header(self, header: Header) -> Optional[str]:
        """No event_type= in the path: the writer schema's full name says which type it is."""
        event_type = event_type_from_schema_name(header.writer.fullname, self.event_types)
        if event_type is None or event_type not in self.event_types:
            counts.counter(counts.FILES_SKIPPED, 'skip_type').inc()
            return None
        return event_type

    @staticmethod
    def _unreadable(path, event_type, exc, decoded):
        counts.counter(counts.FILES_REJECTED).inc()
        detail = f'{type(exc).__name__}: {exc}'.replace('\n', ' ')[:500]
        where = 'no records decoded' if not decoded else f'{decoded} records decoded before'
        return beam.pvalue.TaggedOutput(
            REJECTS, Reject(UNREADABLE_FILE, event_type, path, f'{detail} ({where})'))


class ReadCurrentsEvents(beam.PTransform):
    """Listed files, or units listed on the workers → (CurrentsEvent, Reject) PCollections.

    Files listed by the launcher ((path, type, bytes, stamp), largest first) are dealt in turn
    into SPREAD groups: group g holds files g, g + SPREAD, g + 2 x SPREAD, ... Only the group
    numbers go through a plain GroupByKey, to spread the groups over the workers (Reshuffle
    re-windows every element, ~30% slower on 20,000 files); each group's files are then taken
    from the list, which travels in the job graph packed (transforms/packing.py), not as one
    shuffled element per file. Beam's local runner deals the groups round-robin, so the local
    workers finish together; on Dataflow the groups are the unit of parallelism. A large range
    comes as `ListOnWorkers` (transforms/expand.py) instead: no file is in the job graph.
    """

    def __init__(self, files, event_types: FrozenSet[str],
                 skip_files: FrozenSet[str] = frozenset(), live: LiveChannel = LiveChannel(),
                 credentials: StoreCredentials = StoreCredentials(),
                 record: Optional[RecordSpec] = None):
        super().__init__()
        self.files = files if isinstance(files, beam.PTransform) else PackedList(files)
        self.event_types = event_types
        self.skip_files = skip_files
        self.live = live
        self.credentials = credentials
        self.record = record

    def expand(self, pbegin):
        if isinstance(self.files, beam.PTransform):
            files = pbegin | 'ListOnWorkers' >> self.files
        else:
            files = (pbegin
                     | 'Start' >> beam.Impulse()
                     | 'Groups' >> beam.FlatMap(_groups, len(self.files)).with_output_types(
                         Tuple[int, int])
                     | 'SpreadGroups' >> beam.GroupByKey()
                     | 'OneByOne' >> beam.FlatMap(_files_of, self.files))
        result = files | 'DecodeAvro' >> beam.ParDo(
            ReadCurrentsFileFn(self.event_types, self.skip_files, self.live, self.credentials,
                               self.record)).with_outputs(REJECTS, main='events')
        return result.events, result[REJECTS]


SPREAD = 4096   # groups the files are dealt into: far more than workers (or threads) read


def _groups(_, files: int):
    return ((number, number) for number in range(min(files, SPREAD)))


def _files_of(group, files):
    return files[group[0]::SPREAD]
