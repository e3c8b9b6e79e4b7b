"""Tests for devtools.receiver: real HTTP over loopback, so the receiver's contract is what clients see."""
import base64
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from devtools.receiver import SegmentReceiver, control_headers

KEY = 'test-write-key'
REPO = Path(__file__).resolve().parents[1]


def auth(key=KEY):
    return {'Authorization': 'Basic ' + base64.b64encode(f'{key}:'.encode()).decode(),
            'Content-Type': 'application/json'}


def msg(i, **kw):
    m = {'type': 'track', 'userId': f'u{i}', 'event': 'Email Opened', 'messageId': f'dev-{i}',
         'timestamp': '2024-05-01T12:00:00.000Z', 'properties': {'n': i}}
    m.update(kw)
    return m


def post(rec, batch, headers=None, timeout=5, **envelope):
    body = {'batch': batch, 'sentAt': '2024-05-02T00:00:00.000Z', **envelope}
    return requests.post(rec.url, data=json.dumps(body), headers=headers or auth(), timeout=timeout)


@pytest.fixture
def rec():
    with SegmentReceiver() as r:
        yield r


def test_accepts_stores_and_dedupes(rec):
    with requests.Session() as s:
        r1 = s.post(rec.url, json={'batch': [msg(1), msg(2)], 'sentAt': 'x'}, headers=auth())
        r2 = s.post(rec.url, json={'batch': [msg(2, event='Changed'), msg(3)]}, headers=auth())
    assert r1.status_code == r2.status_code == 200
    assert r1.json() == {'success': True}
    st = rec.stats()
    assert st['accepted'] == 3 and st['duplicates'] == 1
    assert st['requests'] == 2 and st['by_status'] == {'200': 2}
    assert st['sent_at_values_missing'] == 1
    assert [n for _, n in st['arrivals']] == [2, 2]
    by_id = {m['messageId']: m for m in rec.messages()}
    assert sorted(by_id) == ['dev-1', 'dev-2', 'dev-3']
    assert by_id['dev-2']['event'] == 'Email Opened'   # first copy kept
    assert [r['sent_at'] for r in rec.accepted_requests()] == ['x', None]


def test_a_messageid_repeated_within_one_request_keeps_its_first_copy(rec):
    """The all-valid path stores a request's ids in bulk; a repeat inside it takes the
    one-by-one path, and the requests after it still find their own messages."""
    with requests.Session() as s:
        r1 = s.post(rec.url, json={'batch': [msg(1), msg(1, event='Changed'), msg(2)]},
                    headers=auth())
        r2 = s.post(rec.url, json={'batch': [msg(3), msg(4)]}, headers=auth())
        r3 = s.post(rec.url, json={'batch': [msg(4, event='Again'), msg(5)]}, headers=auth())
    assert r1.status_code == r2.status_code == r3.status_code == 200
    st = rec.stats()
    assert st['accepted'] == 5 and st['duplicates'] == 2
    by_id = {m['messageId']: m for m in rec.messages()}
    assert sorted(by_id) == ['dev-1', 'dev-2', 'dev-3', 'dev-4', 'dev-5']
    assert by_id['dev-1']['event'] == by_id['dev-4']['event'] == 'Email Opened'
    assert [by_id[f'dev-{i}']['properties'] for i in range(1, 6)] == [{'n': i} for i in range(1, 6)]


def test_body_write_key_and_envelope_merge(rec):
    body = {'batch': [msg(1, context={'ip': '1.2.3.4'})], 'writeKey': KEY,
            'context': {'integration': {'name': 'braze'}, 'ip': '0'}}
    r = requests.post(rec.url, json=body)
    assert r.status_code == 200
    (m,) = rec.messages()
    assert m['context'] == {'integration': {'name': 'braze'}, 'ip': '1.2.3.4'}


@pytest.mark.parametrize('headers', [{}, auth('wrong-key')], ids=['missing', 'wrong'])
def test_bad_key_is_401(rec, headers):
    r = requests.post(rec.url, json={'batch': [msg(1)], 'writeKey': 'nope'}, headers=headers)
    assert r.status_code == 401
    assert r.json() == {'success': False, 'message': 'invalid write key', 'code': 'unauthorized'}
    assert rec.stats()['accepted'] == 0


