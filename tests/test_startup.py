"""The command imports only the object-store clients its arguments name (pipeline/startup.py).

The pure decision is checked directly; what it does to a real interpreter is checked in fresh
subprocesses (an import cannot be undone in this one). The real command over each store is in
test_gcs.py, test_s3.py and test_azure.py (`--plan` through `python -m pipeline`).
"""
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.startup import (ARROW, COLLECTOR_THRESHOLDS, DATAFLOW_CLIENT, GCP_API_CLIENT,
                              GCP_CONNECTORS, MONGODB_ABSENT, MONGODB_CLIENT, MONGODB_IO,
                              PUBSUB_CLIENT, STORE_MODULES, skip_unneeded_imports,
                              unneeded_modules)

ROOT = Path(__file__).resolve().parents[1]
GCS, S3, AZURE = (module for _, module in STORE_MODULES)
GCP = [GCP_CONNECTORS, GCP_API_CLIENT]
NEVER_USED = [DATAFLOW_CLIENT, PUBSUB_CLIENT, 'bson', 'pymongo', 'pyarrow']


@pytest.mark.parametrize('argv, skipped', [
    (['--input', '/data/currents', '--rejects', '/tmp/r'], [GCS, S3, AZURE, *GCP]),
    (['--input', 'gs://b/currents'], [S3, AZURE]),
    (['--input', '/data', '--rejects', 'GS://b/rejects'], [S3, AZURE]),   # scheme in any case
    (['--input', 's3://b/currents', '--rejects', '/tmp/r'], [GCS, AZURE, *GCP]),
    (['--input', 'azfs://acct/c/export'], [GCS, S3, *GCP]),
    (['--input=s3://b/x', '--summary_output=azfs://a/c/s.json'], [GCS, *GCP]),
    (['replay', '--rejects', 'gs://b/rejects'], [S3, AZURE]),
    ([], [GCS, S3, AZURE, *GCP]),
])
def test_a_store_is_skipped_only_when_no_argument_names_it(argv, skipped):
    """...and the Dataflow, Pub/Sub and MongoDB clients and pyarrow are skipped by every
    command that is not a Dataflow run."""
    assert unneeded_modules(argv) == skipped + NEVER_USED


@pytest.mark.parametrize('argv', [
    ['--input', '/data', '--runner', 'DataflowRunner'],
    ['--input', '/data', '--runner=dataflow'],
])
def test_a_dataflow_run_skips_nothing(argv):
    assert unneeded_modules(argv) == []


def test_skipping_marks_each_unneeded_module_absent_and_keeps_what_is_there():
    modules = {'pipeline': object(), S3: 'already imported'}
    assert skip_unneeded_imports(['--input', '/data'], modules) == [
        GCS, S3, AZURE, *GCP, *NEVER_USED]
    assert modules[GCS] is None and modules[AZURE] is None and modules[GCP_CONNECTORS] is None
    assert modules[DATAFLOW_CLIENT] is None and modules[PUBSUB_CLIENT] is None
    assert all(modules[m] is None for m in (GCP_API_CLIENT, *MONGODB_CLIENT, ARROW))
    assert modules[S3] == 'already imported'


def test_skipping_is_a_no_op_once_beam_is_imported():
    modules = {'apache_beam': object()}
    assert skip_unneeded_imports(['--input', '/data'], modules) == []
    assert list(modules) == ['apache_beam']


