"""What a backfill of many files costs per file: the graph's lists, the writer schemas, the
order the files are dealt to the workers (issue: backfill-shaped input)."""
import bz2
import pickle
import threading

import apache_beam as beam
import fastavro
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from apache_beam.io.filesystems import FileSystems

from pipeline import listing
from pipeline.listing import input_pattern, list_currents_files
from pipeline.walk import walk_folder
from pipeline.paths import FileSelector
from transforms import read
from transforms import packing
from transforms.packing import PackedList
from transforms.read import ReadCurrentsEvents, read_header
from pipeline.waves import largest_first
from tests.helpers import LAYOUT, record, write_file

SEND, OPEN = 'users.messages.email.Send', 'users.messages.email.Open'


def month_of_paths(n=20_000):
    return [(LAYOUT.format(t=SEND, d=f'2024-05-{1 + i // 720 % 28:02d}-{i % 24:02d}', n=i), SEND)
            for i in range(n)]


def test_a_packed_file_list_round_trips_and_pickles_small():
    files = month_of_paths()
    packed = PackedList(files)
    back = pickle.loads(pickle.dumps(packed))
    assert list(back) == files and len(back) == 20_000 and back[7] == files[7]
    assert isinstance(back[0], tuple)
    plain, small = len(pickle.dumps(files)), len(pickle.dumps(packed))
    # ~4.4 MB as a list, which Beam's bz2 (level 9) takes ~0.5 s to compress each time it
    # pickles the graph; packed it is a few hundred KB.
    assert plain > 4_000_000
    assert small * 10 < plain
    assert len(bz2.compress(pickle.dumps(packed), 9)) < 400_000


def test_a_packed_list_is_compressed_once_and_decoded_only_when_read(monkeypatch):
    files = month_of_paths(1000)
    packed = PackedList(files)
    compressed, decompressed = [], []
    real_compress, real_decompress = packing.zlib.compress, packing.zlib.decompress
    monkeypatch.setattr(packing.zlib, 'compress',
                        lambda *a: compressed.append(1) or real_compress(*a))
    monkeypatch.setattr(packing.zlib, 'decompress',
                        lambda *a: decompressed.append(1) or real_decompress(*a))
    first = pickle.dumps(packed)
    again = pickle.loads(pickle.dumps(pickle.loads(first)))   # as a worker re-pickles a DoFn
    assert pickle.dumps(packed) == first and len(compressed) == 1 and decompressed == []
    assert again[999] == files[999] and list(again) == files and len(again) == 1000
    assert len(decompressed) == 1                               # decoded once, on first use
    assert again == packed and repr(again) == 'PackedList(1000 items)'
    assert PackedList([1]) != PackedList([2]) and PackedList([1]) != (1,)
    assert PackedList() == PackedList([]) and len(pickle.loads(pickle.dumps(PackedList()))) == 0


def test_each_writer_schema_is_checked_once_per_process(tmp_path, monkeypatch):
    checked = []
    real = read._check_writer_schema
    monkeypatch.setattr(read, '_check_writer_schema', lambda raw: checked.append(raw) or real(raw))
    monkeypatch.setattr(read, '_WRITER_SCHEMAS', {})
    paths = [write_file(tmp_path, t, [record(i)], n=i) for i in range(3) for t in (SEND, OPEN)]
    headers = []
    for path in paths:
        with open(path, 'rb') as f:
            headers.append(read_header(f))
            assert len(list(read.records(f, headers[-1]))) == 1
    assert len(checked) == 2                       # one per distinct schema, not per file
    assert headers[0].writer is headers[2].writer is headers[4].writer
    assert headers[0].writer.compiled() is headers[2].writer.compiled()
    names = [h.writer.fullname for h in headers]
    assert set(names) == {names[0], names[1]} and names[0] != names[1]


