"""currents-to-segment: Braze Currents Avro exports → Segment `track` calls (Apache Beam)."""
__version__ = '0.1.0'
