"""Preprocessing that deployed organizations agree on without pooling a single row.

In a simulation one process loads every participant's table and standardizes them with
federated statistics. In a deployment each hospital holds only its own file, so each
says what the others need to preprocess alike, and nothing more: its feature names, the
label values it has, and per feature the count, sum and sum of squares of its training
split (`TableSummary`), signed with its account (`SignedSummary`). The aggregator passes
every site's signed summary to every site with the run settings, and each site checks
the signatures and combines them itself (`SharedPreprocessing`): every site encodes labels
with the same class indices and scales features with the same mean and deviation, and
an aggregator cannot slip a site scaling it did not derive from the members' own words.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from fl_chain.data.normalization import FeatureStatistics, Standardization
from fl_chain.errors import DataError
from fl_chain.jsonfiles import parse_json
from fl_chain.messages import MalformedMessage, read_hex, read_text, sign_text, signed_text, signer_of
from fl_chain.protocol import ProtocolError

Label = int | str


@dataclass(frozen=True)
class TableSummary:
    """What one organization says of its table: names, label values, feature statistics."""

    feature_names: tuple[str, ...]
    labels: tuple[Label, ...]
    statistics: FeatureStatistics

    def to_json(self) -> str:
        return json.dumps({
            "feature_names": list(self.feature_names),
            "labels": list(self.labels),
            "count": self.statistics.count.tolist(),
            "total": self.statistics.total.tolist(),
            "total_squares": self.statistics.total_squares.tolist(),
        })

    @classmethod
    def from_json(cls, text: str, sender: str) -> TableSummary:
        """A summary as `sender` sent it; a malformed one is refused, naming the sender."""
        try:
            document = parse_json(text)
            names, labels = tuple(str(name) for name in document["feature_names"]), tuple(document["labels"])
            statistics = FeatureStatistics(*(np.asarray(document[key], dtype=np.float64)
                                             for key in ("count", "total", "total_squares")))
        except (ValueError, KeyError, TypeError) as error:
            raise ProtocolError(f"participant {sender} sent a malformed data summary ({error})") from None
        if any(values.shape != (len(names),) for values in vars(statistics).values()):
            raise ProtocolError(f"participant {sender} sent statistics that do not match its {len(names)} features")
        problem = _implausible(names, labels, statistics)
        if problem:
            raise ProtocolError(f"participant {sender} sent a data summary no table has: {problem}")
        return cls(names, labels, statistics)

    def in_order(self, names: tuple[str, ...]) -> FeatureStatistics:
        """Its statistics with the features in the order of `names` (the same set)."""
        position = [self.feature_names.index(name) for name in names]
        return FeatureStatistics(*(values[position] for values in vars(self.statistics).values()))


MAX_FEATURES = 10_000
MAX_LABELS = 1_000
MAX_ROWS = 10**9


def _implausible(names: tuple[str, ...], labels: tuple[Label, ...], statistics: FeatureStatistics) -> str | None:
    """Why a summary cannot describe a real table (it would poison every site's scaling), or None."""
    count, total, squares = statistics.count, statistics.total, statistics.total_squares
    if not 0 < len(names) <= MAX_FEATURES or len(set(names)) != len(names):
        return f"{len(names)} feature names, or a name twice"
    if not 0 < len(labels) <= MAX_LABELS or not all(
            isinstance(label, (int, str)) and not isinstance(label, bool) and len(str(label)) <= 200
            for label in labels):
        return f"{len(labels)} label values, or one that is not a short number or text"
    if not all(np.isfinite(values).all() for values in (count, total, squares)):
        return "statistics that are not finite"
    if not ((count >= 1) & (count <= MAX_ROWS) & (count == np.round(count))).all():
        return "a feature counted a fractional, negative or impossible number of times"
    if ((squares < 0) | (squares * count < total**2 * (1 - 1e-9) - 1e-9)).any():
        return "a sum of squares smaller than its sum allows (a negative variance)"
    return None


@dataclass(frozen=True)
class SharedPreprocessing:
    """The features, class vocabulary and standardization every organization applies."""

    feature_names: tuple[str, ...]
    classes: tuple[Label, ...]
    standardization: Standardization

    @classmethod
    def combine(cls, summaries: Mapping[str, TableSummary]) -> SharedPreprocessing:
        """From each participant's summary (keyed by its address, to name a mismatch)."""
        (first, names), *others = [(who, summary.feature_names) for who, summary in summaries.items()]
        for who, theirs in others:
            if sorted(theirs) != sorted(names):  # the same columns, in any order
                raise DataError(f"participant {who}'s table has features {list(theirs)}, but {first}'s has "
                                f"{list(names)}: every organization must provide the same columns")
        labels = [label for summary in summaries.values() for label in summary.labels]
        if len({type(label) for label in labels}) > 1:
            raise DataError("the organizations' target columns mix numbers and text: use the same labels everywhere")
        classes = tuple(sorted(set(labels)))
        if len(classes) < 2:
            raise DataError(f"the organizations' tables hold the labels {list(classes)}: a classifier needs two")
        standardization = Standardization.combine([s.in_order(names) for s in summaries.values()], names)
        return cls(names, classes, standardization)

    def to_dict(self) -> dict[str, Any]:
        return {"feature_names": list(self.feature_names), "classes": list(self.classes),
                "mean": self.standardization.mean.tolist(), "std": self.standardization.std.tolist()}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> SharedPreprocessing:
        standardization = Standardization(np.asarray(document["mean"], dtype=np.float64),
                                          np.asarray(document["std"], dtype=np.float64))
        return cls(tuple(document["feature_names"]), tuple(document["classes"]), standardization)


@dataclass(frozen=True)
class SignedSummary:
    """A site's table summary as it signed it, for one federation on one chain."""

    address: str
    text: str  # TableSummary.to_json(), exactly as signed
    signature: bytes

    @staticmethod
    def statement(federation: str, chain_id: int, text: str) -> str:
        return signed_text("data summary", {"federation": federation, "chain_id": chain_id, "summary": text})

    @classmethod
    def sign(cls, account: LocalAccount, federation: str, chain_id: int, summary: TableSummary) -> SignedSummary:
        text = summary.to_json()
        return cls(account.address, text, sign_text(account, cls.statement(federation, chain_id, text)))

    @property
    def summary(self) -> TableSummary:
        return TableSummary.from_json(self.text, self.address)

    def to_record(self) -> dict[str, str]:
        return {"summary": self.text, "signature": self.signature.hex()}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], address: str, federation: str, chain_id: int) -> SignedSummary:
        """The summary `address` signed; one that is not its own signature is refused."""
        what = f"the data summary of {address}"
        signed = cls(address, read_text(record, "summary", what, limit=1 << 22), read_hex(record, "signature", what, 65))
        if signer_of(cls.statement(federation, chain_id, signed.text), signed.signature) != address:
            raise MalformedMessage(f"{what} is not signed by {address}")
        signed.summary  # noqa: B018 - parse now: a malformed summary is refused here, naming its sender
        return signed

    @staticmethod
    def combine(signed: Mapping[str, SignedSummary]) -> SharedPreprocessing:
        return SharedPreprocessing.combine({address: item.summary for address, item in sorted(signed.items())})
