"""A minimal image registry (Docker Registry HTTP API v2) for tests.

No registry image can be pulled here, so this speaks just enough of the
protocol for a real Docker Engine to push to it over plain HTTP on
127.0.0.1 (which Docker treats as an insecure registry by default) and to
pull back what it stored: blob uploads (POST, chunked PATCH, PUT with the
digest, cross-repository mount refused so the engine uploads), blob HEAD /
GET, and manifest PUT / GET / HEAD. Blobs are verified against their
sha256 digests, so a corrupted push fails. Everything lives in memory.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Registry:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}  # (name, ref) -> (media type, body)
        self.uploads: dict[str, bytearray] = {}
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> "Registry":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()

    def _handler(self):
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return bytes(data)
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, code: int, body: bytes = b"", **headers: str) -> None:
                self.send_response(code)
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                for key, value in headers.items():
                    self.send_header(key.replace("_", "-"), value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _route(self):
                registry.requests.append((self.command, self.path))
                path, _, query = self.path.partition("?")
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                if path in ("/v2", "/v2/"):
                    return self._reply(200, b"{}", Content_Type="application/json")
                match = re.fullmatch(r"/v2/(.+)/blobs/uploads/([^/]*)", path)
                if match:
                    return self._upload(match.group(1), match.group(2), params)
                match = re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", path)
                if match:
                    blob = registry.blobs.get(match.group(2))
                    if blob is None:
                        return self._reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
                    return self._reply(200, blob, Docker_Content_Digest=match.group(2),
                                       Content_Type="application/octet-stream")
                match = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path)
                if match:
                    return self._manifest(match.group(1), match.group(2))
                return self._reply(404)

            def _upload(self, name: str, upload: str, params: dict):
                body = self._body()
                if self.command == "POST":
                    upload = uuid.uuid4().hex
                    registry.uploads[upload] = bytearray(body)
                    return self._reply(202, Location=f"/v2/{name}/blobs/uploads/{upload}", Range="0-0",
                                       Docker_Upload_UUID=upload)
                if upload not in registry.uploads:
                    return self._reply(404, b'{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN"}]}')
                registry.uploads[upload] += body
                size = len(registry.uploads[upload])
                if self.command == "PATCH":
                    return self._reply(202, Location=f"/v2/{name}/blobs/uploads/{upload}",
                                       Range=f"0-{max(size - 1, 0)}", Docker_Upload_UUID=upload)
                digest = params.get("digest", "").replace("%3A", ":")
                data = bytes(registry.uploads.pop(upload))
                if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                    return self._reply(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
                registry.blobs[digest] = data
                return self._reply(201, Location=f"/v2/{name}/blobs/{digest}", Docker_Content_Digest=digest)

            def _manifest(self, name: str, ref: str):
                if self.command == "PUT":
                    body = self._body()
                    digest = "sha256:" + hashlib.sha256(body).hexdigest()
                    kind = self.headers.get("Content-Type", "")
                    registry.manifests[(name, ref)] = registry.manifests[(name, digest)] = (kind, body)
                    return self._reply(201, Location=f"/v2/{name}/manifests/{digest}", Docker_Content_Digest=digest)
                stored = registry.manifests.get((name, ref))
                if stored is None:
                    return self._reply(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
                kind, body = stored
                return self._reply(200, body, Content_Type=kind,
                                   Docker_Content_Digest="sha256:" + hashlib.sha256(body).hexdigest())

            do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = _route

        return Handler
