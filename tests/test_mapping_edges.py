"""The mapping's edge cases the Braze samples do not reach: non-string values, defaults, the
reject and drop markers, and the bounded timestamp cache."""
import pytest

from transforms.mapping import (DROPPED, Invalid, MessageMapper, as_string, iso_timestamp,
                                serialize)


def _record(**extra):
    record = {'id': 'x', 'user_id': 'u', 'external_user_id': 'e', 'time': 1714564800}
    record.update(extra)
    return record


def test_as_string_of_structures_is_compact_json_keeping_unicode():
    assert as_string({'a': [1, 'é']}) == '{"a":[1,"é"]}'
    assert as_string([True, None]) == '[true,null]'
    assert as_string(b'ab') == '"b\'ab\'"'            # anything else: its str(), quoted
    assert as_string('') == '' and as_string('x') == 'x'
    assert as_string(0) == '0' and as_string(-3) == '-3' and as_string(0.1) == '0.1'


def test_non_string_ids_become_strings():
    message = MessageMapper().to_message('users.canvas.Entry', _record(
        id=123, external_user_id=45, user_id=6.5))
    assert (message['messageId'], message['userId'], message['anonymousId']) == ('123', '45', '6.5')


def test_non_string_properties_and_email_become_strings():
    message = MessageMapper().to_message('users.messages.email.Send', _record(
        campaign_id=7, email_address=8))
    assert message['properties']['campaign_id'] == '7'
    assert message['context']['traits'] == {'email': '8'}


def test_defaults_no_prefix_empty_version():
    message = MessageMapper().to_message('users.canvas.Entry', _record())
    assert message['messageId'] == 'x'
    assert message['context'] == {'library': {'name': 'currents-to-segment', 'version': ''}}
    assert message['timestamp'] == '2024-05-01T12:00:00.000Z'
    assert MessageMapper(None).to_message('users.canvas.Entry', _record())['messageId'] == 'x'


@pytest.mark.parametrize('user_id', [None, '', ' \t'])
def test_blank_user_id_gives_no_anonymous_id(user_id):
    message = MessageMapper().to_message('users.canvas.Entry', _record(user_id=user_id))
    assert 'anonymousId' not in message


def test_the_drop_marker_and_invalid_carry_their_reason():
    assert DROPPED == 'dropped_no_external_user_id'
    with pytest.raises(Invalid) as caught:
        MessageMapper().to_message('users.canvas.Entry', _record(id=None))
    assert str(caught.value) == caught.value.detail == 'record has no id'
    assert caught.value.reason == 'invalid_record'
    with pytest.raises(Invalid) as caught:
        MessageMapper().to_message('users.canvas.Entry', _record(time=1.5))
    assert caught.value.detail == 'time is not an integer: 1.5'
    with pytest.raises(Invalid) as caught:
        MessageMapper().to_message('users.canvas.Entry', _record(time=None))
    assert caught.value.detail == 'record has no integer time'


def test_timestamps_are_exact_to_the_second_across_hours():
    mapper = MessageMapper()
    for seconds, text in ((1714564800, '2024-05-01T12:00:00.000Z'),
                          (1714568399, '2024-05-01T12:59:59.000Z'),
                          (1714568400, '2024-05-01T13:00:00.000Z'),
                          (1714564861, '2024-05-01T12:01:01.000Z')):
        assert mapper.to_message('users.canvas.Entry', _record(time=seconds))['timestamp'] == text
        assert iso_timestamp(seconds) == text


def test_the_hour_cache_stays_bounded():
    # A backfill spans many hours: the cache of hour prefixes is emptied once it holds 10,001.
    mapper = MessageMapper()
    sizes = []
    for hour in range(10_005):
        mapper.to_message('users.canvas.Entry', _record(time=hour * 3600))
        sizes.append(len(mapper._hours))
    assert max(sizes) == 10_001 and sizes[-1] < 10
    assert mapper.to_message('users.canvas.Entry', _record(time=0))['timestamp'] == \
        '1970-01-01T00:00:00.000Z'


def test_serialize_is_compact_utf8():
    assert serialize({'a': 'é', 'b': [1, None]}) == '{"a":"é","b":[1,null]}'.encode()
    assert serialize({'big': 2 ** 70}) == b'{"big":1180591620717411303424}'
