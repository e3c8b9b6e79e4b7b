"""The Segment batch endpoint a run sends to, checked before anything runs.

The write key goes only to the endpoint given (docs/security.md, "Where the write key goes"): the URL is
parsed with urllib3's parser, the one `requests` connects with, and must mean the same to the
standard library's parser; anything a parser could read two ways is refused rather than guessed.
"""
import ipaddress
import re
from typing import Optional
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from transforms.segment_client import EU_ENDPOINT, US_ENDPOINT

# Printable ASCII without space, backslash, quotes, '<>', '^', '`', '{|}' and without '@'
# (userinfo) or '#' (fragment): none belongs in a batch URL and each has been used to make
# parsers disagree about the host.
_PLAIN_URL = re.compile(r"[A-Za-z0-9\-._~:/?\[\]!$&'()*+,;=%]+")


def _refuse(why: str) -> ValueError:
    """One line naming the option, never repeating the URL (it may hold a secret)."""
    return ValueError(f'--segment_endpoint{"" if why.startswith(":") else " "}{why}')


def _is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:   # ipaddress accepts only canonical literals (no 127.1, no 0x7f.0.0.1)
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return False


def endpoint_for(region: str = 'us', override: Optional[str] = None) -> str:
    """The batch URL; plain http:// only for loopback hosts, no userinfo, nothing ambiguous."""
    if not override:
        return EU_ENDPOINT if region == 'eu' else US_ENDPOINT
    if '@' in override:
        raise _refuse('must not contain credentials or "@" (the write key comes from '
                      'SEGMENT_WRITE_KEY or --segment_write_key_secret, never from the URL)')
    if not _PLAIN_URL.fullmatch(override):
        raise _refuse('contains characters a URL parser could read two ways (backslash, '
                      'space, control or non-ASCII characters, "#", quotes); give a plain URL')
    try:
        parsed = parse_url(override)
        split = urlsplit(override)
        split_port = split.port
    except (LocationParseError, ValueError):
        raise _refuse('is not a valid URL') from None
    if parsed.scheme not in ('http', 'https') or not override.lower().startswith(
            parsed.scheme + '://'):
        raise _refuse('must be an http(s) URL')
    host = (parsed.host or '').lower()
    if not host or parsed.auth or split.username is not None or split.password is not None:
        raise _refuse('must name a host and carry no credentials')
    if host != (f'[{split.hostname}]' if ':' in (split.hostname or '') else split.hostname) \
            or parsed.port != split_port:
        raise _refuse('is ambiguous (parsers disagree about its host); give a plain URL')
    if parsed.scheme == 'http' and not _is_loopback(host):
        raise _refuse(': plain http:// is only allowed for loopback hosts (127.0.0.1, ::1, '
                      'localhost); use https://')
    return override
