"""Packaging: the single source of dependencies, also used by Dataflow (--setup_file)."""
import re
from pathlib import Path

import setuptools

VERSION = re.search(r"__version__ = '([^']+)'",
                    Path(__file__).with_name('pipeline').joinpath('__init__.py').read_text()
                    ).group(1)

setuptools.setup(
    name='currents-to-segment',
    version=VERSION,
    description='Backfill Braze Currents Avro exports into Segment as track calls (Apache Beam)',
    packages=['pipeline', 'transforms'],
    package_data={'transforms': ['connector_current.json']},  # the `current` mapping table
    python_requires='>=3.10',
    # Floors at releases without known advisories: requests 2.32.4 (CVE-2024-35195,
    # CVE-2024-47081: netrc credential leak), urllib3 2.5.0 (CVE-2024-37891, CVE-2025-50181/
    # 50182: redirect and proxy handling; pipeline/endpoint.py parses with it), orjson 3.9.15
    # (CVE-2024-27454: unbounded recursion).
    install_requires=[
        'apache-beam[gcp,aws,azure]==2.77.0',  # gs://, s3:// and azfs:// (Beam's filesystems)
        'fastavro>=1.9,<2',
        'requests>=2.32.4,<3',
        'urllib3>=2.5.0,<3',
        'orjson>=3.9.15,<4',
        'cramjam>=2.7',  # snappy codec (transforms/read.py)
        'google-cloud-secret-manager>=2.20,<3',
        'azure-keyvault-secrets>=4.8,<5',  # Key Vault secrets (transforms/secrets.py)
    ],
    extras_require={
        # msgspec: the local receiver (devtools/receiver.py) checks the common request with it
        'test': ['pytest>=8', 'hypothesis>=6.100', 'gcp-storage-emulator>=2024.8.3',
                 'moto[server]>=5.2,<6', 'msgspec>=0.18,<1'],
        'bench': ['segment-analytics-python==2.4.0', 'msgspec>=0.18,<1'],
    },
    entry_points={'console_scripts': ['currents-to-segment=pipeline.__main__:main']},
)
