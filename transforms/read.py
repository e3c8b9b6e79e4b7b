"""Read: decode the listed Currents files; what will not decode becomes a reject."""
from typing import FrozenSet, List, Optional, Tuple

import apache_beam as beam
import fastavro
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import counts
from transforms.credentials import StoreCredentials
from transforms.events import event_type_from_schema_name
from transforms.model import UNREADABLE_FILE, CurrentsEvent, Reject

REJECTS = 'rejects'


AVRO_MAGIC = b'Obj\x01'


class NotAvro(ValueError):
    pass


def _check_magic(handle) -> None:
    """A clear reason for empty and non-Avro files, instead of a decoder's puzzling error."""
    head = handle.read(4)
    if not head:
        raise NotAvro('empty file (0 bytes)')
    if head != AVRO_MAGIC:
        raise NotAvro('not an Avro object container file (no Obj\\x01 magic)')
    handle.seek(0)


class CorruptBlock(ValueError):
    pass


def _checked_records(reader):
    """Records block by block, refusing a block whose record count does not match its bytes.

    fastavro trusts each block's count: a corrupted (smaller, zero, negative) count would
    silently skip the rest of the block. Here leftover bytes make the rest of the file a reject.
    """
    for number, block in enumerate(reader):
        if block.num_records < 0:
            raise CorruptBlock(f'block {number} declares {block.num_records} records')
        yield from block
        if block.bytes_.read(1):
            raise CorruptBlock(f'block {number} holds more data than its {block.num_records} '
                               f'records')


def _salvage(path: str, skip: int) -> list:
    """The whole records of a block whose end is damaged (e.g. a file cut in its sync marker).

    Block-level reading drops such a block entirely; fastavro's record reader yields its
    records before it looks for the sync marker. Only used on files that already failed.
    """
    found = []
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            for index, record in enumerate(fastavro.reader(handle)):
                if index >= skip:
                    found.append(record)
    except Exception:
        pass
    return found


class ReadCurrentsFileFn(beam.DoFn):
    """Decodes one Avro file by field name with its own writer schema.

    A corrupt, truncated, empty or non-Avro file never stops the run: the records that decode
    go on, the rest of the file becomes one `unreadable_file` reject.
    """

    def __init__(self, event_types: FrozenSet[str],
                 credentials: StoreCredentials = StoreCredentials()):
        self.event_types = event_types
        self.credentials = credentials

    def setup(self):
        self.credentials.install()  # S3/Azure secrets, once per worker process

    def process(self, element):
        path, event_type = element
        decoded = 0
        handle = None
        try:
            try:
                handle = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
                _check_magic(handle)
                reader = fastavro.block_reader(handle)
                if event_type is None:
                    event_type = self._type_from_header(reader)
                    if event_type is None:
                        return
                records = _checked_records(reader)
            except Exception as exc:
                yield self._unreadable(path, event_type, exc, decoded)
                return
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except Exception as exc:
                    if not isinstance(exc, CorruptBlock):
                        for record in _salvage(path, decoded):
                            decoded += 1
                            yield CurrentsEvent(event_type, path, record)
                    yield self._unreadable(path, event_type, exc, decoded)
                    return
                decoded += 1
                # Yield outside the try: an error downstream must not pass for a bad file.
                yield CurrentsEvent(event_type, path, record)
            counts.counter(counts.FILES_READ).inc()
        finally:
            if decoded:
                counts.counter(counts.READ, event_type).inc(decoded)
            if handle is not None:
                handle.close()

    def _type_from_header(self, reader) -> Optional[str]:
        """No event_type= in the path: the writer schema's full name says which type it is."""
        fullname = reader.writer_schema.get('name', '') if isinstance(
            reader.writer_schema, dict) else ''
        event_type = event_type_from_schema_name(fullname)
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
    """Listed files → (CurrentsEvent PCollection, Reject PCollection)."""

    def __init__(self, files: List[Tuple[str, Optional[str]]], event_types: FrozenSet[str],
                 credentials: StoreCredentials = StoreCredentials()):
        super().__init__()
        self.files = files
        self.event_types = event_types
        self.credentials = credentials

    def expand(self, pbegin):
        result = (pbegin
                  | 'Files' >> beam.Create(self.files)
                  | 'SpreadFiles' >> beam.Reshuffle()
                  | 'DecodeAvro' >> beam.ParDo(
                      ReadCurrentsFileFn(self.event_types, self.credentials)
                  ).with_outputs(REJECTS, main='events'))
        return result.events, result[REJECTS]
