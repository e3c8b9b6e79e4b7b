"""Dataflow readiness, offline: the job translates, carries no write key, and the package installs.

- The real launcher (`pipeline.main.run`) with `--runner DataflowRunner --dry_run=True`: Beam builds
  the whole Dataflow job (pipeline proto, options, staged sdist of ./setup.py) and submits nothing.
  Project and bucket names must pass Beam's validator (a one-letter project or bucket does not).
- The job description is built directly (builder + DataflowRunner dry run + the Environment the
  service would receive) and searched, including the pickled DoFns inside it, for the write key.
- The Flex Template files (metadata.json, Dockerfile, requirements.txt, flex_launcher.py) agree
  with the code: every option described, the same Beam version everywhere.
- The sdist Dataflow would stage installs into a fresh virtualenv and runs there, away from the
  repository's sources (one pip install for the whole module; ~1 minute with a warm index).

Credentials: Beam looks up Application Default Credentials even in a dry run and retries ~20 s when
there are none, so GOOGLE_APPLICATION_CREDENTIALS points at an offline dummy (as in test_gcs.py).
"""
import argparse
import ast
import base64
import binascii
import bz2
import io
import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions

from pipeline.builder import build_pipeline, job_options
from pipeline.main import run
from pipeline.options import CurrentsToSegmentOptions, FORBIDDEN_FLAGS, LOCAL_ONLY, settings_from
from devtools.sample import generate
from tests.gcs_emulator import GcsEmulator
from pipeline.paths import parse_hour
from pipeline.listing import input_pattern, list_currents_files
from transforms.secrets import SECRET_NAME

ROOT = Path(__file__).resolve().parent.parent
KEY = 'wk_DATAFLOW-canary-5f3a9c-must-never-be-in-a-job'
SECRET = 'projects/c2s-project/secrets/segment-write-key/versions/3'
PROJECT = 'c2s-project'
BUCKET = 'c2s-dataflow-tests'
BUILT = 'Dataflow job built (--dry_run=True): nothing submitted'
ERROR_LINE = re.compile(r'^currents-to-segment: error: .+$')


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp('sample')
    report = generate(root, events=400, seed=11, hours=2)
    return root, report


@pytest.fixture
def launcher_env(monkeypatch, offline_adc):
    """A launcher machine: a write key in the environment (which must not travel), dummy ADC,
    the repository as working directory (for --setup_file ./setup.py)."""
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    monkeypatch.setenv('GOOGLE_APPLICATION_CREDENTIALS', offline_adc)
    monkeypatch.setenv('GOOGLE_CLOUD_PROJECT', PROJECT)
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope='module')
def gcs_input(sample):
    """The sample export uploaded to a GCS emulator: (emulator, gs:// input prefix)."""
    root, _ = sample
    with GcsEmulator(bucket=BUCKET) as emulator:
        emulator.upload_tree(root / 'currents', 'currents')
        yield emulator, f'gs://{BUCKET}/currents'


def dataflow_argv(input_path, rejects, *extra, secret=SECRET):
    argv = ['--runner', 'DataflowRunner', '--project', PROJECT, '--region', 'us-central1',
            '--temp_location', f'gs://{BUCKET}/tmp', '--setup_file', './setup.py',
            '--dry_run=True', '--input', str(input_path), '--rejects', str(rejects)]
    if secret:
        argv += ['--segment_write_key_secret', secret]
    return argv + list(extra)


def launch(argv, capsys):
    out = io.StringIO()
    code = run(argv, out=out)
    err = capsys.readouterr().err
    return code, out.getvalue(), err


def built_job(argv):
    """What DataflowRunner would submit for this command line: the Job with the Environment
    (pipeline options, experiments) that create_job_description attaches before submission."""
    from apache_beam.runners.dataflow.internal import apiclient
    options = PipelineOptions(argv)
    settings = settings_from(options)
    listing = list_currents_files(input_pattern(settings.input), settings.selector, frozenset())
    files = [(path, t) for path, t, _ in listing.files]
    p = build_pipeline(settings, files, job_options(settings, options, len(files)))
    job = p.run().job
    job.proto.environment = apiclient.Environment(
        packages=[], options=job.options,
        environment_version=getattr(apiclient, '_FNAPI_ENVIRONMENT_MAJOR_VERSION', '8'),
        proto_pipeline_staged_url=f'gs://{BUCKET}/staging/pipeline.pb',
        proto_pipeline=job.proto_pipeline).proto
    return job


