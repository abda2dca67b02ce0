"""Our UnixFS CIDs against an independent implementation (ipfs-unixfs-importer) and kubo.

tests/vectors/unixfs_cids.json holds:
- "importer": CIDs printed by ipfs-unixfs-importer 17.1.1 (tests/js/unixfs_cid.mjs) for
  pseudo-random content, regenerated with `.venv/bin/python tests/test_unixfs.py`;
- "kubo": CIDs kubo's `ipfs add --cid-version=1` prints for two tiny inputs, widely
  published (IPFS's own gateway test fixtures use the "hello world\\n" one); the
  importer gives the same, which `test_kubo_vectors_agree_with_the_importer` checks.

The vector test needs no Node; the `node` tests re-run the importer on the same cases
(and a few more) so a change on either side shows up.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fl_chain.storage import cid_of, cid_of_file

TESTS = Path(__file__).resolve().parent
VECTORS = TESTS / "vectors" / "unixfs_cids.json"
SCRIPT = TESTS / "js" / "unixfs_cid.mjs"
CHUNK = 262_144
MIB = 1024 * 1024

# (size, chunk_size, max_links): kubo's defaults around every boundary, then small
# chunks to reach 3- to 8-level DAGs without hundreds of megabytes.
CASES: list[tuple[int, int, int]] = [
    (0, CHUNK, 174),
    (1, CHUNK, 174),
    (1000, CHUNK, 174),
    (CHUNK - 1, CHUNK, 174),
    (CHUNK, CHUNK, 174),
    (CHUNK + 1, CHUNK, 174),
    (174 * CHUNK, CHUNK, 174),  # one full node of 174 leaves
    (174 * CHUNK + 1, CHUNK, 174),  # 3 levels: root over [174 leaves], [1 leaf]
    (200 * CHUNK + 12345, CHUNK, 174),
    (50 * MIB, CHUNK, 174),
    (174 * 1024, 1024, 174),
    (174 * 1024 + 1, 1024, 174),  # 3 levels
    (174 * 174 * 1024, 1024, 174),  # 3 levels, full
    (174 * 174 * 1024 + 1, 1024, 174),  # 4 levels
    (256 * 3 + 1, 256, 3),  # 3 levels
    (256 * 9, 256, 3),
    (256 * 9 + 1, 256, 3),  # 4 levels
    (256 * 27 + 200, 256, 3),  # 5 levels
    (256 * 200 + 17, 256, 4),  # 5 levels
    (256 * 64 + 1, 256, 2),  # 8 levels
    (999 * 7 * 7 + 1, 999, 7),  # an odd chunk size
]


def seed(size: int) -> str:
    return f"fl-chain unixfs vector {size}"


def content(seed_text: str, size: int) -> bytes:
    """The vector's bytes: SHAKE-128 of the seed, `size` bytes long (any language can redo it)."""
    return hashlib.shake_128(seed_text.encode("utf-8")).digest(size)


def load_vectors() -> dict:  # type: ignore[type-arg]
    return json.loads(VECTORS.read_text(encoding="utf-8"))


def test_vectors_cover_every_case() -> None:
    vectors = load_vectors()["importer"]
    assert [(v["size"], v["chunk_size"], v["max_links"]) for v in vectors] == CASES
    assert all(v["seed"] == seed(v["size"]) for v in vectors)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_cid_matches_importer_vector(index: int) -> None:
    vector = load_vectors()["importer"][index]
    data = content(vector["seed"], vector["size"])
    cid = cid_of(data, chunk_size=vector["chunk_size"], max_links=vector["max_links"])
    assert str(cid) == vector["cid"]


@pytest.mark.parametrize("vector", load_vectors()["kubo"], ids=lambda v: repr(v["text"]))
def test_cid_matches_kubo(vector: dict) -> None:  # type: ignore[type-arg]
    assert str(cid_of(vector["text"].encode("utf-8"))) == vector["cid"]


# -- against the live JS importer -----------------------------------------------------------


