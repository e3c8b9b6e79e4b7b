"""Start the command without importing the object-store clients a run does not name.

`import apache_beam` imports, best effort, every filesystem it knows (GCS, S3, Azure) and the
GCP IO connectors (BigQuery, Pub/Sub): google-cloud-storage, boto3, the Azure SDK, aiohttp;
its Dataflow runner imports the Dataflow API client too (~0.1 s), used only by a Dataflow run;
and building any file sink (the rejects) imports Beam's Pub/Sub module, which imports the
Pub/Sub client (~0.2 s) for an `isinstance` check that a run without Pub/Sub never needs.
That is ~0.7 s of a local run's ~1.3 s start-up, before anything is read, paid again by every
scheduled run. Beyond those, `import apache_beam` imports the MongoDB client (its MongoDB IO),
pyarrow (its Arrow type hints) and, for its retry filters, the Google API client library
(apitools): ~0.2 s more of the ~0.75 s that remained, none of it used by a run here. Beam
wraps each of those imports in ``try: ... except ImportError`` (they are optional extras), so
a ``None`` in ``sys.modules`` skips one exactly as a missing package would. Only the command
line does this, and only before Beam is imported: a store named anywhere on it (``gs://``,
``s3://``, ``azfs://``) or a Dataflow run keeps everything.
This module imports nothing from Beam.
"""
import gc
import logging
import sys
from typing import Iterable, List, MutableMapping, Tuple

from pipeline.walk import start_ahead

# scheme -> the module whose import registers its filesystem with Beam
STORE_MODULES: Tuple[Tuple[str, str], ...] = (
    ('gs://', 'apache_beam.io.gcp.gcsfilesystem'),
    ('s3://', 'apache_beam.io.aws.s3filesystem'),
    ('azfs://', 'apache_beam.io.azure.blobstoragefilesystem'),
)
# apache_beam.io's own optional block (BigQuery, Pub/Sub, gcsio, cross-language IO)
GCP_CONNECTORS = 'apache_beam.io.gcp.bigquery'
# the Google API client library, imported best effort by apache_beam.utils.retry (to tell its
# HTTP errors apart) and used by no store but gs://
GCP_API_CLIENT = 'apitools'
# Beam's MongoDB IO takes the MongoDB client (bson, then pymongo) best effort, and its type
# hints pyarrow: neither is ever used by this project
MONGODB_CLIENT = ('bson', 'pymongo')
ARROW = 'pyarrow'
# what Beam's MongoDB IO logs when it finds no MongoDB client: not news to a user here
MONGODB_IO = 'apache_beam.io.mongodbio'
MONGODB_ABSENT = 'Could not find a compatible bson package.'
# the Dataflow API client, imported best effort by apache_beam.runners.dataflow.dataflow_runner
DATAFLOW_CLIENT = 'google.cloud.dataflow'
# The cycle collector's thresholds for the command and the warm workers forked from it. With
# Python's default (700) a pass runs whenever ~700 more objects are alive than at the last one,
# which a request's batch of ~800 messages reaches at every request: ~650 passes in each of
# two workers on 1.2M events (~0.3 CPU-s in all per worker), finding nothing: events,
# messages and batches are acyclic and freed by reference counting. 100,000 keeps a pass for
# real growth (docs/how-it-works.md, "The local runner").
COLLECTOR_THRESHOLDS = (100_000, 20, 100)
# the Pub/Sub client, imported best effort by apache_beam.io.gcp.pubsub (this project reads
# and writes files only, on any runner; Beam's Pub/Sub transforms stay importable without it)
PUBSUB_CLIENT = 'google.cloud.pubsub'


def unneeded_modules(argv: Iterable[str]) -> List[str]:
    """The optional Beam modules a command line with these arguments never uses."""
    args = [arg.lower() for arg in argv]

    def named(text: str) -> bool:
        return any(text in arg for arg in args)

    if named('dataflow'):   # --runner DataflowRunner: staging and the job service need GCP
        return []
    skip = [module for scheme, module in STORE_MODULES if not named(scheme)]
    if not named('gs://'):
        skip += [GCP_CONNECTORS, GCP_API_CLIENT]
    skip += [DATAFLOW_CLIENT, PUBSUB_CLIENT, *MONGODB_CLIENT, ARROW]
    return skip


def skip_unneeded_imports(argv: Iterable[str], modules: MutableMapping = sys.modules) -> List[str]:
    """Mark the modules `unneeded_modules` names as absent in `modules` (the interpreter's);
    a no-op once Beam is imported. Returns what it marked."""
    if 'apache_beam' in modules:
        return []
    skipped = unneeded_modules(argv)
    for module in skipped:
        modules.setdefault(module, None)
    return skipped


def import_command(argv: Iterable[str]):
    """The command's entry point (pipeline.main.main), imported as the command should be.

    A local --input folder starts being walked in a child process first (pipeline/walk.py), so
    listing it overlaps the import on a second core.

    Besides skipping what these arguments never use, importing Beam leaves ~190,000 long-lived
    objects that the cycle collector would scan again and again while they are made (~0.1 s of
    a ~0.8 s start-up) and in every later full pass, in this process and in the warm workers
    forked from it (copying the memory pages each pass touches). Imported with collection off
    and then frozen, they are never scanned (what Python's `gc.freeze` documentation advises
    before forking). Collection then resumes at COLLECTOR_THRESHOLDS.
    """
    argv = list(argv)
    start_ahead(argv)
    skipped = skip_unneeded_imports(argv)
    quiet = MONGODB_CLIENT[0] in skipped
    mongodb_io = logging.getLogger(MONGODB_IO)
    if quiet:
        mongodb_io.addFilter(_not_mongodb_absent)
    gc.disable()
    try:
        from pipeline.main import main
    finally:
        gc.freeze()
        gc.set_threshold(*COLLECTOR_THRESHOLDS)
        gc.enable()
        if quiet:
            mongodb_io.removeFilter(_not_mongodb_absent)
    return main


def _not_mongodb_absent(record: logging.LogRecord) -> bool:
    """A log filter: drops only the news that the MongoDB client, skipped above, is absent."""
    return record.getMessage() != MONGODB_ABSENT
