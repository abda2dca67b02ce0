"""The kubo content store through the real ipfshttpclient, against the in-test kubo double.

Tests taking the `kubo_api` fixture also run against a real daemon when FLCHAIN_KUBO_API
names its RPC multiaddr (e.g. /ip4/127.0.0.1/tcp/5001; see the README); the others need
the double's knobs (a damaged block, a misconfigured chunker, another version).
"""

from __future__ import annotations

import hashlib
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import ipfshttpclient
import pytest
import requests
from kubo_double import KuboDouble
from test_unixfs import run_importer

from fl_chain.errors import BlobCorrupted, BlobNotFound, StoreError, StoreUnreachable, UsageError
from fl_chain.storage import car, dag
from fl_chain.storage.backends import open_store
from fl_chain.storage.blockstore import LocalStore
from fl_chain.storage.cid import RAW, Cid
from fl_chain.storage.ipfs import ADD_OPTIONS, IpfsStore, pull, push
from fl_chain.storage.unixfs import DEFAULT_CHUNK_SIZE, cid_of
from fl_chain.storage.varint import encode_uvarint

from conftest import flchain

KUBO_API = os.environ.get("FLCHAIN_KUBO_API")
TIMEOUT = 2.0  # also how long a real daemon searches the network for the unknown CID
SIZES = [0, 1, 1000, DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE + 1, 3 * 1024 * 1024 // 2]


def blob(label: str, size: int) -> bytes:
    return hashlib.shake_128(f"fl-chain ipfs store {label}".encode()).digest(size)


def never_stored(label: str = "unknown") -> Cid:
    return Cid(RAW, hashlib.sha256(f"fl-chain: a blob nobody stored ({label})".encode()).digest())


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def double(tmp_path: Path) -> Iterator[KuboDouble]:
    with KuboDouble(tmp_path / "kubo") as kubo:
        yield kubo


@pytest.fixture(params=["double", "kubo"])
def kubo_api(request: pytest.FixtureRequest) -> str:
    """The double's API, or a real daemon's from FLCHAIN_KUBO_API."""
    if request.param == "double":
        return request.getfixturevalue("double").api
    if not KUBO_API:
        pytest.skip("set FLCHAIN_KUBO_API to a kubo RPC multiaddr to run against a real daemon")
    return KUBO_API


@pytest.fixture
def store(kubo_api: str) -> Iterator[IpfsStore]:
    with IpfsStore(kubo_api, timeout=TIMEOUT) as connected:
        yield connected


@pytest.fixture
def double_store(double: KuboDouble) -> Iterator[IpfsStore]:
    with IpfsStore(double.api, timeout=TIMEOUT) as connected:
        yield connected


# -- blobs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_put_get_has_pin_round_trip(store: IpfsStore, size: int) -> None:
    data = blob(f"round trip {size}", size)
    cid = store.put(data)
    assert cid == cid_of(data)
    assert store.get(cid) == data
    assert store.has(cid)
    store.pin(cid)
    assert store.pinned(cid)


def test_put_does_not_pin(store: IpfsStore) -> None:
    cid = store.put(blob("left unpinned", 100))
    assert not store.pinned(cid)


@pytest.mark.node
def test_cid_equals_the_js_importers(store: IpfsStore, node_modules: Path, tmp_path: Path) -> None:
    data = blob("importer cross-check", 3 * 1024 * 1024 // 2)
    path = tmp_path / "sample.bin"
    path.write_bytes(data)
    assert run_importer(node_modules, [path], DEFAULT_CHUNK_SIZE, 174) == [str(store.put(data))]


def test_unknown_cid_is_not_found_within_the_timeout(store: IpfsStore) -> None:
    unknown = never_stored()
    with pytest.raises(BlobNotFound, match=f"did not find {unknown} within {TIMEOUT:g} s"):
        store.get(unknown)
    assert not store.has(unknown)
    with pytest.raises(BlobNotFound, match=str(unknown)):
        store.pin(unknown)
    assert not store.pinned(unknown)


def test_add_states_every_layout_option(double: KuboDouble, double_store: IpfsStore) -> None:
    double_store.put(b"x")
    (add,) = double.calls_to("add")
    assert {name: add.options[name] for name in ADD_OPTIONS} == ADD_OPTIONS
    assert (add.options["cid-version"], add.options["raw-leaves"], add.options["chunker"]) == \
        ("1", "true", f"size-{DEFAULT_CHUNK_SIZE}")


def test_offline_calls_never_fetch(double: KuboDouble, double_store: IpfsStore) -> None:
    cid = double_store.put(blob("offline", 2 * DEFAULT_CHUNK_SIZE))
    double_store.has(cid)
    double_store.pin(cid)
    offline = {call.command: call.options.get("offline") for call in double.calls}
    assert offline["block/get"] == offline["block/stat"] == offline["pin/add"] == "true"
    before = len(double.calls)
    double_store.get(cid)
    fetches = double.calls[before:]
    assert [call.command for call in fetches] == ["block/get"] * 3  # the root and two leaves, never `cat`
    assert all(call.options.get("offline") is None and call.options["timeout"] == f"{round(TIMEOUT * 1000)}ms"
               for call in fetches)


def test_incomplete_blob_is_missing_and_cannot_be_pinned(tmp_path: Path, double: KuboDouble,
                                                          double_store: IpfsStore) -> None:
    local = LocalStore(tmp_path / "local")
    root = local.put(blob("partial", 3 * DEFAULT_CHUNK_SIZE))
    double.store.put_block(root, local.get_block(root))  # the root node, without its leaves
    assert not double_store.has(root)
    with pytest.raises(BlobNotFound, match="could not find"):
        double_store.pin(root)


@pytest.mark.parametrize("size", [1, 3 * DEFAULT_CHUNK_SIZE])
def test_damaged_bytes_are_refused(double: KuboDouble, double_store: IpfsStore, size: int) -> None:
    cid = double_store.put(blob(f"damaged {size}", size))
    block = cid if cid.codec == RAW else dag.links(cid, double.store.get_block(cid))[0]
    double.corrupt(block)
    with pytest.raises(BlobCorrupted, match=f"returned block {block} with bytes that hash to"):
        double_store.get(cid)
    with pytest.raises(BlobCorrupted, match=f"block {block}"):
        double_store.get_block(block)


def test_daemon_that_changes_the_cid_is_refused(double: KuboDouble, double_store: IpfsStore) -> None:
    double.forced_chunk_size = 1 << 20  # a daemon that ignores the chunker it is sent
    small = blob("one chunk either way", 1000)
    assert double_store.put(small) == cid_of(small)
    data = blob("cut otherwise", 3 * DEFAULT_CHUNK_SIZE)
    with pytest.raises(StoreError, match=f"but kubo's defaults give {cid_of(data)}.*does not honour"):
        double_store.put(data)


# -- connecting -----------------------------------------------------------------------------


def test_unreachable_api_fails_at_once_in_one_line() -> None:
    api = f"/ip4/127.0.0.1/tcp/{closed_port()}"
    with pytest.raises(StoreUnreachable) as caught:
        IpfsStore(api, timeout=TIMEOUT)
    assert str(caught.value) == f"no kubo daemon answers at {api} (Connection refused)"
    assert caught.value.exit_code == 2


def test_malformed_multiaddr_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not a kubo API multiaddr: 'localhost:5001'"):
        IpfsStore("localhost:5001")


@pytest.mark.filterwarnings("ignore:The 'strict' parameter:FutureWarning")  # connect() below, unshielded
@pytest.mark.parametrize("version", ["0.5.0", "0.9.0", "0.32.1", "0.44.0-dev"])
def test_kubo_after_0_8_is_accepted_without_version_mismatch(tmp_path: Path, version: str) -> None:
    with KuboDouble(tmp_path, version=version) as kubo:
        if version != "0.5.0":
            with pytest.warns(ipfshttpclient.exceptions.VersionMismatch):  # what connect() would do
                ipfshttpclient.connect(kubo.api).close()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with IpfsStore(kubo.api) as connected:
                assert connected.version == version
                assert connected.get(connected.put(b"accepted")) == b"accepted"


@pytest.mark.parametrize(("version", "why"), [
    ("0.4.23", "kubo 0.4.23 at .* is not supported: this store needs kubo 0.5.0 or later, before 1.0.0"),
    ("1.0.0", "kubo 1.0.0 at .* is not supported"),
    ("tomorrow", "reports version 'tomorrow', which is not kubo's"),
])
def test_unsupported_versions_are_refused(tmp_path: Path, version: str, why: str) -> None:
    with KuboDouble(tmp_path, version=version) as kubo, pytest.raises(StoreError, match=why):
        IpfsStore(kubo.api)


# -- CAR moves ------------------------------------------------------------------------------


@pytest.fixture
def local_blobs(tmp_path: Path) -> tuple[LocalStore, dict[Cid, bytes]]:
    local = LocalStore(tmp_path / "local")
    blobs = {}
    for size in SIZES:
        data = blob(f"moved {size}", size)
        blobs[local.put(data)] = data
    return local, blobs


def test_push_then_pull_keeps_cids_and_pins(store: IpfsStore, local_blobs: tuple[LocalStore, dict[Cid, bytes]],
                                            tmp_path: Path) -> None:
    local, blobs = local_blobs
    roots = list(blobs)
    pushed: list[Cid] = []
    push(local, store, roots, lambda cid, size: pushed.append(cid))
    assert pushed == roots
    for cid, data in blobs.items():
        assert store.pinned(cid)
        assert store.get(cid) == data
    back = LocalStore(tmp_path / "back")
    pull(store, back, roots)
    assert back.pins() == sorted(roots, key=str)
    assert all(back.get(cid) == data for cid, data in blobs.items())


def test_pull_refuses_damaged_blocks(double: KuboDouble, double_store: IpfsStore, tmp_path: Path) -> None:
    cid = double_store.put(blob("pulled damaged", 2 * DEFAULT_CHUNK_SIZE))
    double.corrupt(dag.links(cid, double.store.get_block(cid))[1])
    back = LocalStore(tmp_path / "back")
    with pytest.raises(BlobCorrupted, match="does not hash to its CID"):
        pull(double_store, back, [cid])
    assert back.pins() == []


def test_pull_of_an_unknown_cid_is_not_found(store: IpfsStore, tmp_path: Path) -> None:
    with pytest.raises(BlobNotFound, match=str(never_stored("pull"))):
        pull(store, LocalStore(tmp_path / "back"), [never_stored("pull")])


def test_a_root_kubo_cannot_pin_is_an_error(double_store: IpfsStore, tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "local")
    root = local.put(blob("unpinnable", 2 * DEFAULT_CHUNK_SIZE))
    partial = tmp_path / "partial.car"
    header = car.encode_header([root])
    section = root.to_bytes() + local.get_block(root)  # the root node only: its leaves are absent
    partial.write_bytes(encode_uvarint(len(header)) + header + encode_uvarint(len(section)) + section)
    with pytest.raises(StoreError, match=f"imported {root} but could not pin it: .*could not find"):
        double_store.import_car(partial)


# -- the config and the command line -------------------------------------------------------


def test_open_store_chooses_the_backend(tmp_path: Path, double: KuboDouble) -> None:
    local = open_store({"backend": "local", "dir": None}, tmp_path)
    assert isinstance(local, LocalStore) and local.root == tmp_path / "store"
    elsewhere = open_store({"backend": "local", "dir": str(tmp_path / "blocks")}, None)
    assert isinstance(elsewhere, LocalStore) and elsewhere.root == tmp_path / "blocks"
    kubo = open_store({"backend": "ipfs", "api": double.api, "timeout": 5}, tmp_path)
    assert isinstance(kubo, IpfsStore) and kubo.timeout == 5.0
    kubo.close()


@pytest.mark.parametrize(("spec", "why"), [
    ({"backend": "s3"}, r"unknown storage backend 's3'; choose one of \('local', 'ipfs'\)"),
    ({"backend": "local"}, "needs storage.dir or a run directory"),
    ({"backend": "ipfs", "timeout": "soon"}, "storage.timeout must be a number of seconds"),
    ({"backend": "ipfs", "timeout": 0}, "must be a finite positive number of seconds"),
])
def test_open_store_refuses_bad_specs(spec: dict[str, object], why: str) -> None:
    with pytest.raises(UsageError, match=why):
        open_store(spec, None)


def test_open_store_names_an_unreachable_daemon() -> None:
    api = f"/ip4/127.0.0.1/tcp/{closed_port()}"
    with pytest.raises(StoreUnreachable, match=f"no kubo daemon answers at {api}"):
        open_store({"backend": "ipfs", "api": api}, None)


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, list[Cid], Cid]:
    """A run directory whose store holds three pinned blobs and an unpinned one."""
    local = LocalStore(tmp_path / "run" / "store")
    pinned = [local.put(blob(f"run blob {size}", size)) for size in (10, 1000, 2 * DEFAULT_CHUNK_SIZE)]
    for cid in pinned:
        local.pin(cid)
    return tmp_path / "run", pinned, local.put(blob("run scratch", 10))


def test_store_push_and_pull_commands(double: KuboDouble, run_dir: tuple[Path, list[Cid], Cid],
                                      tmp_path: Path) -> None:
    directory, pinned, unpinned = run_dir
    pushed = flchain("store", "push", str(directory), "--api", double.api)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.startswith("pushed 3 blobs (") and "each pinned, to kubo 0.32.1" in pushed.stdout
    assert [line.split()[0] for line in pushed.stderr.splitlines()] == ["[1/3]", "[2/3]", "[3/3]"]
    assert double.store.pins() == sorted(pinned, key=str) and not double.store.has(unpinned)
    (tmp_path / "copy").mkdir()
    pulled = flchain("store", "pull", str(tmp_path / "copy"), "--api", double.api, "--cid", *map(str, pinned))
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.startswith("pulled 3 blobs (")
    assert LocalStore(tmp_path / "copy" / "store").pins() == sorted(pinned, key=str)


@pytest.mark.parametrize("case", ["missing run dir", "no store", "unreachable", "bad cid"])
def test_store_command_errors_are_one_line(tmp_path: Path, case: str) -> None:
    (tmp_path / "empty").mkdir()
    api = f"/ip4/127.0.0.1/tcp/{closed_port()}"
    args, message = {
        "missing run dir": (["push", str(tmp_path / "nowhere")], f"run directory {tmp_path / 'nowhere'} does not exist"),
        "no store": (["push", str(tmp_path / "empty")], "has no content store (store/): nothing to push"),
        "unreachable": (["pull", str(tmp_path / "empty"), "--cid", str(never_stored())],
                        f"no kubo daemon answers at {api} (Connection refused)"),
        "bad cid": (["pull", str(tmp_path / "empty"), "--cid", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"],
                    "CIDv0 is not supported"),
    }[case]
    completed = flchain("store", *args, "--api", api)
    assert completed.returncode == 2
    assert completed.stderr.startswith("flchain: error: ") and message in completed.stderr
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr


# -- the double speaks kubo's HTTP (checked against a real daemon too) ---------------------


def rpc_url(api: str, command: str) -> str:
    _, _, host, _, port = api.split("/")[:5]
    return f"http://{host}:{port}/api/v0/{command}"


def test_rpc_refuses_get(kubo_api: str) -> None:
    answer = requests.get(rpc_url(kubo_api, "version"), timeout=TIMEOUT)
    assert answer.status_code == 405 and "POST" in answer.headers["Allow"]


def test_rpc_error_shape(kubo_api: str) -> None:
    answer = requests.post(rpc_url(kubo_api, "block/stat"), params={"arg": str(never_stored()), "offline": "true"},
                           timeout=TIMEOUT)
    assert answer.status_code == 500 and answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Trailer"] == "X-Stream-Error"
    body = answer.json()
    assert (body["Code"], body["Type"]) == (0, "error") and "not found locally" in body["Message"]


def test_rpc_output_framing(kubo_api: str) -> None:
    added = requests.post(rpc_url(kubo_api, "add"), params={"cid-version": "1", "pin": "false"},
                          files={"file": ("framing.txt", b"framing\n")}, timeout=TIMEOUT)
    assert added.status_code == 200 and added.headers["X-Chunked-Output"] == "1"
    event = added.json()
    assert (event["Name"], event["Hash"], event["Size"]) == ("framing.txt", str(cid_of(b"framing\n")), "8")
    cat = requests.post(rpc_url(kubo_api, "cat"), params={"arg": event["Hash"]}, timeout=TIMEOUT)
    assert cat.headers["X-Stream-Output"] == "1" and cat.headers["X-Content-Length"] == "8"
    assert cat.content == b"framing\n"
