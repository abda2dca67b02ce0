"""Content-addressed storage: kubo-compatible CIDs, a local blockstore and CAR archives.

A blob's CID here is exactly what `ipfs add --cid-version=1` prints for the same bytes,
so whatever the embedded store holds can be moved to (or fetched from) real IPFS and
still match the CIDs committed on chain.
"""

from fl_chain.storage.blockstore import ContentStore, LocalStore
from fl_chain.storage.car import export_car, import_car
from fl_chain.storage.cid import DAG_PB, RAW, Cid
from fl_chain.storage.unixfs import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_LINKS,
    Block,
    build_file,
    cid_of,
    cid_of_file,
    cid_of_stream,
)

__all__ = [
    "DAG_PB",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_LINKS",
    "RAW",
    "Block",
    "Cid",
    "ContentStore",
    "LocalStore",
    "build_file",
    "cid_of",
    "cid_of_file",
    "cid_of_stream",
    "export_car",
    "import_car",
]
