import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get('CURRENTS_SHARED', ROOT.parent / 'shared'))
SAMPLES = SHARED / 'currents-samples'


@pytest.fixture(scope='session', autouse=True)
def _no_beam_temp_folders_left():
    """Beam makes a temp folder in every Pipeline() and removes it only in run(); some tests
    build pipelines they never run (graph and Dataflow translation checks)."""
    import glob
    import shutil
    import tempfile
    pattern = os.path.join(tempfile.gettempdir(), 'beam-pipeline-temp*')
    before = set(glob.glob(pattern))
    yield
    for folder in set(glob.glob(pattern)) - before:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope='session')
def samples_dir() -> Path:
    if not (SAMPLES / 'avro').is_dir():
        pytest.fail(f'Braze sample files not found at {SAMPLES} (set CURRENTS_SHARED)')
    return SAMPLES

# CI replays the same fuzzing examples every run (no flaky red builds); local runs explore anew.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile('ci', derandomize=True)
if os.environ.get('CI'):
    _hypothesis_settings.load_profile('ci')

# Whole modules that belong to the slow tier (emulators, subprocess runs of the tool, fresh
# installs, large corpora); single slow tests elsewhere carry @pytest.mark.slow themselves.
SLOW_MODULES = {'test_gcs', 'test_reliability', 'test_dataflow', 'test_bench_smoke',
                'test_local_workers', 'test_fuzz'}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit('.', 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
