"""The kubo content store: blobs kept by a kubo (go-ipfs) daemon, reached over its RPC API.

Every CID stays the one `LocalStore` and `cid_of` give, so a run can move between the
embedded store and IPFS without touching what the chain committed:

- `put` adds with kubo's defaults spelled out (`cid-version=1`, raw leaves, 256 KiB
  chunks, 174 links per node, sha2-256, balanced layout) and refuses a daemon that answers
  with another CID: a daemon whose `Import` config overrides a default it was not told
  must not silently change what gets committed.
- `get` reads block by block with `block/get`, letting kubo fetch from the IPFS network
  (participants' blobs usually live on their own nodes), each call under kubo's own
  `timeout` so an unknown CID becomes `BlobNotFound` after `timeout` seconds instead of a
  hang. Not `cat`: kubo would expand a crafted DAG (one child linked many times, sizes
  that lie) into terabytes and stream them here, where `dag.file_content` refuses it
  after reading its root. The bytes must give back the CID under kubo's default layout,
  the layout of every CID in this project.
- `has` and `pin` ask offline: presence means "held by this daemon" (no network fetch),
  and a pin, recursive, needs the blob complete here, as `LocalStore.pin` does.
- `push` and `pull` move whole DAGs as CAR files (`dag/import` pins each root on the way
  in; `dag/export` is read back through `car.import_car`, which verifies every block).

ipfshttpclient 0.8.0a2 is the last release. Its `connect()` warns `VersionMismatch` (an
error where warnings are errors) for any daemon from 0.9.0 on, so the client is built
directly, which skips that check, and `check_version` accepts kubo from `OLDEST_KUBO`
(go-ipfs 0.5.0 brought `dag/import` with `pin-roots` and `dag/export`; every other call
and option used here is older) up to, not including, `NEXT_MAJOR_KUBO` (a major release
may change the RPC API). Kubo before 0.35 has no `max-file-links` option and ignores it,
but always uses 174 links. The library imports cleanly on Python 3.11; its requests
adapter still hands urllib3 1.x's `strict=True` to every connection pool, which urllib3 2
answers with a FutureWarning per request, silenced here for exactly that message (its
httpx backend, chosen by PY_IPFS_HTTP_CLIENT_PREFER_HTTPX, fails with httpx 0.28: leave
that variable unset).
"""

from __future__ import annotations

import math
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from hashlib import sha256
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import ipfshttpclient
from ipfshttpclient import exceptions as rpc

from fl_chain.errors import BlobCorrupted, BlobNotFound, InvalidCid, StoreError, StoreUnreachable, UsageError
from fl_chain.storage import car, dag
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.cid import RAW, Cid
from fl_chain.storage.dag import MAX_BLOB_BYTES
from fl_chain.storage.unixfs import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_LINKS, cid_of

DEFAULT_API = "/ip4/127.0.0.1/tcp/5001"
"""kubo's default `Addresses.API`."""
DEFAULT_TIMEOUT = 30.0
OLDEST_KUBO = (0, 5, 0)
NEXT_MAJOR_KUBO = (1, 0, 0)
CONNECT_TIMEOUT = 10.0
CLIENT_GRACE = 5.0
"""Seconds the client waits beyond kubo's own deadline, so kubo's clearer error arrives first."""
UPLOAD_PIECE = 1 << 20

ADD_OPTIONS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": f"size-{DEFAULT_CHUNK_SIZE}",
    "max-file-links": str(DEFAULT_MAX_LINKS),
    "hash": "sha2-256",
    "trickle": "false",
    "inline": "false",
    "wrap-with-directory": "false",
    "only-hash": "false",
    "pin": "false",
    "progress": "false",
}
"""Every `add` option that decides the CID, at kubo's default, whatever the daemon's config says."""

_MISSING = ("not found locally", "ipld: could not find")  # kubo's words for an absent block
_DEADLINE = "context deadline exceeded"  # kubo's words when its `timeout` ran out
_NOT_PINNED = "is not pinned"
_URLLIB3_STRICT = r"The 'strict' parameter is no longer needed"
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:[-+].*)?")