def test_gzip_body_and_limit_on_uncompressed_size(rec):
    h = {**auth(), 'Content-Encoding': 'gzip'}
    ok = gzip.compress(json.dumps({'batch': [msg(i) for i in range(50)]}).encode())
    assert requests.post(rec.url, data=ok, headers=h).status_code == 200
    assert rec.stats()['accepted'] == 50
    # ~600 KB of JSON that gzips to a few KB: still too large
    big = {'batch': [msg(i, properties={'pad': 'x' * 20_000}) for i in range(30)]}
    raw = json.dumps(big).encode()
    assert len(raw) > 500_000 and len(gzip.compress(raw)) < 50_000
    r = requests.post(rec.url, data=gzip.compress(raw), headers=h)
    assert r.status_code == 400 and r.json()['code'] == 'payload_too_large'
    r = requests.post(rec.url, data=b'not gzip', headers=h)
    assert r.status_code == 400 and r.json()['code'] == 'invalid_request'


def test_body_over_500000_is_400(rec):
    batch = [msg(i, properties={'pad': 'x' * 20_000}) for i in range(25)]
    r = post(rec, batch)
    assert r.status_code == 400
    assert r.json() == {'success': False, 'message': 'Exceed payload limit', 'code': 'payload_too_large'}
    assert rec.stats()['accepted'] == 0 and rec.stats()['max_request_bytes'] > 500_000


def test_one_message_over_32000_fails_whole_request(rec):
    big = msg(1, properties={'pad': 'é' * 16_000})   # 16,000 chars but 32,000+ UTF-8 bytes
    r = post(rec, [msg(0), big, msg(2)])
    assert r.status_code == 400 and r.json()['message'] == 'Exceed payload limit'
    assert rec.stats()['accepted'] == 0
    assert post(rec, [msg(1, properties={'pad': 'x' * 31_000})]).status_code == 200


def test_more_than_2500_messages_silently_dropped(rec):
    batch = [{'type': 'track', 'userId': 'u', 'event': 'e', 'messageId': str(i)} for i in range(2501)]
    r = post(rec, batch)
    assert r.status_code == 200 and r.json() == {'success': True}
    st = rec.stats()
    assert st['accepted'] == 0 and rec.messages() == []
    assert st['silently_dropped'] == 2501 and st['max_batch_messages_seen'] == 2501


@pytest.mark.parametrize('bad, code', [
    ({'type': None}, 'type_required'),
    ({'type': 'click'}, 'type_invalid'),
    ({'userId': None}, 'no_user_anon_id'),
    ({'userId': ''}, 'id_not_string'),
    ({'userId': 42}, 'id_not_string'),
    ({'event': None}, 'event_not_defined'),
    ({'event': 7}, 'event_not_string'),
    ({'properties': [1]}, 'properties_not_object'),
    ({'messageId': 'm' * 101}, 'message_id_invalid'),
    ({'timestamp': 'yesterday'}, 'timestamp_invalid'),
])
def test_invalid_item_is_400_naming_index(rec, bad, code):
    m = msg(1, **bad)
    m = {k: v for k, v in m.items() if v is not None}
    r = post(rec, [msg(0), m])
    assert r.status_code == 400
    assert r.json() == {'success': False, 'message': f'{code} at index 1', 'code': code}
    assert rec.stats()['accepted'] == 0


def test_anonymous_id_alone_is_enough(rec):
    m = msg(1, anonymousId='a1')
    del m['userId']
    assert post(rec, [m]).status_code == 200


def test_request_level_errors(rec):
    r = requests.post(rec.url, data=b'{nope', headers=auth())
    assert r.status_code == 400 and r.json()['code'] == 'invalid_request'
    r = requests.post(rec.url, data=json.dumps({'batch': [msg(1, properties={'x': float('nan')})]}),
                      headers=auth())   # Python emits NaN; it is not JSON
    assert r.status_code == 400 and r.json()['code'] == 'invalid_request'
    r = requests.post(rec.url, json={'events': []}, headers=auth())
    assert r.status_code == 400 and r.json()['code'] == 'invalid_request'
    r = requests.post(rec.url, json={'batch': []}, headers=auth())
    assert r.status_code == 400 and r.json()['code'] == 'empty_batch'
    assert requests.get(rec.url).status_code == 404
    assert requests.post(rec.url.replace('/v1/batch', '/v1/track'), json={}).status_code == 404


