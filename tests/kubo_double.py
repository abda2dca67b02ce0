"""An in-test stand-in for kubo's RPC API: only the calls `IpfsStore` makes (and `cat`), answered the
way kubo answers them, over real blocks.

No kubo can run on the test machines, so the tests of `fl_chain.storage.ipfs` reach this
server through the real ipfshttpclient. Its answers follow the Kubo RPC API reference
(https://docs.ipfs.tech/reference/kubo/rpc/) and the go-ipfs-cmds HTTP layer that kubo
serves it with:

- POST only: another method gets 405 "405 - Method Not Allowed" with `Allow: OPTIONS,
  POST`; an unknown command 404 "404 page not found"; a missing argument or a malformed
  option 400 with a plain-text reason (the request is refused before the command runs).
- A command that fails before any output: 500, `application/json`, body
  `{"Message": ..., "Code": 0, "Type": "error"}`.
- Output: one value (version, block/stat, pin/add, pin/ls) is one JSON object; a series
  (add, dag/import) is one JSON object per line under `X-Chunked-Output: 1`; bytes (cat,
  block/get, dag/export) come under `X-Stream-Output: 1`. Every answer declares
  `Trailer: X-Stream-Error`, where an error after the output started is reported.
- Global options: `offline=true` serves local blocks only (an absent one fails with
  "block was not found locally (offline): ipld: could not find <cid>"); `timeout` (a Go
  duration) bounds a command, so content held nowhere fails with "context deadline
  exceeded" after it, and without it the request waits, as kubo searching the network would.

Blocks live in a real `LocalStore`; `add` cuts files with the package's own UnixFS code,
honouring `chunker` and `max-file-links`, and blocks are read back without re-hashing, as
kubo does by default (Datastore.HashOnRead off). Options that would need a layout this code
cannot build (CIDv0, trickle, other hashes) are refused with an error that says so. Knobs
play a faulty daemon: `corrupt(cid)` damages a stored block, `forced_chunk_size` makes `add`
ignore the chunker it was sent, `version` is what `version` reports.
"""

from __future__ import annotations

import email.message
import email.utils
import io
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fl_chain.errors import BlobNotFound, InvalidCar, InvalidCid
from fl_chain.storage import car, dag
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.cid import RAW, Cid
from fl_chain.storage.unixfs import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_LINKS

API_PREFIX = "/api/v0/"
EXPOSED_HEADERS = "X-Stream-Output, X-Chunked-Output, X-Content-Length"
STREAM_ERROR = "X-Stream-Error"
MAX_BLOCK = 1 << 20  # kubo refuses bigger blocks unless allow-big-block
PIECE = 256 << 10
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadRequest(Exception):
    """Refused while parsing the request (go-ipfs-cmds answers 400, plain text)."""


class CommandError(Exception):
    """The command failed (500, kubo's JSON error body)."""


