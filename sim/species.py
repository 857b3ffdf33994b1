"""Plant species of the simulated microfarm bed and their few-shot class folds.

Species ids run 1..12 (0 is reserved for "not a plant" in every mask). Folds follow PASCAL-5i:
``fold = (id - 1) % 4``, so every fold holds three species and mixes crops with weeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["crop", "weed"]


@dataclass(frozen=True)
class Species:
    """One plant species.

    Attributes:
        id: species id in 1..12; the value written into species masks.
        name: short lowercase name (``"lettuce"``).
        kind: ``"crop"`` or ``"weed"``.
        fold: class fold in 0..3, ``(id - 1) % 4``.
        color: RGB (0..255 each) used to draw this species in mask visualisations (not its render colour).
    """

    id: int
    name: str
    kind: Kind
    fold: int
    color: tuple[int, int, int]


def _sp(id_: int, name: str, kind: Kind, color: tuple[int, int, int]) -> Species:
    return Species(id_, name, kind, (id_ - 1) % 4, color)


SPECIES: tuple[Species, ...] = (
    _sp(1, "lettuce", "crop", (120, 220, 60)),
    _sp(2, "onion", "crop", (70, 200, 230)),
    _sp(3, "carrot", "crop", (255, 140, 0)),
    _sp(4, "radish", "crop", (255, 90, 160)),
    _sp(5, "grass", "weed", (230, 230, 40)),
    _sp(6, "clover", "weed", (255, 255, 255)),
    _sp(7, "dandelion", "weed", (255, 200, 120)),
    _sp(8, "chickweed", "weed", (150, 100, 255)),
    _sp(9, "spinach", "crop", (0, 130, 70)),
    _sp(10, "beetroot", "crop", (170, 20, 60)),
    _sp(11, "kale", "crop", (40, 80, 200)),
    _sp(12, "thistle", "weed", (230, 30, 30)),
)
"""All species, index ``i`` holds id ``i + 1``."""

FOLDS: tuple[tuple[int, ...], ...] = tuple(
    tuple(s.id for s in SPECIES if s.fold == f) for f in range(4)
)
"""Four folds of species ids: ``((1, 5, 9), (2, 6, 10), (3, 7, 11), (4, 8, 12))``."""

CROPS: tuple[int, ...] = tuple(s.id for s in SPECIES if s.kind == "crop")
WEEDS: tuple[int, ...] = tuple(s.id for s in SPECIES if s.kind == "weed")


def species_by_id(species_id: int) -> Species:
    """Return the species with this id (1..12); raise ValueError listing the valid ids otherwise."""
    if not 1 <= species_id <= len(SPECIES):
        raise ValueError(f"unknown species id {species_id}; valid ids are 1..{len(SPECIES)}")
    return SPECIES[species_id - 1]


def species_by_name(name: str) -> Species:
    """Return the species called ``name``; raise ValueError listing the valid names otherwise."""
    for s in SPECIES:
        if s.name == name:
            return s
    raise ValueError(f"unknown species {name!r}; valid names: {', '.join(s.name for s in SPECIES)}")
