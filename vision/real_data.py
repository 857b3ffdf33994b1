"""Real field photographs with hand-made masks (numpy + OpenCV only, no torch): ``RealSet``.

The photos live beside the repository in ``../shared/data/real/`` (``real_root``; or ``MICROFARM_REAL_DATA``,
or an explicit root) and are never copied into it; a missing folder raises ``RealDataMissing`` (a
``UsageError``: one line, exit code 2). Two sets (licences and citations: ``../shared/data/real/README.md``):

- ``peanut`` (Tran & Phan, IEEE Access 2023; CC BY-SA 4.0; evaluation and test-time supports only):
  ``images/NNNN.jpg`` (960x720) with RGB colour labels ``labels/NNNN.png``, green (0,255,0) = crop, red
  (255,0,0) = weed, black = background (each pixel goes to the nearest of the three colours). Tasks
  ``vegetation`` (crop or weed), ``crop``, ``weed``. Fixed split: every fifth image (0005, 0010, ..., 0400)
  is a ``query``, the other 320 are ``support``. Images 0321-0400 hold no crop.
- ``cwf788`` (Li et al., IEEE Access 2019; MIT): ``train/ validation/ test/`` ``NNN_image.jpg`` (512x384)
  with gray labels in ``trainlabel/ validationlabel/ testlabel/`` (255 = crop (cauliflower), 0 = soil and
  weeds). Task ``crop``; splits ``train`` (400), ``validation`` (88), ``test`` (300).

``RealSet.image(item, max_side)`` is (H,W,3) uint8 RGB, shrunk (INTER_AREA, aspect kept) so that its long side
is at most ``max_side``; ``RealSet.masks(item, max_side)`` is {task: (H,W) bool} at that same size (the label's
class map resized INTER_NEAREST). Nothing large is cached; ``pixel_counts`` keeps each item's per-task counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from microfarm_toolkit import UsageError

__all__ = ["REAL_SETS", "ENV_VAR", "real_root", "RealDataMissing", "RealItem", "RealSet"]

REAL_SETS: dict[str, tuple[str, ...]] = {"peanut": ("vegetation", "crop", "weed"), "cwf788": ("crop",)}
ENV_VAR = "MICROFARM_REAL_DATA"
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"

_SPLITS: dict[str, tuple[str, ...]] = {"peanut": ("query", "support"), "cwf788": ("train", "validation", "test")}
_FOLDERS: dict[str, tuple[str, ...]] = {
    "peanut": ("images", "labels"),
    "cwf788": ("train", "trainlabel", "validation", "validationlabel", "test", "testlabel"),
}
# Peanut's label colours (RGB) in class order: background, crop, weed
_PEANUT_COLOURS = np.array([(0, 0, 0), (0, 255, 0), (255, 0, 0)], np.int32)


def real_root(root: str | Path | None = None) -> Path:
    """The folder of the real photos: ``root`` if given, else ``$MICROFARM_REAL_DATA``, else
    ``<repo>/../shared/data/real`` (from this file's location). Not checked here (``RealSet`` does)."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT.resolve()


class RealDataMissing(UsageError):
    """The real photos (or one set of them) are not where they were looked for."""

    def __init__(self, path: str | Path, what: str = "real photos") -> None:
        self.path = Path(path)
        super().__init__(f"{what} not found at {self.path}: the folder lives beside the repository as "
                         f"../shared/data/real (with peanut/ and cwf788/); or set {ENV_VAR}=DIR or pass "
                         "--real-root DIR")


@dataclass(frozen=True)
class RealItem:
    """One photo and its label file."""

    set: str
    stem: str
    image: Path
    label: Path


def _fit(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """(h, w) shrunk so that the long side is at most ``max_side`` (aspect kept; never enlarged)."""
    if max_side is None or max(h, w) <= max_side:
        return h, w
    if max_side < 1:
        raise UsageError(f"max_side must be at least 1, got {max_side}")
    s = max_side / max(h, w)
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def _read(path: Path, flags: int) -> np.ndarray:
    a = cv2.imread(str(path), flags)
    if a is None:
        raise UsageError(f"cannot read {path} (missing or not an image); check the real-photo folder")
    return a


def _nearest_colour(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 RGB Peanut label -> (H,W) uint8 class: the nearest of black, green, red (exact colours
    take a fast path; only other, anti-aliased, pixels are measured)."""
    x = rgb.astype(np.int32)
    code = (x[..., 0] << 16) | (x[..., 1] << 8) | x[..., 2]
    cls = np.zeros(code.shape, np.uint8)
    exact = code == 0
    for c, (r, g, b) in enumerate(_PEANUT_COLOURS[1:].tolist(), start=1):
        hit = code == (r << 16 | g << 8 | b)
        cls[hit] = c
        exact |= hit
    if not exact.all():
        odd = x[~exact]
        cls[~exact] = ((odd[:, None, :] - _PEANUT_COLOURS[None]) ** 2).sum(-1).argmin(-1)
    return cls


class RealSet:
    """One of ``REAL_SETS`` read from ``real_root(root) / name``."""

    def __init__(self, name: str, root: str | Path | None = None) -> None:
        if name not in REAL_SETS:
            raise UsageError(f"unknown real set {name!r}; choose one of: {', '.join(REAL_SETS)}")
        self.name = name
        self.tasks: tuple[str, ...] = REAL_SETS[name]
        self.splits: tuple[str, ...] = _SPLITS[name]
        base = real_root(root)
        if not base.is_dir():
            raise RealDataMissing(base)
        self.root = base / name
        for sub in _FOLDERS[name]:
            if not (self.root / sub).is_dir():
                raise RealDataMissing(self.root / sub, f"the {name} set's folder {sub}/")
        self._items: dict[str, list[RealItem]] = {}
        self._counts: dict[tuple[Path, int | None], dict[str, int]] = {}

    def __repr__(self) -> str:
        return f"RealSet({self.name!r}, root={str(self.root.parent)!r})"

    def items(self, split: str) -> list[RealItem]:
        """The split's items, sorted by stem; UsageError for an unknown split or a photo without its label."""
        if split not in self.splits:
            raise UsageError(f"the {self.name} set has no split {split!r}; choose one of: {', '.join(self.splits)}")
        if split not in self._items:
            if self.name == "peanut":
                img_dir, lab_dir = self.root / "images", self.root / "labels"
                stems = sorted(p.stem for p in img_dir.glob("*.jpg"))
                query = split == "query"  # every fifth image is a query, the other four fifths are supports
                stems = [s for s in stems if s.isdigit() and (int(s) % 5 == 0) == query]
            else:
                img_dir, lab_dir = self.root / split, self.root / f"{split}label"
                stems = sorted(p.stem for p in img_dir.glob("*.jpg"))
            items = []
            for s in stems:
                label = lab_dir / f"{s}.png"
                if not label.is_file():
                    raise UsageError(f"{self.name}: photo {img_dir / (s + '.jpg')} has no label {label}")
                items.append(RealItem(self.name, s, img_dir / f"{s}.jpg", label))
            self._items[split] = items
        return list(self._items[split])

    def image(self, item: RealItem, max_side: int | None = None) -> np.ndarray:
        """(H,W,3) uint8 RGB, shrunk with INTER_AREA so that the long side is at most ``max_side``."""
        bgr = _read(item.image, cv2.IMREAD_COLOR)
        h, w = _fit(*bgr.shape[:2], max_side)
        if (h, w) != bgr.shape[:2]:
            bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def classes(self, item: RealItem, max_side: int | None = None) -> np.ndarray:
        """(H,W) uint8 class map at ``image(item, max_side)``'s size: peanut 0 background, 1 crop, 2 weed;
        cwf788 0 soil and weeds, 1 crop."""
        if self.name == "peanut":
            rgb = _read(item.label, cv2.IMREAD_COLOR)[..., ::-1]  # OpenCV reads BGR
            cls = _nearest_colour(rgb)
        else:
            cls = (_read(item.label, cv2.IMREAD_GRAYSCALE) >= 128).astype(np.uint8)  # nearest of 0 / 255
        h, w = _fit(*cls.shape, max_side)
        if (h, w) != cls.shape:
            cls = cv2.resize(cls, (w, h), interpolation=cv2.INTER_NEAREST)
        return cls

    def masks(self, item: RealItem, max_side: int | None = None) -> dict[str, np.ndarray]:
        """{task: (H,W) bool} at the size of ``image(item, max_side)``."""
        cls = self.classes(item, max_side)
        if self.name == "peanut":
            out = {"vegetation": cls > 0, "crop": cls == 1, "weed": cls == 2}
        else:
            out = {"crop": cls == 1}
        key = (item.label, max_side)
        if key not in self._counts:
            self._counts[key] = {t: int(np.count_nonzero(m)) for t, m in out.items()}
        return out

    def pixel_counts(self, item: RealItem, max_side: int | None = None) -> dict[str, int]:
        """{task: pixels of its class} at ``max_side`` (cached per item: a few ints)."""
        key = (item.label, max_side)
        if key not in self._counts:
            self.masks(item, max_side)
        return dict(self._counts[key])
