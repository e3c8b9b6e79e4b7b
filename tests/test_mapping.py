"""The mapping of every one of the 34 event types, checked on Braze's own sample files."""
import json

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.events import BY_CURRENTS_TYPE, COMMON_PROPERTIES, EVENTS
from transforms.mapping import DROPPED, Invalid, MessageMapper, as_string, iso_timestamp, serialize
from transforms.model import INVALID_RECORD, MESSAGE_ID_TOO_LONG

LEGACY = {'users.behaviors.app.NewsFeedImpression', 'users.messages.newsfeedcard.Impression',
          'users.messages.newsfeedcard.Click'}


def sample_record(samples_dir, event_type):
    folder = samples_dir / ('legacy' if event_type in LEGACY else 'avro')
    with open(folder / f'{event_type}.avro', 'rb') as f:
        records = list(fastavro.reader(f))
    return records[0]


def sample_json(samples_dir, event_type):
    """Braze's own decoded copy (Avro-JSON: unions as {"string": v}) — an independent source."""
    folder = samples_dir / ('legacy' if event_type in LEGACY else 'json')
    with open(folder / f'{event_type}.json') as f:
        raw = json.load(f)
    return {k: (next(iter(v.values())) if isinstance(v, dict) and len(v) == 1 else v)
            for k, v in raw.items()}


def expected_message(spec, record, prefix=''):
    """CONTRACT §3 written out plainly from the table."""
    props = {}
    for name in COMMON_PROPERTIES:
        if record.get(name) is not None:
            props[name] = record[name]
    for segment_name, field in spec.properties:
        if record.get(field) is not None:
            props[segment_name] = record[field]
    props = {k: ('true' if v is True else 'false' if v is False else str(v))
             for k, v in props.items()}
    message = {'type': 'track', 'event': spec.segment_event,
               'userId': record['external_user_id'], 'anonymousId': record['user_id'],
               'messageId': prefix + record['id'], 'timestamp': iso_timestamp(record['time']),
               'properties': props, 'context': {}}
    if spec.is_email:
        message['context']['traits'] = {'email': record['email_address']}
    message['context']['library'] = {'name': 'currents-to-segment', 'version': '9.9'}
    return message


@pytest.mark.parametrize('spec', EVENTS, ids=[e.currents_type for e in EVENTS])
def test_each_braze_sample_maps_as_the_connector_does(samples_dir, spec):
    record = sample_record(samples_dir, spec.currents_type)
    decoded_by_braze = sample_json(samples_dir, spec.currents_type)
    assert record['id'] == decoded_by_braze['id']
    message = MessageMapper('bf-', '9.9').to_message(spec.currents_type, record)
    assert message == expected_message(spec, decoded_by_braze, prefix='bf-')
    assert all(isinstance(v, str) for v in message['properties'].values())
    assert json.loads(serialize(message)) == message


def test_all_34_types_have_a_sample(samples_dir):
    assert len(EVENTS) == 34
    assert len({e.segment_event for e in EVENTS}) == 34
    for spec in EVENTS:
        assert sample_record(samples_dir, spec.currents_type)


def test_email_link_clicked_written_out(samples_dir):
    record = sample_record(samples_dir, 'users.messages.email.Click')
    message = MessageMapper().to_message('users.messages.email.Click', record)
    assert message['event'] == 'Email Link Clicked'
    assert message['properties']['link_url'] == 'url'
    assert 'url' not in message['properties']
    assert message['properties']['user_agent'] == 'Mozilla/5.0'
    assert message['properties']['link_id'] == 'link_id'
    assert message['properties']['link_alias'] == 'link_alias'
    assert message['context']['traits'] == {'email': 'example@braze.com'}
    # Fields the connector does not forward stay out.
    for absent in ('esp', 'ip_pool', 'is_amp', 'timezone', 'email_address', 'browser'):
        assert absent not in message['properties']
    assert message['timestamp'] == '2034-06-13T09:08:24.000Z'


def test_renames_and_string_values(samples_dir):
    mapper = MessageMapper()
    card = mapper.to_message('users.messages.contentcard.Click',
                             sample_record(samples_dir, 'users.messages.contentcard.Click'))
    assert card['properties']['card_id'] == sample_record(
        samples_dir, 'users.messages.contentcard.Click')['content_card_id']
    assert 'content_card_id' not in card['properties']
    entry = mapper.to_message('users.canvas.Entry', sample_record(samples_dir, 'users.canvas.Entry'))
    assert entry['properties']['in_control_group'] == 'true'
    assert 'traits' not in entry['context']


def test_traits_email_only_on_the_eight_email_events():
    emails = [e for e in EVENTS if e.is_email]
    assert len(emails) == 8
    record = {'id': 'x', 'user_id': 'u', 'external_user_id': 'e', 'time': 0,
              'email_address': 'a@b.c'}
    for spec in EVENTS:
        message = MessageMapper().to_message(spec.currents_type, record)
        assert ('traits' in message['context']) == spec.is_email, spec.segment_event


