"""Which --segment_endpoint URLs are refused, and with which one-line reason.

Fast unit tests of `pipeline/endpoint.py`: each refusal is checked by its exact message (the
rule that refused it), so a one-token change is noticed (scripts/mutation_check.py).
"""
import pytest

from pipeline.endpoint import endpoint_for

EU, US = 'https://events.eu1.segmentapis.com/v1/batch', 'https://api.segment.io/v1/batch'


def refusal(url):
    with pytest.raises(ValueError) as refused:
        endpoint_for('us', url)
    return str(refused.value)


def test_the_region_picks_the_endpoint_when_none_is_given():
    assert endpoint_for() == US
    assert endpoint_for('us') == US and endpoint_for('eu') == EU
    assert endpoint_for('eu', '') == EU and endpoint_for('us', None) == US


@pytest.mark.parametrize('url', ['https://user:pw@api.segment.io/v1/batch',
                                 'http://key@127.0.0.1/v1/batch', 'https://api.segment.io/@'])
def test_any_at_sign_is_refused_as_credentials(url):
    assert refusal(url) == (
        '--segment_endpoint must not contain credentials or "@" (the write key comes from '
        'SEGMENT_WRITE_KEY or --segment_write_key_secret, never from the URL)')


@pytest.mark.parametrize('url', ['https://api.segment.io\\v1\\batch', 'http://127.0.0.1 /v1',
                                 'http://127.0.0.1/v1#frag', 'https://\u0430pi.segment.io/v1',
                                 'https://api.segment.io/v1/"batch"', 'http://127.0.0.1\t/v1'])
def test_characters_parsers_read_two_ways_are_refused(url):
    assert refusal(url) == (
        '--segment_endpoint contains characters a URL parser could read two ways (backslash, '
        'space, control or non-ASCII characters, "#", quotes); give a plain URL')


@pytest.mark.parametrize('url', ['https://api.segment.io:99999/v1/batch', 'https://[::1/v1',
                                 'https://api.segment.io:0x50/', 'https://a:b/c'])
def test_unparseable_urls_are_refused(url):
    assert refusal(url) == '--segment_endpoint is not a valid URL'


@pytest.mark.parametrize('url', ['ftp://127.0.0.1/v1/batch', 'http:/127.0.0.1/v1/batch',
                                 'HTTPS//api.segment.io/v1/batch'])
def test_only_http_and_https_urls_are_accepted(url):
    assert refusal(url) == '--segment_endpoint must be an http(s) URL'


def test_a_url_without_a_host_is_refused():
    assert refusal('https://:443/v1/batch') == \
        '--segment_endpoint must name a host and carry no credentials'


@pytest.mark.parametrize('url', ['https://%41pi.segment.io/v1/batch',
                                 'http://%31%32%37.0.0.1/v1/batch'])
def test_a_host_the_parsers_read_differently_is_refused(url):
    assert refusal(url) == \
        '--segment_endpoint is ambiguous (parsers disagree about its host); give a plain URL'


@pytest.mark.parametrize('url', ['http://api.segment.io/v1/batch', 'http://127.1/v1/batch',
                                 'http://10.0.0.1/v1/batch', 'http://[::2]/v1/batch'])
def test_plain_http_is_refused_for_other_than_loopback_hosts(url):
    assert refusal(url) == (
        '--segment_endpoint: plain http:// is only allowed for loopback hosts (127.0.0.1, ::1, '
        'localhost); use https://')


@pytest.mark.parametrize('url', ['http://127.0.0.1:8080/v1/batch', 'http://127.5.6.7/v1',
                                 'http://[::1]:9/v1/batch', 'http://LOCALHOST:9/v1/batch',
                                 'https://api.segment.io/v1/batch', 'HTTPS://API.segment.io/v1',
                                 'https://[2001:db8::1]:8443/v1/batch',
                                 'https://api.segment.io:0443/v1/batch?x=1'])
def test_plain_urls_are_returned_as_given(url):
    assert endpoint_for('eu', url) == url