def test_poison_message_id_refused():
    with SegmentReceiver(poison_message_ids={'dev-2'}) as rec:
        r = post(rec, [msg(0), msg(1), msg(2)])
        assert r.status_code == 400
        assert r.json() == {'success': False, 'message': 'poison at index 2', 'code': 'poison'}
        assert rec.stats()['accepted'] == 0


def test_invalid_item_status_200_keeps_valid_ones(tmp_path):
    store = tmp_path / 'store.jsonl'
    with SegmentReceiver(invalid_item_status=200, poison_message_ids={'dev-1'},
                         store_path=str(store)) as rec:
        r = post(rec, [msg(0), msg(1), msg(2, event=None)])
        assert r.status_code == 200
        st = rec.stats()
        assert st['accepted'] == 1 and st['invalid_dropped'] == 2
        assert [m['messageId'] for m in rec.messages()] == ['dev-0']
    lines = store.read_text().splitlines()
    assert [json.loads(x)['messageId'] for x in lines] == ['dev-0']


def test_store_path_appends_new_messages_only(tmp_path):
    store = tmp_path / 'out.jsonl'
    with SegmentReceiver(store_path=str(store)) as rec:
        post(rec, [msg(0), msg(1)])
        post(rec, [msg(1), msg(2)])
        assert [json.loads(x)['messageId'] for x in store.read_text().splitlines()] == \
            ['dev-0', 'dev-1', 'dev-2']


@pytest.mark.parametrize('kind, status', [('429', 429), ('429-no-retry-after', 429),
                                          ('500', 500), ('503', 503)])
def test_fault_status(kind, status):
    with SegmentReceiver(fault_rate=1.0, faults=(kind,), retry_after=7) as rec:
        r = post(rec, [msg(1)])
        assert r.status_code == status and r.json()['success'] is False
        if kind == '429':
            assert r.headers['Retry-After'] == '7' and r.headers['X-RateLimit-Reset'] == '7'
        else:
            assert 'Retry-After' not in r.headers
        st = rec.stats()
        assert st['faults_injected'] == {kind: 1} and st['accepted'] == 0
        assert st['by_status'] == {str(status): 1}


def test_fault_before_auth():
    with SegmentReceiver(fault_rate=1.0, faults=('503',)) as rec:
        assert post(rec, [msg(1)], headers={}).status_code == 503


def test_fault_reset_raises_connection_error():
    with SegmentReceiver(fault_rate=1.0, faults=('reset',)) as rec:
        with pytest.raises(requests.ConnectionError):
            post(rec, [msg(i) for i in range(100)])
        st = rec.stats()
        assert st['by_status'] == {'reset': 1} and st['accepted'] == 0


