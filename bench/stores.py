"""Events/s of a 100k-event dry run read from a local folder, S3 (moto server), Azure Blob
(Azurite) or GCS (gcp-storage-emulator), all on loopback: what each store's read path costs.

    python -m bench.stores local|s3|azure|gcs
"""
import io, json, os, shutil, sys, time, tempfile
from pathlib import Path
from devtools.sample import generate
from pipeline.main import run

which = sys.argv[1]
work = Path(tempfile.mkdtemp(prefix='bench-'))
report = generate(work, events=100_000, seed=1, hours=3)
out = work / 'out'

def timed(input_path, *extra):
    t = time.perf_counter()
    code = run(['--input', input_path, '--rejects', str(out / 'rejects'), '--dry_run_output', str(out / 'bodies'),
                '--summary_output', str(out / 'summary.json'), *extra], out=io.StringIO())
    dt = time.perf_counter() - t
    s = json.loads((out / 'summary.json').read_text())
    assert code == 0 and s['read'] == report.events, (code, s)
    print(f'{which}: {s["read"]} events, {s["files_read"]} files in {dt:.1f} s = {s["read"]/dt:,.0f} events/s', flush=True)

os.environ['SEGMENT_WRITE_KEY'] = 'unused'
if which == 'local':
    timed(str(work / 'currents'))
elif which == 's3':
    from tests.s3_emulator import MotoServer
    with MotoServer() as m:
        m.create_bucket('bench'); m.upload_tree(work / 'currents', 'bench', 'currents')
        os.environ.update(AWS_ACCESS_KEY_ID='testing', AWS_SECRET_ACCESS_KEY='testing', AWS_DEFAULT_REGION='us-east-1', AWS_EC2_METADATA_DISABLED='true')
        timed('s3://bench/currents', '--s3_endpoint_url', m.url)
elif which == 'azure':
    from tests.azurite import Azurite
    with Azurite() as a:
        a.create_container('bench'); a.upload_tree(work / 'currents', 'bench', 'currents')
        os.environ['AZURE_STORAGE_CONNECTION_STRING'] = a.connection_string()
        timed('azfs://devstoreaccount1/bench/currents')
elif which == 'gcs':
    from tests.gcs_emulator import GcsEmulator
    adc = work / 'adc.json'
    adc.write_text(json.dumps({'type': 'authorized_user', 'client_id': 'c', 'client_secret': 'u', 'refresh_token': 'u',
                               'token': 't', 'expiry': '2099-01-01T00:00:00Z', 'token_uri': 'http://127.0.0.1:9/token'}))
    with GcsEmulator(bucket='bench') as g:
        os.environ.update(STORAGE_EMULATOR_HOST=g.url, GOOGLE_APPLICATION_CREDENTIALS=str(adc), GOOGLE_CLOUD_PROJECT='p')
        g.upload_tree(work / 'currents', 'currents')
        timed('gs://bench/currents', '--no_auth')

shutil.rmtree(work, ignore_errors=True)
