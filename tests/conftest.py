import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get('CURRENTS_SHARED', ROOT.parent / 'shared'))
SAMPLES = SHARED / 'currents-samples'


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
