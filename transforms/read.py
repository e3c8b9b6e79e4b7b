"""Read: list Currents files (prune and skip by path), decode them, dead-letter what won't decode."""
from typing import FrozenSet, Optional

import apache_beam as beam
import fastavro
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import counts
from transforms.events import event_type_from_schema_name, schema_type_name
from transforms.model import UNREADABLE_FILE, CurrentsEvent, Reject
from transforms.paths import FileSelector, UsageError, is_glob

REJECTS = 'rejects'


def input_pattern(input_path: str) -> str:
    """A match pattern for --input: a glob as given, a file as is, a folder read recursively."""
    if is_glob(input_path):
        return input_path
    if not input_path.startswith('gs://'):
        import os
        if os.path.isdir(input_path):
            return input_path.rstrip('/') + '/**'
        return input_path
    if input_path.endswith('/'):
        return input_path + '**'
    found = FileSystems.match([input_path], limits=[1])[0].metadata_list
    if found and found[0].path == input_path:
        return input_path
    return input_path + '/**'


def check_input_exists(pattern: str) -> None:
    """Fail fast with one line when --input matches nothing (SPEC §6: 'no input')."""
    try:
        found = FileSystems.match([pattern], limits=[1])[0].metadata_list
    except Exception as exc:  # Beam raises BeamIOError with nested details
        raise UsageError(f'cannot list --input {pattern}: {type(exc).__name__}') from None
    if not found:
        raise UsageError(f'no input files match {pattern}')


class _SelectFiles(beam.DoFn):
    """Keeps the files this run reads; counts the rest as skipped without opening them."""

    def __init__(self, selector: FileSelector):
        self.selector = selector

    def process(self, metadata):
        path = metadata.path
        if path.endswith('/'):
            return []  # a GCS "folder" placeholder object, not a file
        decision = self.selector.decide(path)
        if decision.action.startswith('skip_'):
            counts.counter(counts.FILES_SKIPPED, decision.action).inc()
            return []
        return [(path, decision.event_type)]


class ListCurrentsFiles(beam.PTransform):
    """pattern → (path, event type or None) for every file this run reads, spread for parallelism."""

    def __init__(self, pattern: str, selector: FileSelector):
        super().__init__()
        self.pattern = pattern
        self.selector = selector

    def expand(self, pbegin):
        return (pbegin
                | 'Pattern' >> beam.Create([self.pattern])
                | 'Match' >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
                | 'Select' >> beam.ParDo(_SelectFiles(self.selector))
                | 'SpreadFiles' >> beam.Reshuffle())


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


class ReadCurrentsFileFn(beam.DoFn):
    """Decodes one Avro file by field name with its own writer schema.

    A corrupt, truncated, empty or non-Avro file never stops the run: the records that decode
    go on, the rest of the file becomes one `unreadable_file` reject.
    """

    def __init__(self, event_types: FrozenSet[str]):
        self.event_types = event_types

    def process(self, element):
        path, event_type = element
        decoded = 0
        handle = None
        try:
            try:
                handle = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
                _check_magic(handle)
                reader = fastavro.reader(handle)
                if event_type is None:
                    event_type = self._type_from_header(reader, path)
                    if event_type is None:
                        return
                records = iter(reader)
            except Exception as exc:
                yield self._unreadable(path, event_type, exc, decoded)
                return
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except Exception as exc:
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

    def _type_from_header(self, reader, path) -> Optional[str]:
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
    """--input → (CurrentsEvent PCollection, Reject PCollection)."""

    def __init__(self, pattern: str, selector: FileSelector):
        super().__init__()
        self.pattern = pattern
        self.selector = selector

    def expand(self, pbegin):
        files = pbegin | 'ListFiles' >> ListCurrentsFiles(self.pattern, self.selector)
        result = files | 'DecodeAvro' >> beam.ParDo(
            ReadCurrentsFileFn(self.selector.event_types)).with_outputs(REJECTS, main='events')
        return result.events, result[REJECTS]


__all__ = ['ReadCurrentsEvents', 'ListCurrentsFiles', 'ReadCurrentsFileFn', 'input_pattern',
           'check_input_exists', 'schema_type_name']