B64_RUN = re.compile(rb'[A-Za-z0-9+/]{40,}={0,2}')


def decoded_payloads(blobs, depth=3):
    """Beam pickles DoFns as base64(bz2|zlib(cloudpickle)); unpack every such run, recursively."""
    found, frontier = [], list(blobs)
    for _ in range(depth):
        new = []
        for blob in frontier:
            for run_ in B64_RUN.findall(blob):
                try:
                    raw = base64.b64decode(run_ + b'=' * (-len(run_) % 4))
                except (binascii.Error, ValueError):
                    continue
                for unpack in (bz2.decompress, zlib.decompress):
                    try:
                        new.append(unpack(raw))
                        break
                    except Exception:
                        pass
        found += new
        frontier = new
    return found


def job_blobs(job):
    blobs = [str(job).encode(), job.proto_pipeline.SerializeToString(),
             json.dumps(job.options.get_all_options(retain_unknown_options=True),
                        default=str).encode()]
    return blobs + decoded_payloads(blobs)


# --------------------------------------------------------------- the launcher, DataflowRunner
@pytest.mark.parametrize('throttle', [[], ['--max_events_per_second', '900',
                                           '--max_num_workers', '3']], ids=['unthrottled',
                                                                            'throttled'])
def test_dataflow_job_builds_from_a_local_folder(tmp_path, sample, launcher_env, capsys,
                                                 throttle):
    root, _ = sample
    code, out, err = launch(dataflow_argv(root, f'gs://{BUCKET}/rejects', *throttle), capsys)
    assert code == 0, err
    assert BUILT in out
    assert KEY not in out + err


def test_dataflow_job_builds_from_gcs_with_resume(tmp_path, gcs_input, launcher_env, monkeypatch,
                                                  capsys):
    """The launcher lists gs:// itself (and reads the resume manifest there) before building."""
    emulator, prefix = gcs_input
    monkeypatch.setenv('STORAGE_EMULATOR_HOST', emulator.url)
    code, out, err = launch(dataflow_argv(prefix, f'gs://{BUCKET}/rejects', '--resume',
                                          '--no_auth', '--segment_gzip'), capsys)
    assert code == 0, err
    assert BUILT in out


def test_dataflow_job_carries_no_write_key(sample, launcher_env):
    root, _ = sample
    job = built_job(dataflow_argv(root, f'gs://{BUCKET}/rejects',
                                  '--max_events_per_second', '900', '--max_num_workers', '3'))
    blobs = job_blobs(job)
    everything = b'\n'.join(blobs)
    # The search does reach into the pickled DoFns: the secret's *name* is there (and the options).
    assert sum(SECRET.encode() in b for b in blobs[3:]) >= 1, 'pickled SendBatchesFn not decoded'
    assert SECRET.encode() in blobs[0]                    # sdkPipelineOptions
    assert b'api.segment.io' in everything
    assert KEY.encode() not in everything
    assert base64.b64encode(f'{KEY}:'.encode()) not in everything   # nor as a Basic header


def test_dataflow_job_of_a_local_key_run_carries_no_write_key(sample, launcher_env):
    """Without a secret the workers would read SEGMENT_WRITE_KEY from *their* environment;
    the launcher's key must not be captured in the job either way."""
    root, _ = sample
    job = built_job(dataflow_argv(root, f'gs://{BUCKET}/rejects', secret=None))
    assert KEY.encode() not in b'\n'.join(job_blobs(job))


def test_explicit_experiment_reaches_the_job(sample, launcher_env):
    root, _ = sample
    job = built_job(dataflow_argv(root, f'gs://{BUCKET}/rejects', '--max_events_per_second',
                                  '900', '--max_num_workers', '3',
                                  '--experiments=no_use_multiple_sdk_containers'))
    experiments = list(job.proto.environment.experiments)
    assert 'no_use_multiple_sdk_containers' in experiments
    assert 'use_multiple_sdk_containers' not in experiments