def test_the_schema_cache_is_bounded_in_entries_and_size(monkeypatch):
    monkeypatch.setattr(read, '_WRITER_SCHEMAS', {})

    def text(i, pad=0):
        return (b'{"type":"record","name":"R%d","doc":"%s","fields":[{"name":"a","type":"int"}]}'
                % (i, b'x' * pad))
    for i in range(256):
        read.writer_schema(text(i))
    assert len(read._WRITER_SCHEMAS) == 256
    read.writer_schema(text(256))                   # the 257th is checked, not kept
    assert len(read._WRITER_SCHEMAS) == 256 and text(256) not in read._WRITER_SCHEMAS
    monkeypatch.setattr(read, '_WRITER_SCHEMAS', {})
    at_limit = text(0, 65_536 - len(text(0)))
    assert len(at_limit) == 65_536
    read.writer_schema(at_limit)
    read.writer_schema(text(1, 65_537 - len(text(1))))
    assert list(read._WRITER_SCHEMAS) == [at_limit]


def test_a_refused_schema_is_refused_every_time_and_never_cached(monkeypatch):
    monkeypatch.setattr(read, '_WRITER_SCHEMAS', {})
    recursive = b'{"type":"record","name":"L","fields":[{"name":"next","type":"L"}]}'
    for _ in range(2):
        try:
            read.writer_schema(recursive)
        except read.RefusedFile as exc:
            assert 'recursive' in str(exc)
        else:
            raise AssertionError('a recursive schema was accepted')
    assert read._WRITER_SCHEMAS == {}


def test_largest_first_orders_a_wave_by_bytes_keeping_ties_in_listing_order():
    wave = [('a', SEND, 10), ('b', OPEN, 300), ('c', SEND, 10), ('d', None, 5000)]
    assert largest_first(wave) == [('d', None), ('b', OPEN), ('a', SEND), ('c', SEND)]


_seen = []
_seen_lock = threading.Lock()


class _RecordBundles(beam.DoFn):
    """Notes which bundle (worker) met which file first, in order."""

    def start_bundle(self):
        self.bundle = object()

    def process(self, event):
        with _seen_lock:
            if not any(source == event.source for _, source in _seen):
                _seen.append((id(self.bundle), event.source))


def test_files_are_dealt_to_the_workers_in_turn_in_the_order_given(tmp_path):
    """Local workers each take every other file of the given order (largest first from the
    launcher), so they finish together."""
    paths = [write_file(tmp_path, SEND, [record(i * 10 + j) for j in range(i + 1)], n=i)
             for i in range(8)]
    order = [(p, SEND) for p in reversed(paths)]
    _seen.clear()
    options = PipelineOptions(direct_num_workers=2, direct_running_mode='multi_threading')
    with beam.Pipeline(options=options) as p:
        events, _ = p | ReadCurrentsEvents(order, frozenset({SEND}))
        _ = events | beam.ParDo(_RecordBundles())
    bundles = {}
    for bundle, source in _seen:
        bundles.setdefault(bundle, []).append(source)
    given = [path for path, _ in order]
    assert sorted(bundles.values()) == sorted([given[0::2], given[1::2]])


