"""The `current` profile mapper, `mapper_for` and --include_anonymous as pure function calls.

Fast unit tests (no pipeline): the exact message each input becomes, with literal expected
values, so a one-token change in `transforms/mapping.py` is noticed (scripts/mutation_check.py).
"""
import pytest

from transforms.mapping import (DROPPED, CurrentMessageMapper, Invalid, MessageMapper,
                                mapper_for, serialize)
from transforms.model import INVALID_RECORD

SESSION = 'users.behaviors.app.SessionStart'
CUSTOM = 'users.behaviors.CustomEvent'
WHATSAPP_READ = 'users.messages.whatsapp.Read'
BASE = {'id': 'ev-1', 'external_user_id': 'ext-1', 'user_id': 'braze-1', 'time': 1714564800}


def test_a_full_session_start_is_the_exact_message_in_the_exact_order():
    mapper = CurrentMessageMapper('pre-', '1.2.3', {'All': False, 'Amplitude': True})
    rec = dict(BASE, app_group_id='g', app_id='a', device_id=None, session_id='s-9',
               platform='ios', device_model='iPhone15,2', unrelated='never sent')
    message = mapper.to_message(SESSION, rec)
    assert serialize(message) == (
        b'{"type":"track","event":"Session Started","userId":"ext-1","anonymousId":"braze-1",'
        b'"messageId":"pre-ev-1","timestamp":"2024-05-01T12:00:00.000Z",'
        b'"properties":{"app_group_id":"g","app_id":"a","session_id":"s-9"},'
        b'"context":{"device":{"model":"iPhone15,2","type":"ios"},'
        b'"library":{"name":"currents-to-segment","version":"1.2.3"}},'
        b'"integrations":{"All":false,"Amplitude":true}}')


def test_defaults_no_prefix_no_version_no_integrations_and_anonymous_events_dropped():
    mapper = CurrentMessageMapper()
    assert mapper.to_message(SESSION, dict(BASE, external_user_id=None)) is DROPPED
    assert serialize(mapper.to_message(SESSION, dict(BASE, user_id=None))) == (
        b'{"type":"track","event":"Session Started","userId":"ext-1","messageId":"ev-1",'
        b'"timestamp":"2024-05-01T12:00:00.000Z","properties":{},'
        b'"context":{"library":{"name":"currents-to-segment","version":""}}}')


def test_values_keep_their_avro_types_and_only_nulls_are_left_out():
    message = CurrentMessageMapper().to_message(CUSTOM, dict(
        BASE, name='Added To Cart', ad_id='', ad_id_type=None, ad_tracking_enabled=False,
        app_group_id=0, app_id=None, device_id=None, platform=None, device_model='Pixel 8'))
    assert message['event'] == 'Added To Cart'
    assert message['properties'] == {'ad_id': '', 'ad_tracking_enabled': False,
                                     'app_group_id': 0, 'name': 'Added To Cart'}
    assert message['properties']['ad_tracking_enabled'] is False
    assert message['context'] == {'device': {'model': 'Pixel 8'},
                                  'library': {'name': 'currents-to-segment', 'version': ''}}


def test_a_context_path_nests_one_object_deep():
    message = CurrentMessageMapper().to_message(WHATSAPP_READ, dict(BASE, to_phone_number='+15550100'))
    assert message['event'] == 'WhatsApp Read'
    assert message['context'] == {'traits': {'phone': '+15550100'},
                                  'library': {'name': 'currents-to-segment', 'version': ''}}
    none = CurrentMessageMapper().to_message(WHATSAPP_READ, dict(BASE, to_phone_number=None))
    assert none['context'] == {'library': {'name': 'currents-to-segment', 'version': ''}}


@pytest.mark.parametrize('name,detail', [
    (None, 'custom event has no name'),
    ('', 'custom event has no name'),
    ('  \t', 'custom event has no name'),
    (5, 'name is not a string: 5'),
    (['x'], "name is not a string: ['x']"),
])
def test_a_custom_event_without_a_usable_name_is_an_invalid_record(name, detail):
    with pytest.raises(Invalid) as caught:
        CurrentMessageMapper().to_message(CUSTOM, dict(BASE, name=name))
    assert (caught.value.reason, caught.value.detail) == (INVALID_RECORD, detail)


