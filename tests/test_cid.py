"""CIDs: their spelling, their binary form, the UnixFS DAG behind them, and `flchain cid`."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import pytest

from fl_chain.cli import main
from fl_chain.errors import InvalidCid
from fl_chain.storage import DAG_PB, RAW, Cid, build_file, cid_of, cid_of_file, cid_of_stream
from fl_chain.storage.dagpb import UNIXFS_FILE, decode_node, decode_unixfs
from fl_chain.storage.unixfs import split

# kubo's `ipfs add --cid-version=1` output for these bytes (also what the JS importer gives;
# the full cross-checked set is in tests/vectors/unixfs_cids.json).
EMPTY_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
HELLO_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
HELLO = b"hello world\n"


# -- spelling -------------------------------------------------------------------------------


def test_raw_cid_is_sha256_of_the_bytes_in_kubo_spelling() -> None:
    cid = cid_of(HELLO)
    assert cid.codec == RAW
    assert cid.digest == hashlib.sha256(HELLO).digest()
    assert str(cid) == HELLO_CID


def test_binary_form_is_version_codec_multihash() -> None:
    cid = Cid(DAG_PB, bytes(range(32)))
    assert cid.to_bytes() == b"\x01\x70\x12\x20" + bytes(range(32))
    assert bytes(cid) == cid.to_bytes()
    assert Cid.from_bytes(cid.to_bytes()) == cid
    assert str(cid).startswith("bafybei")
    assert str(Cid(RAW, bytes(32))).startswith("bafkrei")


@pytest.mark.parametrize("codec", [RAW, DAG_PB])
def test_parse_inverts_str(codec: int) -> None:
    cid = Cid(codec, hashlib.sha256(bytes([codec])).digest())
    assert Cid.parse(str(cid)) == cid
    assert repr(cid) == f"Cid('{cid}')"


def test_cid_is_hashable_and_ordered() -> None:
    a, b = Cid(RAW, bytes(32)), Cid(RAW, b"\x01" * 32)
    assert {a, b, Cid(RAW, bytes(32))} == {a, b}
    assert sorted([b, a]) == [a, b]


def _b32(raw: bytes) -> str:
    """Multibase base32 of arbitrary bytes, to build CID strings that must be refused."""
    return "b" + base64.b32encode(raw).decode().rstrip("=").lower()


ZERO = bytes(32)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR", "CIDv0"),
        ("", "not a base32"),
        ("b", "not a base32"),
        ("zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA", "not a base32"),  # base58btc
        (HELLO_CID.upper(), "not a base32"),
        ("B" + HELLO_CID[1:], "not a base32"),
        (HELLO_CID + " ", "not a base32"),
        (HELLO_CID[:-1], "not valid base32"),  # impossible length
        (HELLO_CID[:-2], "truncated"),
        (HELLO_CID + "aa", "trailing bytes"),
        (HELLO_CID[:-1] + "5", "not the canonical"),  # same bytes, non-zero padding bits
        (_b32(b"\x00\x55\x12\x20" + ZERO), "only CIDv1"),
        (_b32(b"\x02\x55\x12\x20" + ZERO), "only CIDv1"),
        (_b32(b"\x01\x55\x00\x0chello world\n"), "sha2-256"),  # identity multihash
        (_b32(b"\x01\x55\x13\x40" + bytes(64)), "sha2-256"),  # sha2-512
        (_b32(b"\x01\x55\x12\x10" + bytes(16)), "length must be 32"),
        (_b32(b"\x01\x71\x12\x20" + ZERO), "codec 0x71"),  # dag-cbor
        (_b32(b"\x01\xd5\x00\x12\x20" + ZERO), "minimally"),  # 0x55 as a 2-byte varint
    ],
)
def test_parse_rejects_anything_but_base32_cidv1_sha256(text: str, why: str) -> None:
    with pytest.raises(InvalidCid) as caught:
        Cid.parse(text)
    message = str(caught.value)
    assert why in message
    assert repr(text)[:40] in message  # the error names the bad input


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(InvalidCid):
        Cid.parse(HELLO_CID.encode())  # type: ignore[arg-type]


def test_constructor_refuses_what_it_cannot_spell() -> None:
    with pytest.raises(InvalidCid):
        Cid(RAW, b"\x00" * 31)
    with pytest.raises(InvalidCid):
        Cid(0x71, b"\x00" * 32)


# -- the UnixFS DAG -------------------------------------------------------------------------


def test_empty_content_is_the_raw_cid_of_no_bytes() -> None:
    # A single chunk (even an empty one) is its own raw leaf, never a dag-pb wrapper.
    assert str(cid_of(b"")) == EMPTY_CID
    assert str(cid_of_stream(io.BytesIO(b""))) == EMPTY_CID


def test_one_chunk_is_a_raw_leaf_and_two_chunks_are_a_dag_pb_file() -> None:
    chunk = 262_144
    assert cid_of(bytes(chunk)).codec == RAW
    assert cid_of(bytes(chunk)) == Cid(RAW, hashlib.sha256(bytes(chunk)).digest())
    assert cid_of(bytes(chunk + 1)).codec == DAG_PB


def test_two_chunk_file_node_is_byte_exact() -> None:
    """The root block, encoded by hand from the dag-pb and UnixFS schemas."""
    data = b"a" * 10 + b"b" * 3
    blocks = list(build_file(split(data, 10), max_links=174))
    assert [block.cid.codec for block in blocks] == [RAW, RAW, DAG_PB]
    leaf_a, leaf_b = (Cid(RAW, hashlib.sha256(part).digest()) for part in (b"a" * 10, b"bbb"))

    def link(cid: Cid, tsize: int) -> bytes:
        body = b"\x0a\x24" + cid.to_bytes() + b"\x12\x00" + b"\x18" + bytes([tsize])
        return b"\x12" + bytes([len(body)]) + body

    unixfs = b"\x08\x02" + b"\x18\x0d" + b"\x20\x0a" + b"\x20\x03"  # File, 13 bytes, [10, 3]
    expected = link(leaf_a, 10) + link(leaf_b, 3) + b"\x0a" + bytes([len(unixfs)]) + unixfs
    assert bytes(blocks[-1].data) == expected
    assert blocks[-1].cid == Cid(DAG_PB, hashlib.sha256(expected).digest())


def _tree(data: bytes, chunk_size: int, max_links: int) -> tuple[Cid, dict[Cid, bytes]]:
    built = build_file(split(data, chunk_size), max_links=max_links)
    blocks = {block.cid: bytes(block.data) for block in built}
    return cid_of(data, chunk_size=chunk_size, max_links=max_links), blocks


def _leaf_depths(root: Cid, blocks: dict[Cid, bytes], max_links: int) -> tuple[set[int], bytes]:
    """Depth of every leaf, and the content read back, checking each node's sizes."""
    depths: set[int] = set()

    def visit(cid: Cid, depth: int) -> tuple[bytes, int]:  # (content, Tsize)
        block = blocks[cid]
        if cid.codec == RAW:
            depths.add(depth)
            return block, len(block)
        node = decode_node(block)
        unixfs = decode_unixfs(node.data or b"")
        assert unixfs.type == UNIXFS_FILE and not unixfs.data
        assert 1 <= len(node.links) <= max_links
        parts, tsize = [], len(block)
        for link, blocksize in zip(node.links, unixfs.blocksizes, strict=True):
            content, child_tsize = visit(link.cid, depth + 1)
            assert link.name == "" and link.tsize == child_tsize
            assert blocksize == len(content)
            parts.append(content)
            tsize += child_tsize
        content = b"".join(parts)
        assert unixfs.filesize == len(content)
        return content, tsize

    content, _ = visit(root, 0)
    return depths, content


