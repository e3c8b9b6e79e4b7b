"""Small builders shared by the end-to-end tests: Avro files, pipeline runs, output readers."""
import glob
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import fastavro

from pipeline.main import run
from devtools.sample import load_schema

ROOT = Path(__file__).resolve().parents[1]

LAYOUT = ('currents/dataexport.prod-01.GCS.integration.0123456789abcdef01234567/'
          'event_type={t}/date={d}/version=10/us-01/'
          'dataexport.prod-01.GCS.integration.0123456789abcdef01234567+0+{n}.avro')


def record(i, external='ext', **extra):
    r = {'id': f'evt-{i}', 'user_id': f'user{i:020d}', 'external_user_id': external,
         'time': 1714564800 + i, 'app_id': 'app', 'email_address': 'a@example.com',
         'platform': 'ios', 'content_card_id': 'card', 'card_id': 'card', 'canvas_id': 'cv',
         'canvas_variation_id': 'cvv', 'campaign_id': 'cmp', 'in_control_group': False,
         'subscription_group_id': 'sg', 'subscription_status': 'Subscribed',
         'state_change_source': 'src', 'to_phone_number': '+15555550100',
         'inbound_phone_number': '+15555550101', 'user_phone_number': '+1555',
         'action': 'a', 'message_body': 'b', 'url': 'https://x', 'machine_open': 'true'}
    r.update(extra)
    return r


def avro_bytes(event_type, records, codec='null', schema=None, sync_interval=16000):
    buf = io.BytesIO()
    schema = schema or load_schema(event_type)
    fastavro.writer(buf, fastavro.parse_schema(schema), records, codec=codec,
                    sync_interval=sync_interval)
    return buf.getvalue()


def write_file(root, event_type, records, date='2024-05-01-12', n=0, raw=None, **kw):
    path = Path(root) / LAYOUT.format(t=event_type, d=date, n=n)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw if raw is not None else avro_bytes(event_type, records, **kw))
    return str(path)


def run_pipeline(tmp_path, input_path, *extra, dry_run=True):
    """Runs the real pipeline; returns (exit code, summary dict, rejects, messages)."""
    out = tmp_path / 'out'
    argv = ['--input', str(input_path), '--rejects', str(out / 'rejects'),
            '--summary_output', str(out / 'summary.json')]
    if dry_run:
        argv += ['--dry_run_output', str(out / 'bodies')]
    code = run(argv + list(extra), out=io.StringIO())
    summary = json.loads((out / 'summary.json').read_text()) if (out / 'summary.json').exists() \
        else None
    return code, summary, read_rejects(out / 'rejects'), read_bodies(out / 'bodies')


def read_rejects(folder):
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, '*.jsonl'))):
        with open(path, encoding='utf-8') as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def read_bodies(folder):
    bodies = []
    for path in sorted(glob.glob(os.path.join(folder, 'batch-*.json'))):
        with open(path, 'rb') as f:
            raw = f.read()
        bodies.append((len(raw), json.loads(raw)))
    return bodies


def balanced(summary):
    if summary['read'] != (summary['dropped_no_external_user_id'] + summary['sent']
                           + summary['rejected']):
        return False
    return all(r['read'] == r['dropped_no_external_user_id'] + r['sent'] + r['rejected']
               for r in summary['by_event'].values())


def command(*argv, timeout=180, env=None):
    """The real command, `python -m pipeline ARGV`, in a fresh interpreter (this process's
    environment unless `env` is given): what a user's shell runs, start-up included
    (pipeline/startup.py)."""
    return subprocess.run([sys.executable, '-m', 'pipeline', *map(str, argv)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