def test_the_skipped_modules_are_the_ones_beam_imports_best_effort():
    """Each name is a real module, imported by Beam inside `try ... except ImportError` (a
    Beam upgrade that moves them makes this fail, not the command)."""
    import importlib.util
    import inspect

    import apache_beam.io
    import apache_beam.io.filesystems
    for module in (GCS, S3, AZURE, GCP_CONNECTORS):
        assert importlib.util.find_spec(module) is not None, module
    filesystems = inspect.getsource(apache_beam.io.filesystems)
    io_package = inspect.getsource(apache_beam.io)
    for module in (GCS, S3, AZURE):
        assert f'try:\n  from {module} import' in filesystems, module
    assert f'try:\n  from {GCP_CONNECTORS} import' in io_package
    import apache_beam.runners.dataflow.dataflow_runner as dataflow_runner
    package, name = DATAFLOW_CLIENT.rsplit('.', 1)
    assert importlib.util.find_spec(DATAFLOW_CLIENT) is not None
    assert f'try:\n  from {package} import {name} as' in inspect.getsource(dataflow_runner)
    # Beam's Pub/Sub module, which every file sink's expand imports, takes its client best effort
    import apache_beam.io.gcp.pubsub as beam_pubsub
    import apache_beam.io.iobase as iobase
    package, name = PUBSUB_CLIENT.rsplit('.', 1)
    assert importlib.util.find_spec(PUBSUB_CLIENT) is not None
    assert f'try:\n  from {package} import {name}\nexcept ImportError:' in \
        inspect.getsource(beam_pubsub)
    assert 'from apache_beam.io.gcp.pubsub import' in inspect.getsource(iobase.Write.expand)
    # the retry filters take the Google API client's HttpError best effort
    import apache_beam.utils.retry as retry
    assert importlib.util.find_spec(GCP_API_CLIENT) is not None
    assert f'try:\n  from {GCP_API_CLIENT}.base.py.exceptions import HttpError' in \
        inspect.getsource(retry)
    # the MongoDB IO takes bson first, then pymongo, best effort, and says so when absent
    import apache_beam.io.mongodbio as mongodbio
    source = inspect.getsource(mongodbio)
    bson, pymongo = MONGODB_CLIENT
    assert importlib.util.find_spec(bson) is not None and importlib.util.find_spec(pymongo)
    block = source[source.index('try:\n'):source.index('except ImportError:')]
    assert block.index(f'from {bson} import') < block.index(f'from {pymongo} import')
    assert f'_LOGGER.warning("{MONGODB_ABSENT}")' in source and mongodbio.__name__ == MONGODB_IO
    # the type hints take pyarrow best effort (and Beam's pyarrow hotfix needs pyarrow)
    import apache_beam.typehints as typehints
    assert importlib.util.find_spec(ARROW) is not None
    assert f'try:\n  import {ARROW} as _\nexcept ImportError:' in inspect.getsource(typehints)


def test_the_command_is_imported_after_the_skips_between_collector_off_and_freeze(monkeypatch):
    """In-process (the import itself is instant here, Beam being loaded): the order of the
    steps, the local --input folder's walk started first of all (pipeline/walk.py). What
    they do to a fresh interpreter is checked in a subprocess below."""
    import pipeline.main
    import pipeline.startup as startup
    steps = []

    class Collector:
        def disable(self):
            steps.append('disable')

        def freeze(self):
            steps.append('freeze')

        def set_threshold(self, *thresholds):
            steps.append(('threshold', thresholds))

        def enable(self):
            steps.append('enable')
    monkeypatch.setattr(startup, 'gc', Collector())
    monkeypatch.setattr(startup, 'skip_unneeded_imports',
                        lambda argv: steps.append(('skip', list(argv))) or [])
    monkeypatch.setattr(startup, 'start_ahead', lambda argv: steps.append(('walk', list(argv))))
    assert startup.import_command(iter(['--input', '/data'])) is pipeline.main.main
    assert steps == [('walk', ['--input', '/data']), ('skip', ['--input', '/data']), 'disable',
                     'freeze', ('threshold', (100_000, 20, 100)), 'enable']


def _record(message):
    return logging.LogRecord(MONGODB_IO, logging.WARNING, __file__, 1, message, None, None)


@pytest.mark.parametrize('skipped, shown', [
    (['bson', 'pymongo'], [False, True]),   # skipped: its absence is not news
    ([], [True, True]),                     # a Dataflow run imports it: nothing is filtered
])
def test_only_the_skipped_mongodb_clients_absence_is_filtered_and_only_during_the_import(
        monkeypatch, skipped, shown):
    """In-process (the import is instant here): what Beam's MongoDB IO logs while the command
    is imported, the filter being on from before the import until after it."""
    import pipeline.startup as startup
    logger = logging.getLogger(MONGODB_IO)
    seen = {}

    class Collector:
        def disable(self):   # the last step before the import
            seen['shown'] = [bool(logger.filter(_record(m)))
                             for m in (MONGODB_ABSENT, 'Something else went wrong.')]

        def freeze(self):
            pass

        def set_threshold(self, *thresholds):
            pass

        def enable(self):
            seen['enable'] = bool(logger.filter(_record(MONGODB_ABSENT)))
    monkeypatch.setattr(startup, 'gc', Collector())
    monkeypatch.setattr(startup, 'skip_unneeded_imports', lambda argv: skipped)
    monkeypatch.setattr(startup, 'start_ahead', lambda argv: None)
    startup.import_command(['--input', '/data'])
    assert seen['shown'] == shown and seen['enable'] == shown[0]
    assert logger.filter(_record(MONGODB_ABSENT)) and not logger.filters   # gone after


