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
    python_requires='>=3.10',
    install_requires=[
        'apache-beam[gcp,aws,azure]==2.77.0',  # gs://, s3:// and azfs:// (Beam's filesystems)
        'fastavro>=1.9,<2',
        'requests>=2.31,<3',
        'orjson>=3.9,<4',
        'cramjam>=2.7',  # snappy codec for fastavro
        'google-cloud-secret-manager>=2.20,<3',
    ],
    extras_require={
        'test': ['pytest>=8', 'hypothesis>=6.100', 'gcp-storage-emulator>=2024.8.3',
                 'moto[server]>=5.2,<6'],
        'bench': ['segment-analytics-python==2.4.0'],
    },
    entry_points={'console_scripts': ['currents-to-segment=pipeline.main:main']},
)