@pytest.mark.parametrize(
    ("chunks", "max_links", "depth"),
    [
        (1, 3, 0),
        (2, 3, 1),
        (3, 3, 1),
        (4, 3, 2),  # root over [node(3 leaves), node(1 leaf)]
        (9, 3, 2),
        (10, 3, 3),
        (27, 3, 3),
        (28, 3, 4),
        (100, 2, 7),
        (175, 174, 2),
    ],
)
def test_balanced_layout_keeps_every_leaf_at_one_depth(
    chunks: int, max_links: int, depth: int
) -> None:
    data = hashlib.shake_128(b"layout %d" % chunks).digest(chunks * 16 - 5)
    root, blocks = _tree(data, 16, max_links)
    depths, content = _leaf_depths(root, blocks, max_links)
    assert depths == {depth}
    assert content == data


def test_identical_chunks_share_one_leaf() -> None:
    root, blocks = _tree(bytes(64), 16, 174)
    assert len(blocks) == 2  # one zero-chunk leaf, linked four times, plus the root
    assert [link.cid for link in decode_node(blocks[root]).links] == [cid_of(bytes(16))] * 4


def test_stream_file_and_bytes_agree(tmp_path: Path) -> None:
    data = hashlib.shake_128(b"agree").digest(3 * 262_144 + 7)
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = cid_of(data)
    assert expected.codec == DAG_PB
    assert cid_of_file(path) == expected
    assert cid_of_stream(io.BytesIO(data)) == expected
    assert cid_of(bytearray(data)) == expected
    small = {"chunk_size": 1000, "max_links": 5}
    assert cid_of_file(path, **small) == cid_of(data, **small)


class _Trickle(io.RawIOBase):
    """A stream that returns at most 1000 bytes per read, like a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        chunk = self._data.read(min(len(buffer), 1000))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_short_reads_do_not_move_chunk_boundaries() -> None:
    data = hashlib.shake_128(b"trickle").digest(2 * 262_144 + 10)
    assert cid_of_stream(_Trickle(data)) == cid_of(data)  # type: ignore[arg-type]


def test_bad_chunking_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        cid_of(b"x", chunk_size=0)
    with pytest.raises(ValueError):
        cid_of(b"x", max_links=1)


# -- flchain cid ----------------------------------------------------------------------------


def test_cli_prints_exactly_the_cid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hello.txt"
    path.write_bytes(HELLO)
    assert main(["cid", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == HELLO_CID + "\n"
    assert captured.err == ""


def test_cli_multi_chunk_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = hashlib.shake_128(b"cli").digest(600_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert main(["cid", str(path)]) == 0
    assert capsys.readouterr().out == f"{cid_of(data)}\n"


def test_cli_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.bin"
    assert main(["cid", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"flchain: error: no such file: {missing}\n"


def test_cli_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cid", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a directory" in err