def _as_beam_lists(folder):
    found = FileSystems.match([folder + '/**'])[0].metadata_list
    return sorted((m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in found)


def test_a_local_folder_is_listed_as_beams_local_filesystem_lists_it(tmp_path):
    """Same files, sizes and stamps as FileSystems.match on `folder/**`: nested folders, a
    symlinked file (listed), a symlinked folder (not entered), a dangling link (left out)."""
    root = tmp_path / 'export'
    for i in range(3):
        write_file(root, SEND, [record(i)] * (i + 1), n=i, date=f'2024-05-0{i + 1}-00')
    (root / 'top.avro').write_bytes(b'x' * 7)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    (elsewhere / 'hidden.avro').write_bytes(b'y' * 3)
    (root / 'linked-folder').symlink_to(elsewhere, target_is_directory=True)
    (root / 'linked-file.avro').symlink_to(root / 'top.avro')
    (root / 'dangling.avro').symlink_to(tmp_path / 'gone')
    ours = sorted(walk_folder(str(root)))
    assert ours == _as_beam_lists(str(root))
    assert len(ours) == 5 and not any('hidden' in path for path, _, _ in ours)


def test_listing_a_local_folder_by_its_layout_and_a_glob_with_beams_match(tmp_path):
    write_file(tmp_path, SEND, [record(1)])
    selector = FileSelector(frozenset({SEND}))
    folder = list_currents_files(input_pattern(str(tmp_path)), selector)
    glob = list_currents_files(str(tmp_path) + '/currents/*/*/*/*/*/*.avro', selector)
    assert folder.files == glob.files and len(folder.files) == 1
    assert listing.resolve_input(str(tmp_path)) == ('folder', str(tmp_path) + '/')
    assert listing.resolve_input(str(tmp_path) + '/*') == ('glob', str(tmp_path) + '/*')
    assert listing.resolve_input(str(tmp_path / 'missing')) == ('file', str(tmp_path / 'missing'))
    literal = tmp_path / 'exp [prod]'   # an existing folder is taken as it is named
    literal.mkdir()
    assert listing.resolve_input(str(literal)) == ('folder', str(literal) + '/')
    assert listing.resolve_input('gs://b/a[1]/x') == ('glob', 'gs://b/a[1]/x')


def _all_records(path):
    with open(path, 'rb') as f:
        return list(read.records(f, read_header(f)))


def test_records_decode_with_fastavros_per_record_call_exactly_as_the_public_one(
        samples_dir, tmp_path, monkeypatch):
    """Decoding calls fastavro's private per-record `_read_data` (no per-record set-up) with
    the fastavro this project pins; every record of Braze's 94 sample files and of generated
    files of every classic type, on every codec Braze writes, decodes as `schemaless_reader`
    does."""
    from devtools.sample import generate
    assert read.FAST_DECODE is not None, 'fastavro changed: the public call is used'
    files = sorted((samples_dir / 'avro').glob('*.avro'))
    assert len(files) == 94
    generated = generate(tmp_path, events=3000, seed=5, hours=1, codecs=('null', 'deflate',
                                                                          'snappy'))
    files += sorted(generated.files)
    calls = []

    def counted(*args):
        calls.append(1)
        return fast_decode(*args)
    fast_decode = read.FAST_DECODE
    monkeypatch.setattr(read, 'FAST_DECODE', counted)
    fast = [_all_records(path) for path in files]
    assert len(calls) == sum(map(len, fast))
    monkeypatch.setattr(read, 'FAST_DECODE', None)
    public = [_all_records(path) for path in files]
    assert fast == public
    assert sum(map(len, fast)) > 3000


def test_named_types_referenced_by_name_decode_the_same(tmp_path, monkeypatch):
    """A writer schema may define a type once and name it again later (a union of it here):
    the named types are looked up once per schema, as `schemaless_reader` looks them up."""
    schema = {'type': 'record', 'name': 'Ev', 'namespace': 'com.braze', 'fields': [
        {'name': 'id', 'type': 'string'},
        {'name': 'first', 'type': {'type': 'record', 'name': 'Place', 'fields': [
            {'name': 'city', 'type': ['null', 'string']}]}},
        {'name': 'second', 'type': ['null', 'com.braze.Place']},
        {'name': 'kind', 'type': {'type': 'enum', 'name': 'Kind', 'symbols': ['A', 'B']}},
        {'name': 'kinds', 'type': {'type': 'array', 'items': 'com.braze.Kind'}}]}
    rows = [{'id': f'e{i}', 'first': {'city': 'Lyon' if i % 2 else None},
             'second': None if i % 3 else {'city': 'Oslo'}, 'kind': 'B', 'kinds': ['A', 'B']}
            for i in range(50)]
    path = tmp_path / 'named.avro'
    with open(path, 'wb') as out:
        fastavro.writer(out, schema, rows, codec='deflate', sync_interval=200)
    assert _all_records(path) == rows
    monkeypatch.setattr(read, 'FAST_DECODE', None)
    assert _all_records(path) == rows


@pytest.mark.parametrize('private', ['missing', 'raises', 'differs'])
def test_a_fastavro_whose_private_call_changed_falls_back_to_the_public_one(monkeypatch,
                                                                            private):
    import fastavro._read as fastavro_read
    if private == 'missing':
        monkeypatch.delattr(fastavro_read, '_read_data')
    elif private == 'raises':
        def changed(fo, writer_schema, named_schemas, reader_schema, options):
            raise TypeError('_read_data() takes 4 positional arguments')
        monkeypatch.setattr(fastavro_read, '_read_data', changed)
    else:
        real = fastavro_read._read_data

        def changed(*args):
            decoded = real(*args)
            decoded['s'] = decoded['s'].encode()   # e.g. strings as bytes
            return decoded
        monkeypatch.setattr(fastavro_read, '_read_data', changed)
    assert read._fast_decoder() is None