def test_fault_slow_times_out_then_dedupes():
    with SegmentReceiver(fault_rate=1.0, faults=('slow',), slow_seconds=0.5) as rec:
        with pytest.raises(requests.Timeout):
            post(rec, [msg(1)], timeout=0.1)
        assert post(rec, [msg(1)], timeout=3).status_code == 200   # also slow, but waited for
        deadline = time.monotonic() + 3
        while rec.stats()['by_status'].get('200', 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        st = rec.stats()
        assert st['accepted'] == 1 and st['duplicates'] == 1 and st['faults_injected'] == {'slow': 2}


def test_a_slow_request_does_not_hold_up_the_others():
    """Requests are checked one at a time (devtools/receiver.py, _handle_batch), but the
    'slow' fault sleeps outside that turn: the next request is answered meanwhile."""
    def slow_then_normal(seed):   # the receiver's draws: fault?, which kind, then the next
        rng = random.Random(seed)
        if rng.random() >= 0.5:
            return False
        rng.randrange(1)
        return rng.random() >= 0.5
    seed = next(s for s in range(100) if slow_then_normal(s))
    with SegmentReceiver(fault_rate=0.5, faults=('slow',), slow_seconds=3, seed=seed) as rec:
        slow = threading.Thread(target=post, args=(rec, [msg(1)]), kwargs={'timeout': 10})
        slow.start()
        deadline = time.monotonic() + 3
        while not rec.stats()['faults_injected'] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rec.stats()['faults_injected'] == {'slow': 1}
        started = time.monotonic()
        assert post(rec, [msg(2)], timeout=2).status_code == 200
        assert time.monotonic() - started < 2
        assert rec.stats()['accepted'] == 1   # the slow one is still asleep
        slow.join(10)
        assert rec.stats()['accepted'] == 2


def test_concurrent_requests_all_land():
    with SegmentReceiver() as rec:
        answers = []

        def send(part):
            answers.append(post(rec, [msg(part * 100 + i) for i in range(100)],
                                timeout=10).status_code)
        threads = [threading.Thread(target=send, args=(part,)) for part in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert answers == [200] * 8
        stats = rec.stats()
        assert stats['accepted'] == 800 and stats['requests'] == 8 and stats['duplicates'] == 0


def statuses(seed, n=30):
    with SegmentReceiver(fault_rate=0.5, faults=('429', '500', '503'), seed=seed) as rec:
        with requests.Session() as s:
            return [s.post(rec.url, json={'batch': [msg(i)]}, headers=auth()).status_code
                    for i in range(n)]


def test_seeded_faults_reproducible():
    a = statuses(1)
    assert a == statuses(1)
    assert a != statuses(2)
    assert {200, 429, 500, 503} <= set(a)


@pytest.mark.parametrize('mode, status', [('refuse_503', 503), ('unauthorized_401', 401)])
def test_set_mode_after_n_requests(rec, mode, status):
    rec.set_mode(mode, after_requests=2)
    got = [post(rec, [msg(i)]).status_code for i in range(4)]
    assert got == [200, 200, status, status]
    rec.set_mode('normal')
    assert post(rec, [msg(9)]).status_code == 200
    assert rec.stats()['accepted'] == 3


def test_control_endpoints(rec):
    base = rec.url.replace('/v1/batch', '')
    ctl = control_headers(rec.write_key)
    post(rec, [msg(1), msg(2)])
    st = requests.get(base + '/_receiver/stats', headers=ctl).json()
    assert st['accepted'] == 2
    lines = requests.get(base + '/_receiver/messages', headers=ctl).text.splitlines()
    assert [json.loads(x)['messageId'] for x in lines] == ['dev-1', 'dev-2']
    r = requests.post(base + '/_receiver/mode', json={'mode': 'refuse_503', 'after_requests': 0},
                      headers=ctl)
    assert r.status_code == 200
    assert post(rec, [msg(3)]).status_code == 503
    assert requests.post(base + '/_receiver/mode', json={'mode': 'bogus'},
                         headers=ctl).status_code == 400


def test_keep_alive_reuses_connection_and_stop_closes_it():
    rec = SegmentReceiver().start()
    try:
        with requests.Session() as s:
            for i in range(5):
                assert s.post(rec.url, json={'batch': [msg(i)]}, headers=auth()).status_code == 200
            assert len(rec._conns) == 1   # one pooled connection served all five requests
            rec.stop()
            with pytest.raises(requests.ConnectionError):
                s.post(rec.url, json={'batch': [msg(9)]}, headers=auth(), timeout=2)
    finally:
        rec.stop()


def run_cli(*args, env_key=None):
    env = {k: v for k, v in os.environ.items() if k != 'SEGMENT_WRITE_KEY'}
    if env_key:
        env['SEGMENT_WRITE_KEY'] = env_key
    return subprocess.Popen([sys.executable, '-m', 'devtools.receiver', *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_serves_and_exits_cleanly_on_sigterm(tmp_path):
    port_file = tmp_path / 'port'
    proc = run_cli('--port', '0', '--port-file', str(port_file), env_key='env-secret-key')
    try:
        line = proc.stdout.readline()
        assert line.startswith('listening on http://127.0.0.1:') and line.rstrip().endswith('/v1/batch')
        url = line.split()[-1]
        assert url.split(':')[-1].split('/')[0] == port_file.read_text().strip()
        assert requests.post(url, json={'batch': [msg(1)]}, headers=auth()).status_code == 401
        assert requests.post(url, json={'batch': [msg(1)]},
                             headers=auth('env-secret-key')).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary['accepted'] == 1 and summary['by_status'] == {'401': 1, '200': 1}
    assert 'arrivals' not in summary
    assert 'env-secret-key' not in line + out + err


@pytest.mark.parametrize('host', ['0.0.0.0', '192.168.1.10', 'example.com'])
def test_cli_refuses_non_loopback_host(host):
    proc = run_cli('--host', host)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 2
    assert out == '' and len(err.strip().splitlines()) == 1 and 'loopback' in err
