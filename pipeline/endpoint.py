"""The Segment batch endpoint a run sends to, checked before anything runs."""
import ipaddress
from typing import Optional
from urllib.parse import urlparse

from transforms.segment_client import EU_ENDPOINT, US_ENDPOINT


def endpoint_for(region: str = 'us', override: Optional[str] = None) -> str:
    """The batch URL; plain http:// only for loopback hosts (CONTRACT §4)."""
    if not override:
        return EU_ENDPOINT if region == 'eu' else US_ENDPOINT
    parsed = urlparse(override)
    if parsed.scheme not in ('http', 'https') or not parsed.hostname:
        raise ValueError(f'--segment_endpoint must be an http(s) URL, got {override!r}')
    if parsed.scheme == 'http':
        host = parsed.hostname
        loopback = host == 'localhost'
        try:
            loopback = loopback or ipaddress.ip_address(host).is_loopback
        except ValueError:
            pass
        if not loopback:
            raise ValueError('--segment_endpoint: plain http:// is only allowed for loopback '
                             'hosts (127.0.0.1, ::1, localhost); use https://')
    return override
