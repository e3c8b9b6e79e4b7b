import io
import json
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
                'test_local_workers', 'test_fuzz', 'test_cli', 'test_operator_surface',
                'test_isolated_workers', 'test_history_scaling', 'test_resend'}


# Single tests of otherwise fast modules that run the whole tool on a corpus for seconds.
SLOW_TESTS = {
    'test_no_output_of_any_run_contains_the_key', 'test_debug_logs_and_exception_text_never_contain_the_key',
    'test_worker_processes_deliver_the_same', 'test_throttle_holds_the_aggregate_rate',
    'test_retry_after_is_honoured_end_to_end', 'test_retries_exhausted_become_rejects',
    'test_interrupted_backfill_resumes_without_resending_completed_partitions',
    'test_replay_after_400_and_budget_rejects_delivers_everything',
    'test_replay_filters_reasons_and_rejects_again_into_a_new_folder',
    'test_since_last_run_sends_new_and_changed_files_and_never_an_unchanged_one',
    'test_dry_runs_record_nothing', 'test_event_types_narrowing_by_either_name',
    'test_cli', 'test_deterministic_per_seed',
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if (item.module.__name__.rsplit('.', 1)[-1] in SLOW_MODULES
                or item.originalname in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


# ------------------------------------------------------------------ shared fixtures and helpers
WRITE_KEY = 'wk_shared-test-key-never-printed'


@pytest.fixture
def write_key(monkeypatch) -> str:
    """SEGMENT_WRITE_KEY set for the test (a canary: it must never show in any output)."""
    monkeypatch.setenv('SEGMENT_WRITE_KEY', WRITE_KEY)
    return WRITE_KEY


@pytest.fixture(scope='session')
def offline_adc(tmp_path_factory) -> str:
    """Application Default Credentials that never reach Google: for emulators and dry runs."""
    path = tmp_path_factory.mktemp('adc') / 'application_default_credentials.json'
    path.write_text(json.dumps({
        'type': 'authorized_user', 'client_id': 'c2s-tests', 'client_secret': 'unused',
        'refresh_token': 'unused', 'token': 'offline-dummy', 'expiry': '2099-01-01T00:00:00Z',
        'token_uri': 'http://127.0.0.1:9/token'}))
    return str(path)


def run_tool(tmp_path, input_path, *extra, summary_name='summary', out=None):
    """The command line, in-process, on `input_path` with rejects under `tmp_path/rejects`:
    (exit code, the summary it wrote or None, what it printed)."""
    from pipeline.main import run
    out = out if out is not None else io.StringIO()
    summary_path = Path(tmp_path) / f'{summary_name}.json'
    code = run(['--input', str(input_path), '--rejects', str(Path(tmp_path) / 'rejects'),
                '--summary_output', str(summary_path), *extra], out=out)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return code, summary, out.getvalue()