def test_throttled_job_asks_for_one_sdk_process_per_worker(sample, launcher_env):
    root, _ = sample
    job = built_job(dataflow_argv(root, f'gs://{BUCKET}/rejects',
                                  '--max_events_per_second', '900', '--max_num_workers', '3'))
    experiments = list(job.proto.environment.experiments)
    assert 'no_use_multiple_sdk_containers' in job.options.view_as(DebugOptions).experiments
    assert 'use_multiple_sdk_containers' not in experiments


def test_building_changes_nothing_it_is_given(sample, launcher_env):
    """job_options returns a copy with the experiments; build_pipeline leaves options alone."""
    root, _ = sample
    argv = dataflow_argv(root, f'gs://{BUCKET}/rejects', '--max_events_per_second', '900',
                         '--max_num_workers', '3')
    options = PipelineOptions(argv)
    settings = settings_from(options)
    before = options.get_all_options()
    prepared = job_options(settings, options, 1)
    assert 'no_use_multiple_sdk_containers' in prepared.view_as(DebugOptions).experiments
    build_pipeline(settings, [(str(root / 'x.avro'), 'users.messages.email.Send')], options)
    assert options.get_all_options() == before
    assert not options.view_as(DebugOptions).experiments


def test_dataflow_without_a_secret_is_refused_at_launch(sample, launcher_env, capsys):
    root, _ = sample
    code, out, err = launch(dataflow_argv(root, f'gs://{BUCKET}/rejects', secret=None), capsys)
    assert code == 2, out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]) and '--segment_write_key_secret' in err


def test_beam_validation_errors_say_what_is_wrong(sample, launcher_env, capsys):
    root, _ = sample
    argv = dataflow_argv(root, f'gs://{BUCKET}/rejects')
    argv[argv.index('--project') + 1] = 'p'       # too short for a project id
    code, out, err = launch(argv, capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), err
    assert 'Project ID' in err


