"""Feature standardization from federated statistics, without pooling raw data.

Each participant reduces its own training split to sufficient statistics per feature
(count of observed values, their sum and their sum of squares). Only these are shared;
their sum gives the same mean and (population) standard deviation as computing them on
the pooled training splits, so every participant standardizes with the same numbers a
centralized pipeline would use. Missing values (NaN) are left out of the statistics and
then imputed with the federated mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fl_chain.data.dataset import ParticipantData
from fl_chain.errors import DataError


@dataclass(frozen=True)
class FeatureStatistics:
    """What one participant shares about its training features, per feature (float64)."""

    count: np.ndarray
    total: np.ndarray
    total_squares: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> FeatureStatistics:
        """Statistics of a (rows, features) array, ignoring NaN entries."""
        values = np.asarray(x, dtype=np.float64)
        return cls(
            count=np.sum(~np.isnan(values), axis=0).astype(np.float64),
            total=np.nansum(values, axis=0),
            total_squares=np.nansum(values * values, axis=0),
        )

    def __add__(self, other: FeatureStatistics) -> FeatureStatistics:
        return FeatureStatistics(
            self.count + other.count,
            self.total + other.total,
            self.total_squares + other.total_squares,
        )


@dataclass(frozen=True)
class Standardization:
    """The shared mean and standard deviation every participant scales with."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def combine(
        cls, statistics: Sequence[FeatureStatistics], feature_names: Sequence[str]
    ) -> Standardization:
        """Mean and population std of the union of the participants' training values.

        A constant feature gets std 1, so it maps to 0 instead of dividing by zero.
        """
        pooled = statistics[0]
        for more in statistics[1:]:
            pooled = pooled + more
        unobserved = [name for name, count in zip(feature_names, pooled.count) if count == 0]
        if unobserved:
            raise DataError(
                f"no participant has a value for feature(s) {unobserved} in its training "
                "split; drop them via `features`"
            )
        mean = pooled.total / pooled.count
        variance = np.maximum(pooled.total_squares / pooled.count - mean * mean, 0.0)
        std = np.sqrt(variance)
        return cls(mean=mean, std=np.where(std > 0.0, std, 1.0))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x with missing values imputed by the mean, then centred and scaled (float32)."""
        values = np.asarray(x, dtype=np.float64)
        values = np.where(np.isnan(values), self.mean, values)
        return ((values - self.mean) / self.std).astype(np.float32)


def standardize_federated(
    participants: Sequence[ParticipantData], feature_names: Sequence[str]
) -> list[ParticipantData]:
    """Every participant's splits standardized with statistics of all training splits."""
    shared = Standardization.combine(
        [FeatureStatistics.of(p.train_x) for p in participants], feature_names
    )
    return [
        replace(p, train_x=shared.apply(p.train_x), test_x=shared.apply(p.test_x))
        for p in participants
    ]