def _offline_miss(cid: Cid) -> CommandError:
    return CommandError(f"block was not found locally (offline): ipld: could not find {cid}")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration such as '1.5s' or '2m30s' (what kubo's `timeout` takes)."""
    if text == "0":
        return 0.0
    if not text or _DURATION.sub("", text):
        raise BadRequest(f'time: invalid duration "{text}"')
    return sum(float(number) * _SECONDS[unit] for number, unit in _DURATION.findall(text))


@dataclass
class Call:
    """One RPC request: command path, `arg` values, other query options, and its body."""

    command: str
    args: list[str]
    options: dict[str, str]
    content_type: str = ""
    body: bytes = field(default=b"", repr=False)

    def flag(self, name: str, default: bool) -> bool:
        """A bool option, read like go-ipfs-cmds does (lower-cased ParseBool; empty is true)."""
        value = self.options.get(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("", "1", "t", "true"):
            return True
        if lowered in ("0", "f", "false"):
            return False
        raise BadRequest(f'could not convert value "{value}" to type "bool" (for option "-{name}")')

    def integer(self, name: str, default: int) -> int:
        value = self.options.get(name)
        if value is None:
            return default
        try:
            return int(value, 0)
        except ValueError:
            raise BadRequest(f'could not convert value "{value}" to type "int" (for option "-{name}")') from None

    def deadline(self) -> float | None:
        """The global `timeout` option in seconds, if given."""
        value = self.options.get("timeout")
        return None if value is None else parse_duration(value)

    def cids(self, argument: str) -> list[Cid]:
        """The `arg` values as CIDs (bare or /ipfs/ paths); at least one is required."""
        if not self.args:
            raise BadRequest(f'argument "{argument}" is required')
        cids = []
        for text in self.args:
            try:
                cids.append(Cid.parse(text.removeprefix("/ipfs/")))
            except InvalidCid as error:
                raise CommandError(f'invalid path "{text}": {error}') from None
        return cids

    def files(self, argument: str) -> list[tuple[str, bytes]]:
        """The multipart/form-data file parts, as (unescaped filename, content)."""
        header = email.message.Message()
        header["Content-Type"] = self.content_type
        boundary = header.get_param("boundary")
        if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
            raise BadRequest(f"file argument '{argument}' is required")
        delimiter = b"\r\n--" + boundary.encode()
        parts = []
        for section in (b"\r\n" + self.body).split(delimiter)[1:]:
            if section.startswith(b"--"):
                break
            head, _, content = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
            part = email.message.Message()
            for line in head.decode("utf-8").split("\r\n"):
                name, _, value = line.partition(":")
                part[name.strip()] = value.strip()
            filename = part.get_param("filename", header="content-disposition")
            parts.append((unquote(filename) if isinstance(filename, str) else "", content))
        if not parts:
            raise BadRequest(f"file argument '{argument}' is required")
        return parts


class Reply:
    """Writes one answer the way go-ipfs-cmds frames it: chunked, with the error trailer."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.handler = handler

    def value(self, document: dict[str, Any]) -> None:
        self._send(200, {"Content-Type": "application/json"}, [_json_line(document)])

    def values(self, documents: Iterable[dict[str, Any]]) -> None:
        self._send(200, {"Content-Type": "application/json", "X-Chunked-Output": "1"}, map(_json_line, documents))

    def stream(self, pieces: Iterable[bytes], content_type: str, length: int | None = None) -> None:
        headers = {"Content-Type": content_type, "X-Stream-Output": "1"}
        if length is not None:
            headers["X-Content-Length"] = str(length)
        self._send(200, headers, pieces)

    def error(self, message: str) -> None:
        self._send(500, {"Content-Type": "application/json"},
                   [_json_line({"Message": message, "Code": 0, "Type": "error"})])

    def plain(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        """Go's `http.Error`: a plain-text body with its length, no trailer."""
        body = (text + "\n").encode()
        self._head(status, {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff",
                            "Content-Length": str(len(body)), **(extra or {})})
        if self.handler.command != "HEAD":
            self.handler.wfile.write(body)

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.handler.send_response_only(status)
        self.handler.send_header("Date", email.utils.formatdate(usegmt=True))
        for name, value in headers.items():
            self.handler.send_header(name, value)
        self.handler.end_headers()

    def _send(self, status: int, headers: dict[str, str], pieces: Iterable[bytes]) -> None:
        self._head(status, {"Access-Control-Allow-Headers": EXPOSED_HEADERS,
                            "Access-Control-Expose-Headers": EXPOSED_HEADERS,
                            "Trailer": STREAM_ERROR, **headers, "Transfer-Encoding": "chunked"})
        out = self.handler.wfile
        trailer = b""
        try:
            for piece in pieces:
                if piece:
                    out.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        except Exception as error:  # after the output began: kubo reports it in the trailer
            trailer = f"{STREAM_ERROR}: {error}\r\n".encode()
        out.write(b"0\r\n" + trailer + b"\r\n")


def _json_line(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _pieces(data: bytes) -> Iterator[bytes]:
    for offset in range(0, len(data), PIECE):
        yield data[offset : offset + PIECE]


class KuboDouble:
    """A kubo RPC API on 127.0.0.1 (OS-chosen port), served from a thread; a context manager."""

    def __init__(self, root: Path, *, version: str = "0.32.1") -> None:
        self.store = LocalStore(root)
        self.version = version
        self.forced_chunk_size: int | None = None
        self.calls: list[Call] = []
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.kubo = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kubo-double", daemon=True)
        self._commands: dict[str, Callable[[Call, Reply], None]] = {
            "version": self.version_command,
            "add": self.add,
            "cat": self.cat,
            "block/get": self.block_get,
            "block/stat": self.block_stat,
            "pin/add": self.pin_add,
            "pin/ls": self.pin_ls,
            "dag/export": self.dag_export,
            "dag/import": self.dag_import,
        }

    @property
    def api(self) -> str:
        """The multiaddr clients use, like kubo's `Addresses.API`."""
        return f"/ip4/127.0.0.1/tcp/{self._server.server_address[1]}"

    def __enter__(self) -> KuboDouble:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stopping.set()  # releases requests waiting for content that will never come
        self._server.shutdown()
        self._server.server_close()

    def calls_to(self, command: str) -> list[Call]:
        return [call for call in self.calls if call.command == command]

    def corrupt(self, cid: Cid) -> None:
        """Flip the first byte of a stored block (or give an empty one a byte), as a bad disk would."""
        path = self.store.block_path(cid)
        data = path.read_bytes()
        path.write_bytes(bytes([data[0] ^ 1]) + data[1:] if data else b"\x00")

    # -- blocks, as a CAR source (`car.BlockStore`) ----------------------------------------

    def get_block(self, cid: Cid) -> bytes:
        """A stored block as kubo serves it: read back without re-hashing."""
        try:
            return self.store.block_path(cid).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"{cid} is not in the store") from None

    def put_block(self, cid: Cid, data: bytes | bytearray | memoryview) -> None:
        self.store.put_block(cid, data)

    def find_missing(self, cid: Cid) -> Cid | None:
        return self.store.find_missing(cid)

    # -- dispatch --------------------------------------------------------------------------

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        body = _read_body(handler)
        reply = Reply(handler)
        url = urlsplit(handler.path)
        command = url.path.removeprefix(API_PREFIX) if url.path.startswith(API_PREFIX) else None
        run = self._commands.get(command) if command is not None else None
        if handler.command != "POST":
            reply.plain(405, "405 - Method Not Allowed", {"Allow": "OPTIONS, POST"})
            return
        if command is None or run is None:
            reply.plain(404, "404 page not found")
            return
        query = parse_qs(url.query, keep_blank_values=True)
        call = Call(command, query.pop("arg", []), {name: values[0] for name, values in query.items()},
                    handler.headers.get("Content-Type", ""), body)
        self.calls.append(call)
        try:
            call.deadline()  # a malformed timeout is refused before the command runs
            run(call, reply)
        except BadRequest as error:
            reply.plain(400, str(error))
        except Exception as error:  # the command failed before its output began
            reply.error(str(error))

    def _unavailable(self, cid: Cid, call: Call) -> CommandError:
        """What kubo says of a block it lacks: at once offline, else when its search times out."""
        if call.flag("offline", False):
            return _offline_miss(cid)
        self._stopping.wait(call.deadline())
        return CommandError("context deadline exceeded")

    def _require(self, root: Cid, call: Call) -> None:
        missing = self.store.find_missing(root)
        if missing is not None:
            raise self._unavailable(missing, call)

    def _unsupported(self, what: str) -> CommandError:
        return CommandError(f"kubo double: {what} is not implemented (only what fl_chain's IpfsStore sends)")

    # -- commands --------------------------------------------------------------------------

    def version_command(self, call: Call, reply: Reply) -> None:
        """`version`: {"Version", "Commit", "Repo", "System", "Golang"}, one JSON value."""
        reply.value({"Version": self.version, "Commit": "", "Repo": "16", "System": "amd64/linux",
                     "Golang": "go1.23.4"})

    def add(self, call: Call, reply: Reply) -> None:
        """`add`: each multipart file becomes a UnixFS file DAG; one event per file,
        {"Name", "Hash", "Size"} (Size: the cumulative DAG size, a string), pinned unless pin=false.

        cid-version defaults to 0 and raw-leaves follows it; a CIDv1 add with raw leaves,
        sha2-256 and the balanced layout is what this double builds.
        """
        files = call.files("path")
        if call.integer("cid-version", 0) != 1:
            raise self._unsupported("a CIDv0 add (cid-version other than 1)")
        if not call.flag("raw-leaves", True):
            raise self._unsupported("raw-leaves=false")
        for option in ("trickle", "inline", "wrap-with-directory", "only-hash", "nocopy", "progress"):
            if call.flag(option, False):
                raise self._unsupported(f"{option}=true")
        if call.options.get("hash", "sha2-256") != "sha2-256":
            raise self._unsupported(f"hash={call.options['hash']}")
        chunker = call.options.get("chunker", f"size-{DEFAULT_CHUNK_SIZE}")
        match = re.fullmatch(r"size-(\d+)", chunker)
        if match is None:
            raise self._unsupported(f"chunker={chunker}")
        chunk_size = self.forced_chunk_size or int(match.group(1))
        adder = LocalStore(self.store.root, chunk_size=chunk_size,
                           max_links=call.integer("max-file-links", DEFAULT_MAX_LINKS))
        events = []
        for name, content in files:
            root = adder.put(content)
            if call.flag("pin", True):
                self.store.pin(root)
            events.append({"Name": name, "Hash": str(root), "Size": str(self._cumulative_size(root))})
        reply.values(events)

    def cat(self, call: Call, reply: Reply) -> None:
        """`cat`: the file's bytes as a stream, its length in X-Content-Length.

        `IpfsStore` reads block by block instead (kubo's `cat` would expand a DAG bomb); this
        stays for the framing test, which also runs against a real daemon.
        """
        (root,) = call.cids("ipfs-path")
        self._require(root, call)
        data = b"".join(dag.file_content(self.get_block, root))
        reply.stream(_pieces(data), "text/plain", length=len(data))

    def block_get(self, call: Call, reply: Reply) -> None:
        """`block/get`: one block's bytes as a stream (application/vnd.ipld.raw)."""
        (cid,) = call.cids("cid")
        self._require_block(cid, call)
        reply.stream([self.get_block(cid)], "application/vnd.ipld.raw")

    def block_stat(self, call: Call, reply: Reply) -> None:
        """`block/stat`: {"Key", "Size"} of one block."""
        (cid,) = call.cids("cid")
        self._require_block(cid, call)
        reply.value({"Key": str(cid), "Size": len(self.get_block(cid))})

    def pin_add(self, call: Call, reply: Reply) -> None:
        """`pin/add`: pins each argument recursively once its DAG is complete; {"Pins": [...]}."""
        if not call.flag("recursive", True):
            raise self._unsupported("a direct pin (recursive=false)")
        roots = call.cids("ipfs-path")
        for root in roots:
            self._require(root, call)
            self.store.pin(root)
        reply.value({"Pins": [str(root) for root in roots]})

    def pin_ls(self, call: Call, reply: Reply) -> None:
        """`pin/ls`: {"Keys": {cid: {"Type", "Name"}}}; with arguments, one that is not pinned
        fails the whole call with "path '<arg>' is not pinned"."""
        kind = call.options.get("type", "all")
        if kind not in ("direct", "indirect", "recursive", "all"):
            raise CommandError(f"invalid type '{kind}', must be one of {{direct, indirect, recursive, all}}")
        if kind != "recursive" or call.flag("stream", False):
            raise self._unsupported(f"pin/ls type={kind} or stream=true")
        pinned = set(self.store.pins())
        if call.args:
            listed = call.cids("ipfs-path")
            for text, cid in zip(call.args, listed):
                if cid not in pinned:
                    raise CommandError(f"path '{text}' is not pinned")
        else:
            listed = sorted(pinned, key=str)
        keys = {str(cid): {"Type": "recursive", "Name": ""} for cid in listed}
        reply.value({"Keys": keys} if keys else {})

    def dag_export(self, call: Call, reply: Reply) -> None:
        """`dag/export`: the DAG as a CARv1 stream (application/vnd.ipld.car), blocks depth-first;
        a block lacking past the root ends the stream with the error in the trailer."""
        (root,) = call.cids("root")
        self._require_block(root, call)
        missing = self.store.find_missing(root)
        reply.stream(self._car_pieces(root, missing, call), "application/vnd.ipld.car")

    def dag_import(self, call: Call, reply: Reply) -> None:
        """`dag/import`: stores every block of the CAR files, then (pin-roots, default true)
        pins each root recursively: one {"Root": {"Cid": {"/": cid}, "PinErrorMsg": ...}}
        per root, the message empty on success; {"Stats": ...} last if stats=true."""
        roots: dict[Cid, None] = {}
        count = size = 0
        for _, content in call.files("path"):
            try:
                header_roots, sections = car.read_car(io.BytesIO(content))
                for cid, data in sections:
                    self._import_block(cid, bytes(data), call)
                    count += 1
                    size += len(data)
            except InvalidCar as error:
                raise CommandError(f"import failed: {error}") from None
            roots.update(dict.fromkeys(header_roots))
        events: list[dict[str, Any]] = []
        if call.flag("pin-roots", True):
            for root in roots:
                missing = self.store.find_missing(root)
                if missing is None:
                    self.store.pin(root)
                message = "" if missing is None else str(_offline_miss(missing))
                events.append({"Root": {"Cid": {"/": str(root)}, "PinErrorMsg": message}})
        if call.flag("stats", False):
            events.append({"Stats": {"BlockCount": count, "BlockBytesCount": size}})
        reply.values(events)

    # -- helpers ---------------------------------------------------------------------------

    def _require_block(self, cid: Cid, call: Call) -> None:
        if not self.store.has_block(cid):
            raise self._unavailable(cid, call)

    def _import_block(self, cid: Cid, data: bytes, call: Call) -> None:
        if len(data) > MAX_BLOCK and not call.flag("allow-big-block", False):
            raise CommandError(f'import failed at block "{cid}": produced block is over 1MiB: big blocks '
                               "can't be exchanged with other peers. consider using UnixFS for automatic "
                               "chunking of bigger files, or pass --allow-big-block to override")
        actual = Cid(cid.codec, sha256(data).digest())
        if actual != cid:
            raise CommandError(f'import failed at block "{cid}": mismatch in content integrity, '
                               f"expected: {cid}, got: {actual}")
        self.store.put_block(cid, data)

    def _car_pieces(self, root: Cid, missing: Cid | None, call: Call) -> Iterator[bytes]:
        try:
            yield from car.iter_car(self, [root])
        except BlobNotFound:
            assert missing is not None
            raise self._unavailable(missing, call) from None

    def _cumulative_size(self, root: Cid) -> int:
        """kubo's `Size` of an added file: a raw leaf's length, or a node's length plus its links' Tsizes."""
        block = self.store.get_block(root)
        if root.codec == RAW:
            return len(block)
        return len(block) + sum(link.tsize for link in dag.decode(root, block).links)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        self.server.kubo.serve(self)  # type: ignore[attr-defined]

    do_POST = do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests assert on `calls`


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, plain or chunked (ipfshttpclient streams uploads chunked)."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # request trailers
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
