"""Airflow DAG: keep Segment fed from the Currents bucket with the Flex Template.

Every 10 minutes it launches the currents-to-segment Flex Template (docs/dataflow.md, "Flex Template") with
`since_last_run=true`: the job sends only the files no earlier run delivered and records each as
it completes. The task returns once the job is submitted; the job holds the run lock under
`rejects` until it has recorded its files, so a launch that comes while one still sends exits at
once saying so (docs/incremental.md).

Set the Airflow Variables below (or edit the defaults). The Airflow connection's service account
needs the launcher's IAM from docs/dataflow.md (roles/dataflow.developer, roles/iam.serviceAccountUser
on the job's service account).
"""
import datetime

from airflow import DAG
from airflow.models import Variable
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator


def setting(name: str, default: str) -> str:
    return Variable.get(f'currents_to_segment_{name}', default_var=default)


PROJECT = setting('project', 'my-project')
REGION = setting('region', 'us-central1')
BUCKET = setting('bucket', 'my-backfill-bucket')
TEMPLATE = setting('template', f'gs://{BUCKET}/templates/currents-to-segment.json')
IMAGE = setting('image', f'{REGION}-docker.pkg.dev/{PROJECT}/currents/currents-to-segment:TAG')
SERVICE_ACCOUNT = setting('service_account',
                          f'currents-backfill@{PROJECT}.iam.gserviceaccount.com')
EVERY_MINUTES = 10

LAUNCH_BODY = {
    'launchParameter': {
        'jobName': 'currents-since-last-run',
        'containerSpecGcsPath': TEMPLATE,
        'parameters': {
            'input': setting('input', 'gs://my-braze-bucket/currents'),
            'rejects': f'gs://{BUCKET}/rejects',
            'segment_write_key_secret': setting(
                'secret', f'projects/{PROJECT}/secrets/segment-write-key/versions/1'),
            'since_last_run': 'true',
            'max_events_per_second': '900',
            'max_num_workers': '3',
            'segment_gzip': 'true',
            'sdk_container_image': IMAGE,
        },
        'environment': {
            'serviceAccountEmail': SERVICE_ACCOUNT,
            'tempLocation': f'gs://{BUCKET}/tmp',
            'stagingLocation': f'gs://{BUCKET}/staging',
            'maxWorkers': 3,
            'additionalExperiments': ['no_use_multiple_sdk_containers'],
        },
    },
}

with DAG(
    dag_id='currents_to_segment_since_last_run',
    description='Send new Braze Currents files to Segment (currents-to-segment --since_last_run)',
    schedule=datetime.timedelta(minutes=EVERY_MINUTES),
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,           # each launch already sends everything not yet delivered
    max_active_runs=1,
    default_args={'retries': 1, 'retry_delay': datetime.timedelta(minutes=2)},
    tags=['currents-to-segment'],
) as dag:
    send_new_files = DataflowStartFlexTemplateOperator(
        task_id='send_new_currents_files',
        project_id=PROJECT,
        location=REGION,
        body=LAUNCH_BODY,
        append_job_name=True,        # a unique suffix per launch
        wait_until_finished=False,   # the job records its files; the next launch checks that
    )