def test_flex_launcher_runs_the_cli_on_dataflow(tmp_path, sample, offline_adc):
    """The Flex Template entry point: `--flag=true` parameters accepted, DataflowRunner default."""
    root, _ = sample
    env = dict(os.environ, SEGMENT_WRITE_KEY=KEY, GOOGLE_APPLICATION_CREDENTIALS=offline_adc,
               GOOGLE_CLOUD_PROJECT=PROJECT)
    proc = subprocess.run(
        [sys.executable, 'flex_launcher.py', f'--input={root}', f'--rejects=gs://{BUCKET}/rej',
         f'--segment_write_key_secret={SECRET}', '--segment_gzip=true', '--resume=false',
         f'--project={PROJECT}', '--region=us-central1', f'--temp_location=gs://{BUCKET}/tmp',
         '--setup_file=./setup.py', '--dry_run=True'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert BUILT in proc.stdout
    assert KEY not in proc.stdout + proc.stderr


def test_flex_launcher_argument_translation():
    sys.path.insert(0, str(ROOT))
    try:
        import flex_launcher
    finally:
        sys.path.remove(str(ROOT))
    assert flex_launcher.flag_options() == {'--segment_gzip', '--resume', '--plan', '--wait',
                                            '--fresh_worker_processes', '--include_anonymous',
                                            '--segment_sent_at', '--verbose', '--use_env_proxy',
                                            '--since_last_run', '--follow'}
    argv = flex_launcher.template_argv(['--input=gs://b/x', '--segment_gzip=true',
                                        '--resume=False', '--wait=maybe', '--plan=TRUE'])
    assert argv == ['--input=gs://b/x', '--segment_gzip', '--wait=maybe', '--plan',
                    '--runner=DataflowRunner']
    assert flex_launcher.template_argv(['--runner=DirectRunner']) == ['--runner=DirectRunner']
    assert flex_launcher.template_argv(['--runner', 'X']) == ['--runner', 'X']


# --------------------------------------------------------------- Flex Template files vs code
def parser_dests():
    parser = argparse.ArgumentParser(add_help=False)
    CurrentsToSegmentOptions._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions if a.dest not in LOCAL_ONLY}


def metadata():
    return json.loads((ROOT / 'metadata.json').read_text())


# One valid template value per parameter, as the launcher would pass it (--name=value).
EXAMPLES = {
    'input': 'gs://bkt/currents', 'rejects': 'gs://bkt/rejects', 'start': '2024-01-01',
    'end': '2024-02-01-06', 'event_types': 'Email Sent,users.messages.email.Open',
    'message_id_prefix': 'dev-', 'dry_run_output': 'gs://bkt/bodies',
    'summary_output': 'gs://bkt/summary.json', 'report': 'gs://bkt/report.html',
    'segment_region': 'eu',
    'segment_endpoint': 'https://events.eu1.segmentapis.com/v1/batch', 'segment_gzip': 'true', 'use_env_proxy': 'true',
    'skip_files': 'gs://bkt/currents/x.avro',
    'segment_timeout': '12.5', 'max_retry_seconds': '300', 'max_events_per_second': '900',
    'max_in_flight': '8', 'integrations': '{"All": false, "Warehouses": true}',
    'segment_write_key_secret': SECRET, 'aws_credentials_secret': SECRET,
    'azure_connection_string_secret': SECRET, 'resume': 'true', 'plan': 'true', 'wave_hours': '24',
    'wait': 'true', 'mapping': 'current', 'include_anonymous': 'true', 'segment_sent_at': 'false',
    'since_last_run': 'true', 'lookback_hours': '48',
}


def test_metadata_describes_exactly_the_options():
    meta = metadata()
    names = [p['name'] for p in meta['parameters']]
    assert len(names) == len(set(names))
    assert set(names) == set(parser_dests()), 'metadata.json and pipeline/options.py differ'
    assert set(EXAMPLES) == set(names)
    forbidden = {f.lstrip('-').replace('-', '_').lower() for f in FORBIDDEN_FLAGS}
    assert not forbidden & {n.lower() for n in names}       # never the key itself
    for p in meta['parameters']:
        assert p['label'].strip() and p['helpText'].strip(), p['name']
        assert isinstance(p['isOptional'], bool), p['name']
    required = {p['name'] for p in meta['parameters'] if not p['isOptional']}
    assert required == {'input', 'rejects'}


def test_metadata_regexes_accept_valid_values_and_refuse_bad_ones():
    regexes = {p['name']: [re.compile(r) for r in p.get('regexes', [])]
               for p in metadata()['parameters']}
    for name, value in EXAMPLES.items():
        assert all(r.fullmatch(value) for r in regexes[name]), (name, value)
    assert regexes['segment_write_key_secret'][0].pattern == SECRET_NAME.pattern
    bad = {'input': '/local/currents', 'rejects': './rejects', 'start': '2024/01/01',
           'segment_region': 'asia', 'segment_write_key_secret': 'my-secret',
           'segment_gzip': 'yes please', 'max_in_flight': '0',
           'segment_endpoint': 'http://api.segment.io/v1/batch'}
    for name, value in bad.items():
        assert not all(r.fullmatch(value) for r in regexes[name]), (name, value)
    for name in ('start', 'end'):
        parse_hour(EXAMPLES[name], '--' + name)     # what the regex lets through, the code reads


def test_metadata_values_parse_through_the_flex_launcher():
    sys.path.insert(0, str(ROOT))
    try:
        import flex_launcher
    finally:
        sys.path.remove(str(ROOT))
    argv = flex_launcher.template_argv([f'--{k}={v}' for k, v in EXAMPLES.items()])
    o = PipelineOptions(argv).view_as(CurrentsToSegmentOptions)
    assert o.segment_gzip is True and o.resume is True and o.plan is True and o.wait is True
    assert o.max_in_flight == 8 and o.wave_hours == 24 and o.segment_timeout == 12.5
    assert o.input == EXAMPLES['input'] and o.segment_write_key_secret == SECRET


def setup_py_requirements():
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'install_requires':
            return [ast.literal_eval(e) for e in node.value.elts]
    raise AssertionError('install_requires not found in setup.py')


def beam_pin():
    beam = [r for r in setup_py_requirements() if r.startswith('apache-beam')]
    assert len(beam) == 1
    match = re.fullmatch(r'apache-beam(\[[^\]]*\])?==([0-9.]+)', beam[0])
    assert match, f'setup.py must pin Beam exactly (the image must match): {beam[0]}'
    return match.group(2)


def test_dockerfile_matches_setup_py_and_the_repo():
    text = (ROOT / 'Dockerfile').read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and not line.lstrip().startswith('#')]
    assert lines[0] == 'FROM python:3.11-slim'
    sdk = re.findall(r'COPY --from=apache/beam_python(3\.\d+)_sdk:(\S+) /opt/apache/beam '
                     r'/opt/apache/beam', text)
    assert sdk == [('3.11', beam_pin())], 'Beam SDK image must match setup.py and python:3.11'
    assert re.search(r'COPY --from=gcr\.io/dataflow-templates-base/python311-template-launcher'
                     r'-base\S* /opt/google/dataflow/python_template_launcher '
                     r'/opt/google/dataflow/python_template_launcher', text)
    assert lines[-1] == 'ENTRYPOINT ["/opt/apache/beam/boot"]'
    py_file = re.search(r'ENV FLEX_TEMPLATE_PYTHON_PY_FILE="\$\{WORKDIR\}/(\S+)"', text).group(1)
    assert (ROOT / py_file).is_file()
    assert re.search(r'^RUN pip install --no-cache-dir \. ', text, re.M)
    copied = re.findall(r'^COPY (?!--from)(.+) \S+$', text, re.M)
    sources = [s for c in copied for s in c.split()]
    assert py_file in sources
    for source in sources:
        assert (ROOT / source).exists(), source
    ignored = {line.strip() for line in (ROOT / '.dockerignore').read_text().splitlines()
               if line.strip() and not line.startswith('#')}
    assert not ignored & set(sources), 'a file the Dockerfile copies is in .dockerignore'
    assert {'.venv', '.git'} <= ignored


