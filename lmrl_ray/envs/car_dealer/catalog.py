"""The dealer's catalog: which brand sells which car types, at what MSRP, and the price
of each optional feature.

The data (`envs/data/cars.json`) is our own. It is validated on load, so that a broken
entry fails with its file and key rather than as a KeyError mid-episode.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

CATALOG_PATH = Path(__file__).parents[1] / "data" / "cars.json"


@dataclass(frozen=True, eq=False)
class Catalog:
    """Brands, types, feature prices and MSRP ranges, as read from `cars.json`.

    Compared and hashed by identity, so that per-catalog caches (`reader.lexicons`) work.
    """

    brands: tuple[str, ...]
    types: tuple[str, ...]
    feature_prices: dict[str, int]
    msrp_ranges: dict[tuple[str, str], tuple[int, int]]
    """(brand, type) -> (base trim, top trim) MSRP in dollars; only the types the brand sells."""

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.feature_prices)

    def types_of(self, brand: str) -> list[str]:
        return [t for t in self.types if (brand, t) in self.msrp_ranges]

    def brands_selling(self, car_type: str) -> list[str]:
        return [b for b in self.brands if (b, car_type) in self.msrp_ranges]

    def msrp(self, brand: str, car_type: str, features: Sequence[str] = (), sticker: int | None = None) -> int:
        """The MSRP of a car: the quoted sticker (or the base trim), at least the base plus
        its features, clipped to the catalog's range."""
        low, high = self.msrp_ranges[(brand, car_type)]
        equipped = low + sum(self.feature_prices[f] for f in features)
        return int(min(high, max(low, equipped, sticker or 0)))

    def wished_msrp(self, brand: str, car_type: str) -> int:
        """The base MSRP of the car a buyer came for; for a pair nobody makes (a Porsche
        truck), the cheapest base trim of that type."""
        if (brand, car_type) in self.msrp_ranges:
            return self.msrp_ranges[(brand, car_type)][0]
        return min(self.msrp_ranges[(b, car_type)][0] for b in self.brands_selling(car_type))


def _fail(path: Path, entry: str, problem: str):
    raise ValueError(f"{path}: {entry}: {problem}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def load_catalog(path: Path | str = CATALOG_PATH) -> Catalog:
    """Read and validate a catalog; a malformed one raises ValueError naming file and entry."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the catalog: {err}") from None
    if not isinstance(data, dict):
        _fail(path, "top level", "must be an object with types, features and brands")
    types = data.get("types")
    if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
        _fail(path, "types", "must be a non-empty list of names")
    if len(set(types)) != len(types):
        _fail(path, "types", "names repeat")
    features = data.get("features")
    if not isinstance(features, dict) or not features:
        _fail(path, "features", "must be a non-empty object of feature name -> price")
    for name, price in features.items():
        if not _positive_int(price):
            _fail(path, f"features.{name}", f"price must be a positive integer, got {price!r}")
    brands = data.get("brands")
    if not isinstance(brands, dict) or not brands:
        _fail(path, "brands", "must be a non-empty object of brand -> {type: [low, high]}")
    ranges: dict[tuple[str, str], tuple[int, int]] = {}
    for brand, offered in brands.items():
        if not isinstance(offered, dict) or not offered:
            _fail(path, f"brands.{brand}", "must map at least one type to an MSRP range")
        for car_type, bounds in offered.items():
            entry = f"brands.{brand}.{car_type}"
            if car_type not in types:
                _fail(path, entry, f"unknown type; valid types: {', '.join(types)}")
            if (not isinstance(bounds, list) or len(bounds) != 2 or not all(map(_positive_int, bounds))
                    or bounds[0] > bounds[1]):
                _fail(path, entry, f"MSRP range must be [low, high] with 0 < low <= high, got {bounds!r}")
            ranges[(brand, car_type)] = (bounds[0], bounds[1])
    for car_type in types:
        if not any(t == car_type for _, t in ranges):
            _fail(path, f"types.{car_type}", "no brand sells this type")
    return Catalog(tuple(brands), tuple(types), dict(features), ranges)


@functools.cache
def catalog() -> Catalog:
    """The task's catalog (loaded and validated once)."""
    return load_catalog(CATALOG_PATH)