PROBE = r'''
import json, sys
from pipeline.startup import skip_unneeded_imports
skipped = skip_unneeded_imports(sys.argv[2:])
import pipeline.main
import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
with beam.Pipeline(runner='FnApiRunner') as p:   # a file sink, as the rejects are written
    _ = p | beam.Create(['x']) | beam.io.WriteToText(sys.argv[1] + '/out')
def usable(path):
    try:
        FileSystems.get_filesystem(path)
        return True
    except ValueError:
        return False
print(json.dumps({
    'skipped': skipped,
    'usable': {s: usable(p) for s, p in (('local', '/tmp/x'), ('gs', 'gs://b/x'),
                                          ('s3', 's3://b/x'), ('azfs', 'azfs://a/c/x'))},
    'imported': sorted(m for m in ('boto3', 'azure.storage.blob', 'google.cloud.storage',
                                   'apache_beam.io.gcp.bigquery', 'google.cloud.dataflow',
                                   'google.cloud.pubsub', 'apitools', 'pymongo', 'pyarrow')
                       if sys.modules.get(m) is not None),
    'written': open(sys.argv[1] + '/out-00000-of-00001').read(),
}))
'''


def probe(*argv):
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, '-c', PROBE, out, *argv], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow   # a fresh interpreter importing Beam, ~1.5 s
def test_a_local_run_imports_no_store_client_and_still_reads_local_files():
    seen = probe('--input', '/data/currents', '--rejects', '/tmp/rejects')
    assert seen['usable'] == {'local': True, 'gs': False, 's3': False, 'azfs': False}
    assert seen['imported'] == []   # not even the Pub/Sub client, a file sink being built
    assert seen['written'] == 'x\n'


@pytest.mark.slow   # a fresh interpreter importing Beam, ~1.5 s
def test_a_named_store_is_usable_and_only_it_is_imported():
    seen = probe('--input', 's3://b/currents', '--rejects', 's3://b/rejects')
    assert seen['usable'] == {'local': True, 'gs': False, 's3': True, 'azfs': False}
    assert seen['imported'] == ['boto3']


@pytest.mark.slow   # a fresh interpreter importing Beam, ~1.5 s
def test_a_dataflow_run_keeps_every_store():
    seen = probe('--input', '/data', '--runner', 'DataflowRunner')
    assert seen['skipped'] == []
    assert all(seen['usable'].values())
    assert seen['imported'] == ['apache_beam.io.gcp.bigquery', 'apitools', 'azure.storage.blob',
                                'boto3', 'google.cloud.dataflow', 'google.cloud.pubsub',
                                'google.cloud.storage', 'pyarrow', 'pymongo']


def test_nothing_changes_in_this_interpreter_where_beam_is_imported():
    assert 'apache_beam' in sys.modules   # the test session imported it
    assert skip_unneeded_imports(['--input', '/data']) == []
    assert sys.modules.get(GCS, 'absent') is not None


@pytest.mark.slow   # a fresh interpreter importing Beam, ~1.5 s
def test_the_command_is_imported_with_its_objects_frozen_and_collection_back_on():
    proc = subprocess.run([sys.executable, '-c', (
        'import gc, json, logging, sys\n'
        'from pipeline.startup import import_command\n'
        'main = import_command(["--input", "/data"])\n'
        'print(json.dumps({"frozen": gc.get_freeze_count(), "enabled": gc.isenabled(),\n'
        '                  "thresholds": gc.get_threshold(),\n'
        '                  "main": main.__module__ + "." + main.__name__,\n'
        '                  "gcs_skipped": sys.modules.get("apache_beam.io.gcp.gcsfilesystem",\n'
        '                                                 "absent") is None,\n'
        '                  "mongodb_skipped": sys.modules.get("pymongo", "absent") is None,\n'
        '                  "filters": len(logging.getLogger("apache_beam.io.mongodbio")\n'
        '                                 .filters)}))')],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen['frozen'] > 50_000 and seen['enabled']
    assert seen['thresholds'] == [100_000, 20, 100] == list(COLLECTOR_THRESHOLDS)
    assert seen['main'] == 'pipeline.main.main' and seen['gcs_skipped']
    # Beam's warning that the MongoDB client is absent is not shown; the filter is gone after
    assert seen['mongodb_skipped'] and proc.stderr == '' and seen['filters'] == 0


@pytest.mark.slow   # a fresh interpreter importing Beam, ~1.5 s
def test_the_command_walks_a_local_input_folder_while_it_imports(tmp_path):
    (tmp_path / 'a' / 'b').mkdir(parents=True)
    (tmp_path / 'a' / 'b' / 'x.avro').write_bytes(b'x' * 5)
    proc = subprocess.run([sys.executable, '-c', (
        'import json, sys\n'
        'from pipeline.startup import import_command\n'
        'import_command(sys.argv[1:])\n'
        'import pipeline.walk as walk\n'
        'ahead = walk._ahead\n'
        'print(json.dumps({"child": ahead is not None and ahead.pid > 0,\n'
        '                  "taken": walk.take_ahead(ahead.folder, ahead.selector).entries\n'
        '                           if ahead else None}))'),
        '--input', str(tmp_path), '--rejects', str(tmp_path / 'r')],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen['child']
    assert [entry[:2] for entry in seen['taken']] == [[str(tmp_path / 'a' / 'b' / 'x.avro'), 5]]
