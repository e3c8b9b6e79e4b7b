"""Development tools, used from a checkout and never shipped: the Segment-compatible receiver
(`python -m devtools.receiver`) and the Currents sample generator (`python -m devtools.sample`)."""
