# One image for Dataflow, used twice (python-docs-samples
# dataflow/flex-templates/pipeline_with_dependencies pattern):
#   - as the SDK container image of the workers (--sdk_container_image / sdk_container_image=),
#     because ENTRYPOINT is Beam's worker boot binary and the package is installed;
#   - as the Flex Template launcher image (gcloud dataflow flex-template build --image),
#     because it carries Google's Python template launcher and FLEX_TEMPLATE_PYTHON_PY_FILE.
# Both sides therefore run exactly the same Python, Beam and dependency versions.
#
# Build:  gcloud builds submit --tag "$IMAGE" .      (or: docker build -t "$IMAGE" .)
# See docs/dataflow.md for the template build and launch commands.

# Base images: pin each by digest for repeatable, tamper-evident builds (docs/dataflow.md, "Flex
# Template"): `docker buildx imagetools inspect IMAGE:TAG` (or `crane digest IMAGE:TAG`) prints
# the digest; write it as IMAGE:TAG@sha256:... below. The tags below are not pinned yet.
# Keep this Python minor version equal to the Beam SDK image below (python3.11).
FROM python:3.11-slim

# Beam's worker entrypoint (/opt/apache/beam/boot) and its files. The Beam version here must be
# the one setup.py pins (apache-beam[gcp,aws,azure]==2.77.0); tests/test_dataflow.py checks it.
COPY --from=apache/beam_python3.11_sdk:2.77.0 /opt/apache/beam /opt/apache/beam

# Google's Flex Template launcher for Python 3.11. "latest" is the tag Google documents as the
# current reviewed release; pin a dated tag or a digest (…@sha256:…) for fully repeatable builds.
COPY --from=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

ARG WORKDIR=/template
WORKDIR ${WORKDIR}

# Pinned dependency set first (its layer is cached while only the code changes) ...
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# ... then the package itself (a regular, non-editable install, exactly what --setup_file
# would stage), and the launcher file the Flex Template runs.
COPY setup.py .
COPY pipeline pipeline
COPY transforms transforms
COPY flex_launcher.py .
RUN pip install --no-cache-dir . && pip check

# The Flex Template launcher runs `python $FLEX_TEMPLATE_PYTHON_PY_FILE --param=value ...`.
# No FLEX_TEMPLATE_PYTHON_SETUP_FILE / _REQUIREMENTS_FILE: everything is already installed here,
# and the workers use this same image (sdk_container_image), so nothing is staged at launch.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE="${WORKDIR}/flex_launcher.py"

# The worker boot binary: lets the image serve as the SDK container image.
ENTRYPOINT ["/opt/apache/beam/boot"]