def test_a_named_type_ignores_a_name_field():
    message = CurrentMessageMapper().to_message(SESSION, dict(BASE, name='Not The Event'))
    assert message['event'] == 'Session Started'


@pytest.mark.parametrize('event_type', ['users.messages.newsfeedcard.Click', 'no.such.Type'])
def test_a_type_outside_the_current_table_is_an_invalid_record(event_type):
    with pytest.raises(Invalid) as caught:
        CurrentMessageMapper().to_message(event_type, dict(BASE))
    assert caught.value.reason == INVALID_RECORD
    assert caught.value.detail == f'{event_type} is not a type of the current mapping'


def test_the_drop_comes_before_the_name_and_the_type_check():
    mapper = CurrentMessageMapper()
    assert mapper.to_message(CUSTOM, {'name': None, 'id': 'x', 'time': 1}) is DROPPED
    assert mapper.to_message(SESSION, {'external_user_id': '   ', 'time': 'bad'}) is DROPPED


@pytest.mark.parametrize('cls,event_type', [(MessageMapper, 'users.messages.email.Send'),
                                            (CurrentMessageMapper, SESSION)])
def test_include_anonymous_sends_anonymous_only_events_with_anonymous_id_alone(cls, event_type):
    mapper = cls(include_anonymous=True)
    for external in (None, '', '  '):
        message = mapper.to_message(event_type, dict(BASE, external_user_id=external))
        assert message['anonymousId'] == 'braze-1' and 'userId' not in message
        assert list(message)[:5] == ['type', 'event', 'anonymousId', 'messageId', 'timestamp']
    for user_id in (None, '', ' '):
        assert mapper.to_message(event_type, dict(BASE, external_user_id=None,
                                                  user_id=user_id)) is DROPPED
    identified = mapper.to_message(event_type, dict(BASE))
    assert (identified['userId'], identified['anonymousId']) == ('ext-1', 'braze-1')
    assert cls().to_message(event_type, dict(BASE, external_user_id=None)) is DROPPED


def test_mapper_for_picks_the_profile_and_passes_every_setting():
    classic = mapper_for()
    assert type(classic) is MessageMapper
    assert type(mapper_for('classic')) is MessageMapper
    current = mapper_for('current', 'p-', '9.9', {'All': True}, True)
    assert type(current) is CurrentMessageMapper
    assert (current.prefix, current.library, current.integrations, current.include_anonymous) == (
        'p-', {'name': 'currents-to-segment', 'version': '9.9'}, {'All': True}, True)
    message = current.to_message(SESSION, dict(BASE, external_user_id=None))
    assert message['messageId'] == 'p-ev-1' and message['integrations'] == {'All': True}
    anon_classic = mapper_for('classic', include_anonymous=True)
    assert anon_classic.to_message('users.messages.email.Send',
                                   dict(BASE, external_user_id=None))['anonymousId'] == 'braze-1'
    plain = mapper_for('current')
    assert (plain.prefix, plain.library['version'], plain.integrations,
            plain.include_anonymous) == ('', '', None, False)


def test_mapper_for_refuses_an_unknown_profile_naming_the_known_ones():
    with pytest.raises(ValueError) as refused:
        mapper_for('future')
    assert str(refused.value) == "unknown mapping profile 'future' (known: classic, current)"


def test_a_deeper_context_path_nests_every_level():
    """The shipped table nests one object deep; the mapper (and profiles.py) allow deeper paths."""
    mapper = CurrentMessageMapper()
    mapper.plans['test.Deep'] = ('Deep', ((('app', 'build', 'id'), 'build_id'),
                                          (('app', 'name'), 'app_name')), ())
    message = mapper.to_message('test.Deep', dict(BASE, build_id='b-7', app_name='shop'))
    assert message['context'] == {'app': {'build': {'id': 'b-7'}, 'name': 'shop'},
                                  'library': {'name': 'currents-to-segment', 'version': ''}}