@pytest.mark.parametrize('external', [None, '', '   '])
def test_missing_or_blank_external_user_id_is_dropped(external):
    record = {'id': 'x', 'user_id': 'u', 'time': 1}
    if external is not None:
        record['external_user_id'] = external
    assert MessageMapper().to_message('users.messages.email.Send', record) is DROPPED
    record.pop('external_user_id', None)
    assert MessageMapper().to_message('users.messages.email.Send', record) is DROPPED


@pytest.mark.parametrize('record,detail', [
    ({'user_id': 'u', 'external_user_id': 'e', 'time': 1}, 'no id'),
    ({'id': '', 'user_id': 'u', 'external_user_id': 'e', 'time': 1}, 'no id'),
    ({'id': 'x', 'user_id': 'u', 'external_user_id': 'e'}, 'no integer time'),
    ({'id': 'x', 'user_id': 'u', 'external_user_id': 'e', 'time': '12'}, 'not an integer'),
    ({'id': 'x', 'user_id': 'u', 'external_user_id': 'e', 'time': True}, 'not an integer'),
    ({'id': 'x', 'user_id': 'u', 'external_user_id': 'e', 'time': 10 ** 20}, 'out of range'),
])
def test_records_without_id_or_time_are_invalid(record, detail):
    with pytest.raises(Invalid) as caught:
        MessageMapper().to_message('users.messages.email.Send', record)
    assert caught.value.reason == INVALID_RECORD
    assert detail in caught.value.detail


def test_anonymous_id_absent_when_user_id_null():
    record = {'id': 'x', 'user_id': None, 'external_user_id': 'e', 'time': 1}
    message = MessageMapper().to_message('users.messages.sms.InboundReceive', record)
    assert 'anonymousId' not in message
    assert message['userId'] == 'e'


def test_message_id_prefix_and_length_limit():
    record = {'id': 'a' * 97, 'user_id': 'u', 'external_user_id': 'e', 'time': 1}
    assert MessageMapper('dev').to_message('users.canvas.Entry', record)['messageId'] == \
        'dev' + 'a' * 97
    with pytest.raises(Invalid) as caught:
        MessageMapper('dev-').to_message('users.canvas.Entry', record)
    assert caught.value.reason == MESSAGE_ID_TOO_LONG


def test_integrations_only_when_asked():
    record = {'id': 'x', 'user_id': 'u', 'external_user_id': 'e', 'time': 1}
    assert 'integrations' not in MessageMapper().to_message('users.canvas.Entry', record)
    message = MessageMapper(integrations={'All': False}).to_message('users.canvas.Entry', record)
    assert message['integrations'] == {'All': False}


def test_no_other_braze_field_is_forwarded():
    record = {'id': 'x', 'user_id': 'u', 'external_user_id': 'e', 'time': 1, 'timezone': 'UTC',
              'app_group_id': 'g', 'message_variation_name': 'n', 'device_id': 'd',
              'canvas_step_name': 's', 'campaign_id': 'c'}
    message = MessageMapper().to_message('users.messages.pushnotification.Send', record)
    assert message['properties'] == {'campaign_id': 'c'}
    assert set(message) == {'type', 'event', 'userId', 'anonymousId', 'messageId', 'timestamp',
                            'properties', 'context'}


def test_as_string_and_timestamp():
    assert as_string(True) == 'true' and as_string(False) == 'false'
    assert as_string(42) == '42' and as_string(1.5) == '1.5'
    assert iso_timestamp(1714564800) == '2024-05-01T12:00:00.000Z'
    assert iso_timestamp(0) == '1970-01-01T00:00:00.000Z'


def test_unicode_and_control_characters_survive_serialization():
    record = {'id': 'x\u00e9\u2603', 'user_id': 'u', 'external_user_id': 'e\x00\n\u0007',
              'time': 1, 'campaign_name': '\U0001F600 "quoted" \\ back'}
    message = MessageMapper().to_message('users.messages.webhook.Send', record)
    assert json.loads(serialize(message)) == message


def test_table_lookups():
    assert BY_CURRENTS_TYPE['users.messages.email.Click'].segment_event == 'Email Link Clicked'


def test_serialize_falls_back_for_what_orjson_refuses():
    odd = {'big': 2 ** 70, 'lone': '\ud800', 'text': 'caf\u00e9'}
    assert json.loads(serialize(odd)) == odd


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-2 ** 40, max_value=2 ** 37))
def test_cached_timestamps_equal_strftime(seconds):
    mapper = MessageMapper()
    try:
        expected = iso_timestamp(seconds)
    except (OverflowError, OSError, ValueError):
        return
    assert mapper._timestamp(seconds) == expected
    assert mapper._timestamp(seconds) == expected   # served from the hour cache