def run_importer(
    node_modules: Path, files: list[Path], chunk_size: int, max_links: int
) -> list[str]:
    """CIDs ipfs-unixfs-importer gives `files`, one per file, in order."""
    assert node_modules.is_dir()
    command = ["node", str(SCRIPT), "--chunk-size", str(chunk_size)]
    command += ["--max-children", str(max_links)]
    result = subprocess.run(
        [*command, *map(str, files)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def _groups(cases: list[tuple[int, int, int]]) -> Iterator[tuple[int, int, list[int]]]:
    params = sorted({(chunk, links) for _, chunk, links in cases})
    for chunk, links in params:
        yield chunk, links, [size for size, c, n in cases if (c, n) == (chunk, links)]


# Extra sizes checked only live: every size from 0 to 40 chunks of 256 bytes with 3 links.
LIVE_EXTRA = [(size, 256, 3) for size in range(0, 40 * 256 + 1, 128)]


@pytest.mark.node
@pytest.mark.slow
def test_cids_match_the_js_importer(node_modules: Path, tmp_path: Path) -> None:
    for chunk, links, sizes in _groups(CASES + LIVE_EXTRA):
        files = []
        for size in sorted(set(sizes)):
            path = tmp_path / f"{chunk}-{links}-{size}.bin"
            path.write_bytes(content(seed(size), size))
            files.append(path)
        expected = run_importer(node_modules, files, chunk, links)
        assert len(expected) == len(files)
        for path, js_cid in zip(files, expected, strict=True):
            assert str(cid_of_file(path, chunk_size=chunk, max_links=links)) == js_cid, path.name
            path.unlink()


@pytest.mark.node
def test_kubo_vectors_agree_with_the_importer(node_modules: Path, tmp_path: Path) -> None:
    kubo = load_vectors()["kubo"]
    files = []
    for index, vector in enumerate(kubo):
        path = tmp_path / f"kubo-{index}"
        path.write_bytes(vector["text"].encode("utf-8"))
        files.append(path)
    assert run_importer(node_modules, files, CHUNK, 174) == [v["cid"] for v in kubo]


def regenerate() -> None:
    """Rewrite the vectors file from the JS importer (needs node and node_modules)."""
    import tempfile

    old = load_vectors() if VECTORS.exists() else {}
    node_modules = TESTS.parent / "node_modules"
    package = node_modules / "ipfs-unixfs-importer" / "package.json"
    version = json.loads(package.read_text())["version"]
    cids: dict[tuple[int, int, int], str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for chunk, links, sizes in _groups(CASES):
            files = []
            for size in sizes:
                path = Path(scratch) / f"{size}.bin"
                path.write_bytes(content(seed(size), size))
                files.append(path)
            printed = run_importer(node_modules, files, chunk, links)
            for size, cid in zip(sizes, printed, strict=True):
                cids[(size, chunk, links)] = cid
            for path in files:
                path.unlink()
    document = {
        "about": (
            "UnixFS CIDv1 test vectors for fl_chain.storage.unixfs. 'importer' entries: CIDs "
            f"printed by ipfs-unixfs-importer {version} through tests/js/unixfs_cid.mjs "
            "(cidVersion 1, rawLeaves, reduceSingleLeafToSelf, fixed-size chunker of chunk_size, "
            "balanced layout with maxChildrenPerNode = max_links). Regenerate with "
            "`.venv/bin/python tests/test_unixfs.py`. 'kubo' entries: what kubo's "
            "`ipfs add --cid-version=1` prints for the UTF-8 text."
        ),
        "content": "bytes = SHAKE-128(seed encoded as UTF-8), first `size` bytes "
        "(Python: hashlib.shake_128(seed.encode()).digest(size))",
        "importer": [
            {
                "seed": seed(size),
                "size": size,
                "chunk_size": chunk,
                "max_links": links,
                "cid": cids[(size, chunk, links)],
            }
            for size, chunk, links in CASES
        ],
        "kubo": old.get("kubo", []),
    }
    VECTORS.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    regenerate()
    sys.exit(0)