OnMoved = Callable[[Cid, int], None]
"""Told each blob moved, with the size of its CAR file in bytes."""


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _cause(error: BaseException) -> str:
    """The innermost reason of a client failure, e.g. 'Connection refused'."""
    deepest = error
    seen = {id(error)}
    while (inner := deepest.__cause__ or deepest.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        deepest = inner
    if isinstance(deepest, OSError) and deepest.strerror:
        return deepest.strerror
    return type(deepest).__name__


class IpfsStore:
    """Blobs on a kubo daemon; satisfies `ContentStore` and moves whole DAGs as CAR files."""

    def __init__(self, api: str = DEFAULT_API, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Connects and checks the daemon's version at once: `StoreUnreachable` if nothing answers.

        `timeout` bounds every call, and is how long kubo may look for a block it does not hold.
        """
        if not 0 < timeout < math.inf:
            raise UsageError(f"the kubo timeout must be a finite positive number of seconds, got {timeout!r}")
        self.api = api
        self.timeout = float(timeout)
        try:
            self._client = ipfshttpclient.Client(
                api, session=True, chunk_size=UPLOAD_PIECE,
                timeout=(min(self.timeout, CONNECT_TIMEOUT), self.timeout + CLIENT_GRACE),
            )
        except rpc.AddressError:
            raise UsageError(f"not a kubo API multiaddr: {api!r} (expected e.g. {DEFAULT_API})") from None
        try:
            self.version = self.check_version()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"IpfsStore({self.api!r})"

    def __enter__(self) -> IpfsStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Closes the kept-alive connection to the daemon."""
        self._client.close()

    def check_version(self) -> str:
        """The daemon's version, if it is one whose RPC calls this store relies on."""
        with self._rpc("version"):
            reported = self._client.version().get("Version")
        match = _VERSION.fullmatch(reported) if isinstance(reported, str) else None
        if match is None:
            raise StoreError(f"the daemon at {self.api} reports version {reported!r}, which is not kubo's")
        if not OLDEST_KUBO <= tuple(map(int, match.groups())) < NEXT_MAJOR_KUBO:
            raise StoreError(
                f"kubo {reported} at {self.api} is not supported: this store needs kubo "
                f"{_dotted(OLDEST_KUBO)} or later, before {_dotted(NEXT_MAJOR_KUBO)}"
            )
        return reported

    # -- blobs -----------------------------------------------------------------------------

    def put(self, data: bytes) -> Cid:
        """Add a blob (unpinned, like `LocalStore.put`); returns its CID, checked against `cid_of`."""
        expected = cid_of(data)
        with self._rpc("add"):
            answered = self._client.add_bytes(bytes(data), opts=ADD_OPTIONS)
        stored = self._parse_cid(answered, "add")
        if stored != expected:
            raise StoreError(
                f"kubo at {self.api} stored a blob as {stored}, but kubo's defaults give {expected}: "
                "the daemon does not honour the add options it was sent (cid-version=1, raw leaves, "
                f"chunker {ADD_OPTIONS['chunker']}, {DEFAULT_MAX_LINKS} links per node); blob refused"
            )
        return stored

    def get(self, cid: Cid, max_size: int = MAX_BLOB_BYTES) -> bytes:
        """The blob's bytes, each block fetched by kubo from the network if need be, within `timeout`.

        A blob declaring more than `max_size` bytes is refused (`BlobTooLarge`) once its root is read.
        """
        data = b"".join(dag.file_content(self._fetch_block, cid, max_size))
        found = cid_of(data)
        if found != cid:
            raise BlobCorrupted(
                f"kubo at {self.api} returned {len(data)} bytes for {cid} that hash to {found} under kubo's default layout"
            )
        return data

    def declared_size(self, cid: Cid) -> int:
        """The size the blob declares, from its root block alone (fetched like `get` does)."""
        return dag.declared_size(self._fetch_block, cid)

    def has(self, cid: Cid) -> bool:
        """Whether the daemon itself holds every block under `cid` (asked offline)."""
        try:
            for _ in dag.walk(self._probe, cid):
                pass
        except BlobNotFound:
            return False
        return True

    def pin(self, cid: Cid) -> None:
        """Pin the blob recursively; offline, so it must be complete on this daemon already."""
        with self._rpc("pin/add", cid):
            answer = self._client.pin.add(str(cid), recursive=True, offline=True)
        if str(cid) not in (answer.get("Pins") or []):
            raise StoreError(f"kubo at {self.api} did not confirm the pin of {cid} (it answered {answer!r})")

    def pinned(self, cid: Cid) -> bool:
        """Whether the daemon holds a recursive pin on `cid`."""
        with self._rpc("pin/ls"):
            try:
                listing = self._client.pin.ls(str(cid), type="recursive", offline=True)
            except rpc.ErrorResponse as error:
                if _NOT_PINNED in str(error):
                    return False
                raise
        entry = (listing.get("Keys") or {}).get(str(cid)) or {}
        return entry.get("Type") == "recursive"

    # -- blocks and CAR files --------------------------------------------------------------

    def get_block(self, cid: Cid) -> bytes:
        """One block the daemon holds (asked offline), after checking it hashes to `cid`."""
        return self._block(cid, offline=True)

    def export_car(self, root: Cid, out: BinaryIO) -> None:
        """Write the daemon's CAR of the DAG under `root` (fetched from the network if need be)."""
        with self._rpc("dag/export", root):
            for piece in self._client.dag.export(str(root), stream=True, opts=self._deadline()):
                out.write(piece)

    def import_car(self, path: Path) -> list[Cid]:
        """Send a CAR file; the daemon stores its blocks and pins each root. Returns the roots pinned."""
        with self._rpc("dag/import"):
            answers = [item.as_json() for item in
                       self._client.dag.imprt(str(path), opts={"pin-roots": "true"}, stream=True)]
        roots = []
        for answer in answers:
            root = answer.get("Root")
            if not isinstance(root, dict):
                continue  # a Stats line
            cid = self._parse_cid((root.get("Cid") or {}).get("/"), "dag/import")
            if root.get("PinErrorMsg"):
                raise StoreError(f"kubo at {self.api} imported {cid} but could not pin it: {root['PinErrorMsg']}")
            roots.append(cid)
        return roots

    # -- plumbing --------------------------------------------------------------------------

    def _fetch_block(self, cid: Cid) -> bytes:
        """Block source for `get`: kubo may fetch the block from the network, within `timeout`."""
        return self._block(cid, opts=self._deadline())

    def _block(self, cid: Cid, **options: Any) -> bytes:
        """`block/get` with `options`, after checking the bytes hash to `cid`."""
        with self._rpc("block/get", cid):
            data = self._client.block.get(str(cid), **options)
        digest = sha256(data).digest()
        if digest != cid.digest:
            raise BlobCorrupted(f"kubo at {self.api} returned block {cid} with bytes that hash to {Cid(cid.codec, digest)}")
        return data

    def _probe(self, cid: Cid) -> bytes:
        """Block source for `has`: inner nodes are read (for their links), raw leaves only stat'ed."""
        if cid.codec != RAW:
            return self.get_block(cid)
        with self._rpc("block/stat", cid):
            self._client.block.stat(str(cid), offline=True)
        return b""

    def _deadline(self) -> dict[str, str]:
        """kubo's own `timeout` option (a Go duration) for calls that may fetch from the network."""
        return {"timeout": f"{round(self.timeout * 1000)}ms"}

    def _parse_cid(self, text: Any, action: str) -> Cid:
        try:
            return Cid.parse(text)
        except InvalidCid as error:
            raise StoreError(f"kubo at {self.api} answered {action} with {text!r}, not a CIDv1 ({error})") from None

    @contextmanager
    def _rpc(self, action: str, cid: Cid | None = None) -> Iterator[None]:
        """Runs RPC calls, turning the client's failures into this project's errors."""
        try:
            with warnings.catch_warnings():  # process-wide; threads racing here can only keep this one filter
                warnings.filterwarnings("ignore", message=_URLLIB3_STRICT, category=FutureWarning)
                yield
        except rpc.ErrorResponse as error:
            message = str(error)
            if cid is not None and any(sign in message for sign in _MISSING):
                raise BlobNotFound(f"{cid} is not available from kubo at {self.api} ({action}: {message})") from None
            if cid is not None and _DEADLINE in message:
                raise BlobNotFound(f"kubo at {self.api} did not find {cid} within {self.timeout:g} s ({action})") from None
            raise StoreError(f"kubo at {self.api} refused {action}: {message}") from None
        except rpc.ConnectionError as error:
            raise StoreUnreachable(f"no kubo daemon answers at {self.api} ({_cause(error)})") from None
        except rpc.TimeoutError:
            raise StoreUnreachable(
                f"kubo at {self.api} did not answer {action} within {self.timeout + CLIENT_GRACE:g} s"
            ) from None
        except (rpc.Error, KeyError, AssertionError) as error:  # the client's checks of an answer's shape
            raise StoreError(f"kubo at {self.api} gave an unusable answer to {action}: {error!r}") from None


# -- moving DAGs between a local store and kubo -------------------------------------------------


def push(local: LocalStore, ipfs: IpfsStore, roots: Sequence[Cid], on_moved: OnMoved | None = None) -> None:
    """Copy each blob under `roots` from `local` to kubo, one CAR each; kubo pins every root.

    Each root is then walked on the daemon, block by block, before the next one moves.
    """
    with tempfile.TemporaryDirectory(prefix="flchain-car-") as scratch:
        path = Path(scratch) / "blob.car"
        for root in roots:
            car.export_car(local, [root], path)
            imported = ipfs.import_car(path)
            if imported != [root]:
                raise StoreError(f"kubo at {ipfs.api} imported the CAR of {root} as roots {imported}")
            if not ipfs.has(root):
                raise StoreError(f"{root} is incomplete on kubo at {ipfs.api} after its CAR was imported")
            if on_moved is not None:
                on_moved(root, path.stat().st_size)


def pull(ipfs: IpfsStore, local: LocalStore, roots: Sequence[Cid], on_moved: OnMoved | None = None) -> None:
    """Copy each blob under `roots` from kubo into `local` through kubo's CAR export, pinned there.

    `car.import_car` verifies every block and that each root arrived complete.
    """
    with tempfile.TemporaryDirectory(prefix="flchain-car-") as scratch:
        path = Path(scratch) / "blob.car"
        for root in roots:
            with path.open("wb") as out:
                ipfs.export_car(root, out)
            imported = car.import_car(local, path)
            if imported != [root]:
                raise StoreError(f"kubo at {ipfs.api} exported {root} as a CAR with roots {imported}")
            local.pin(root)
            if on_moved is not None:
                on_moved(root, path.stat().st_size)