def test_requirements_pin_what_setup_py_asks_for():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    pins = {}
    for line in (ROOT / 'requirements.txt').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            name, sep, version = line.partition('==')
            assert sep and version, f'not pinned: {line}'
            pins[canonicalize_name(name)] = version
    assert pins[canonicalize_name('apache-beam')] == beam_pin()
    for text in setup_py_requirements():
        req = Requirement(text)
        version = pins.get(canonicalize_name(req.name))
        assert version and req.specifier.contains(version, prereleases=True), text
    assert canonicalize_name('currents-to-segment') not in pins


# --------------------------------------------------- the staged package, in a fresh virtualenv
def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'SEGMENT_WRITE_KEY', 'PYTHONHOME')}
    env.update(extra)
    return env


@pytest.fixture(scope='module')
def installed_package(tmp_path_factory):
    """sdist of ./setup.py (what --setup_file stages) → fresh venv → pip install. Once."""
    work = tmp_path_factory.mktemp('package')
    (work / 'egg').mkdir()
    build = subprocess.run(
        [sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base', str(work / 'egg'),
         'sdist', '--dist-dir', str(work / 'dist')],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (sdist,) = (work / 'dist').glob('*.tar.gz')
    venv = work / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=300,
                   env=_clean_env())
    install = subprocess.run(
        [str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '-q', '--no-compile', str(sdist)],
        capture_output=True, text=True, timeout=900, env=_clean_env(), cwd=work)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    return venv, work


