"""A local Google Secret Manager for workers that share nothing with the test: reached by the
real, unmodified `google-cloud-secret-manager` client through standard settings of the workers'
machine, never through a test hook in the code under test.

Google's client always dials secretmanager.googleapis.com:443 over TLS. So the workers get:
- `grpc_proxy`: gRPC's standard HTTP CONNECT proxy setting, here a small proxy on 127.0.0.1 that
  sends every tunnel to the fake's gRPC server (`no_grpc_proxy` keeps Beam's own channels
  direct);
- `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`: gRPC's trust store, holding the CA that signed the fake's
  certificate for secretmanager.googleapis.com;
- Application Default Credentials in their HOME, as `gcloud auth application-default login`
  leaves them, holding an access token valid for years (so none is ever refreshed).

pytest-independent; everything listens on 127.0.0.1 only.
"""
import datetime
import json
import socket
import socketserver
import threading
from concurrent import futures
from pathlib import Path
from typing import Dict, List

HOST = '127.0.0.1'
SERVICE = 'google.cloud.secretmanager.v1.SecretManagerService'
API_HOST = 'secretmanager.googleapis.com'


def _certificates(folder: Path):
    """A CA (its PEM file for the workers' trust store) and a server key pair signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name('c2s test CA'))
          .issuer_name(name('c2s test CA'))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name(API_HOST)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(API_HOST)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path = folder / 'ca.pem'
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ca_path, key_pem, cert.public_bytes(serialization.Encoding.PEM)


class _Tunnel(socketserver.BaseRequestHandler):
    """HTTP CONNECT, answered 200 and piped to the fake's gRPC port whatever the target."""

    def handle(self):
        head = b''
        while b'\r\n\r\n' not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        if not head.startswith(b'CONNECT '):
            self.request.sendall(b'HTTP/1.1 405 Method Not Allowed\r\n\r\n')
            return
        upstream = socket.create_connection((HOST, self.server.target_port))
        self.request.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
        rest = head.split(b'\r\n\r\n', 1)[1]
        if rest:
            upstream.sendall(rest)
        pipe = threading.Thread(target=_pipe, args=(upstream, self.request), daemon=True)
        pipe.start()
        _pipe(self.request, upstream)
        pipe.join(5)


def _pipe(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Proxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SecretManagerFake:
    """Secret versions by full name; `accessed` lists the names read, in order."""

    def __init__(self, folder: Path, secrets: Dict[str, bytes]):
        self.folder = Path(folder)
        self.secrets = dict(secrets)
        self.accessed: List[str] = []
        self._grpc = self._proxy = None

    def start(self) -> 'SecretManagerFake':
        import grpc
        from google.cloud.secretmanager_v1.types import (AccessSecretVersionRequest,
                                                         AccessSecretVersionResponse)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca_path, key_pem, cert_pem = _certificates(self.folder)

        def access(request, context):
            self.accessed.append(request.name)
            if request.name not in self.secrets:
                context.abort(grpc.StatusCode.NOT_FOUND, f'Secret [{request.name}] not found')
            return AccessSecretVersionResponse(name=request.name, payload={
                'data': self.secrets[request.name]})

        handler = grpc.method_handlers_generic_handler(SERVICE, {
            'AccessSecretVersion': grpc.unary_unary_rpc_method_handler(
                access, request_deserializer=AccessSecretVersionRequest.deserialize,
                response_serializer=AccessSecretVersionResponse.serialize)})
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._grpc.add_generic_rpc_handlers((handler,))
        grpc_port = self._grpc.add_secure_port(
            f'{HOST}:0', grpc.ssl_server_credentials([(key_pem, cert_pem)]))
        self._grpc.start()

        self._proxy = _Proxy((HOST, 0), _Tunnel)
        self._proxy.target_port = grpc_port
        threading.Thread(target=self._proxy.serve_forever, daemon=True).start()

        return self

    def worker_home(self, home: Path) -> None:
        """Application Default Credentials in a worker's HOME, with a token that never
        needs refreshing (google-auth would refresh only at Google)."""
        adc = Path(home) / '.config' / 'gcloud' / 'application_default_credentials.json'
        adc.parent.mkdir(parents=True, exist_ok=True)
        adc.write_text(json.dumps({
            'type': 'authorized_user', 'client_id': 'c2s-worker', 'client_secret': 'unused',
            'refresh_token': 'unused', 'token': 'fake-access-token',
            'expiry': '2099-01-01T00:00:00Z'}))

    def worker_environment(self) -> Dict[str, str]:
        """The workers' network and trust settings that lead Google's client to the fake."""
        return {'grpc_proxy': f'http://{HOST}:{self._proxy.server_address[1]}',
                'no_grpc_proxy': 'localhost,127.0.0.1',
                'GRPC_DEFAULT_SSL_ROOTS_FILE_PATH': str(self.ca_path),
                'GOOGLE_CLOUD_PROJECT': 'c2s-workers'}

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(0)
        if self._proxy is not None:
            self._proxy.shutdown()
            self._proxy.server_close()

    def __enter__(self) -> 'SecretManagerFake':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