def test_sdist_installs_and_runs_outside_the_repo(installed_package):
    venv, work = installed_package
    bin_ = venv / 'bin'
    run_dir = work / 'run'
    run_dir.mkdir()
    env = _clean_env()

    where = subprocess.run([str(bin_ / 'python'), '-c',
                            'import pipeline, transforms; print(pipeline.__file__); '
                            'print(transforms.__file__)'],
                           cwd=run_dir, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).resolve().is_relative_to(venv.resolve()), path   # not the repo's

    check = subprocess.run([str(bin_ / 'python'), '-m', 'pip', 'check'], cwd=run_dir, env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    # Dev tools are not shipped: the installed package has no receiver or sample generator.
    shipped = subprocess.run([str(bin_ / 'python'), '-c', 'import devtools'], cwd=run_dir,
                             env=env, capture_output=True, text=True, timeout=120)
    assert shipped.returncode != 0 and 'devtools' in shipped.stderr
    site = next(venv.glob('lib/python*/site-packages'))
    assert not list(site.glob('**/receiver.py')) and not list(site.glob('pipeline/**/*.avsc'))

    # Sample data from the checkout's generator, then the installed CLI.
    gen = subprocess.run([sys.executable, '-m', 'devtools.sample', '--output',
                          str(run_dir / 'data'), '--events', '500', '--seed', '5'],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr[-3000:]
    cli = subprocess.run([str(bin_ / 'currents-to-segment'), '--input', 'data',
                          '--rejects', 'rejects', '--dry_run_output', 'bodies',
                          '--summary_output', 'summary.json'],
                         cwd=run_dir, env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-3000:]
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['read'] == 500
    assert summary['read'] == (summary['dropped_no_external_user_id'] + summary['sent']
                               + summary['rejected'])
    assert len(summary['by_event']) == 34
    for name, row in summary['by_event'].items():
        assert row['read'] == row['dropped_no_external_user_id'] + row['sent'] + row['rejected'], \
            name
    bodies = list((run_dir / 'bodies').glob('batch-*.json'))
    assert bodies
    assert sum(len(json.loads(b.read_bytes())['batch']) for b in bodies) == summary['sent']


# ------------------------------------------------- a job's graph does not grow with the files
def _job_bytes(emulator, capsys, monkeypatch, bucket, objects):
    """The job a dry-run Dataflow launch builds over `objects` files under gs://bucket/currents:
    (its JSON, what --dataflow_job_file holds, and its pipeline proto) in bytes."""
    from apache_beam.runners.dataflow import dataflow_runner
    from apache_beam.runners.dataflow.internal import apiclient
    emulator.client.create_bucket(bucket)
    prefix = 'currents/dataexport.prod-01.GCS.integration.0123456789abcdef01234567'
    types = ('users.messages.email.Send', 'users.messages.email.Open', 'users.canvas.Entry')
    emulator.inject((f'{prefix}/event_type={types[i % 3]}/date=2024-05-{1 + i // 90_000:02d}-'
                     f'{i // 3 % 24:02d}/version=10/us-01/f+{i}.avro' for i in range(objects)),
                    content=b'', bucket=bucket)
    built = []
    run_pipeline = dataflow_runner.DataflowRunner.run_pipeline

    def keep(self, pipeline, options):
        result = run_pipeline(self, pipeline, options)
        built.append(result.job)
        return result
    monkeypatch.setattr(dataflow_runner.DataflowRunner, 'run_pipeline', keep)
    code, out, err = launch(dataflow_argv(f'gs://{bucket}/currents', f'gs://{bucket}/rejects',
                                          '--no_auth'), capsys)
    assert code == 0 and BUILT in out, err
    [job] = built
    job.proto.environment = apiclient.Environment(
        packages=[], options=job.options,
        environment_version=getattr(apiclient, '_FNAPI_ENVIRONMENT_MAJOR_VERSION', '8'),
        proto_pipeline_staged_url=f'gs://{bucket}/staging/pipeline.pb',
        proto_pipeline=job.proto_pipeline).proto
    return len(job.json()), len(job.proto_pipeline.SerializeToString())


def test_a_dataflow_job_graph_is_the_same_over_2000_or_200000_files(launcher_env, monkeypatch,
                                                                      capsys):
    """The launcher plans units (event type folders, months of them); the workers list the
    files: the job carries no file list, however large the input."""
    with GcsEmulator(bucket='c2s-graph-default') as emulator:
        monkeypatch.setenv('STORAGE_EMULATOR_HOST', emulator.url)
        small = _job_bytes(emulator, capsys, monkeypatch, 'c2s-graph-small', 2_000)
        large = _job_bytes(emulator, capsys, monkeypatch, 'c2s-graph-large', 200_000)
    with capsys.disabled():
        print(f'\nDataflow job (JSON, pipeline proto) in bytes: {small} over 2,000 files, '
              f'{large} over 200,000')
    for a, b in zip(small, large):
        assert b < 1_000_000 and abs(b - a) <= 0.1 * a
