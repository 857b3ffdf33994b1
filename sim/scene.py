"""The procedural microfarm plant bed: layout from a seed, PyBullet bodies, lighting, masks.

World frame, metres, z up; the bed's soil spans x, y in [0, 0.75] at z ~ 0. ``build_scene`` assumes a fresh
(reset) PyBullet client and fills it; the same seed gives the same bodies in the same order, hence
byte-identical renders. Layout and plant geometry never depend on ``randomize``: it only changes light,
colours and camera noise, so masks of a randomised scene equal those of the plain one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from sim.bed import BED, build_bed, build_stones, create_body
from sim.plants import BUILDERS, footprint
from sim.species import CROPS, SPECIES, WEEDS, species_by_id

MARGIN = 0.05
"""Minimum distance (metres) of a plant's base from the bed's edge."""


@dataclass(frozen=True)
class PlantSpec:
    """A planned plant: species id, base position x, y (metres, world), yaw (radians), growth stage in
    [0, 1], and the footprint radius (metres) used for spacing."""

    species_id: int
    x: float
    y: float
    yaw: float
    stage: float
    radius: float


@dataclass(frozen=True)
class PlantInfo:
    """A built plant: PyBullet body ``uid``, ``species_id`` (1..12), ``instance_id`` (1..N, unique in the
    scene), base position ``x``, ``y`` (metres, world) and ``radius``: largest horizontal distance of its
    geometry from the base (metres)."""

    uid: int
    species_id: int
    instance_id: int
    x: float
    y: float
    radius: float


def plan_layout(seed: int, density: float = 1.0) -> list[PlantSpec]:
    """The plants of the bed for ``seed`` (pure numpy, no PyBullet): 2-4 crop rows (one crop species each,
    random spacing and gaps), then weeds of 2-5 species, clustered or scattered, ``density`` times the
    usual count. A crop closer than 0.5 of the summed footprints to another row's plant is dropped, a weed
    closer than 0.55 to any plant is moved (15 tries). ``PlantSpec.radius`` is the footprint."""
    rng = np.random.default_rng([seed, 1])
    plants: list[PlantSpec] = []

    def free(x: float, y: float, r: float, among: list[PlantSpec], factor: float) -> bool:
        return all(np.hypot(x - q.x, y - q.y) >= factor * (r + q.radius) for q in among)

    n_rows = int(rng.integers(2, 5))
    along_x = bool(rng.integers(2))
    crops = rng.choice(np.array(CROPS), n_rows, replace=False)
    pitch = (BED - 2 * MARGIN) / n_rows
    for k, sid in enumerate(crops):
        name, row_start = species_by_id(int(sid)).name, len(plants)
        row_stage = rng.uniform(0.35, 1.0)
        across = MARGIN + pitch * (k + 0.5) + rng.normal(0, 0.012)
        spacing = 2 * footprint(name, row_stage) * rng.uniform(0.6, 1.0)
        t = MARGIN + rng.uniform(0.0, spacing * 0.5)
        while t < BED - MARGIN:
            stage = float(np.clip(row_stage + rng.normal(0, 0.08), 0.2, 1.0))
            r = footprint(name, stage)
            a = float(np.clip(across + rng.normal(0, 0.008), MARGIN, BED - MARGIN))
            x, y = (t, a) if along_x else (a, t)
            # neighbours within the row are spaced by the row itself; other rows must keep clear
            if rng.random() > 0.1 and free(x, y, r, plants[:row_start], 0.5):
                plants.append(PlantSpec(int(sid), x, y, float(rng.uniform(0, 2 * np.pi)), stage, r))
            t += spacing * rng.uniform(0.85, 1.15)
    n_weed_species = int(rng.integers(2, len(WEEDS) + 1))
    for sid in rng.choice(np.array(WEEDS), n_weed_species, replace=False):
        name = species_by_id(int(sid)).name
        count = int(rng.poisson(rng.uniform(2.0, 9.0) * density))
        clustered = rng.random() < 0.5
        centres = rng.uniform(MARGIN, BED - MARGIN, (int(rng.integers(1, 4)), 2))
        for _ in range(count):
            stage = float(rng.uniform(0.2, 1.0))
            r = footprint(name, stage)
            for _try in range(15):
                if clustered:
                    x, y = centres[rng.integers(len(centres))] + rng.normal(0, 0.07, 2)
                else:
                    x, y = rng.uniform(MARGIN, BED - MARGIN, 2)
                if MARGIN <= x <= BED - MARGIN and MARGIN <= y <= BED - MARGIN and free(x, y, r, plants, 0.55):
                    plants.append(PlantSpec(int(sid), float(x), float(y),
                                            float(rng.uniform(0, 2 * np.pi)), stage, r))
                    break
    return plants


@dataclass
class Scene:
    """A built bed in one PyBullet client.

    ``plants``: the plants in instance order (``plants[i].instance_id == i + 1``); ``static_uids``: soil,
    boards, path and stones. Light and camera settings are fixed unless the scene was built randomised.
    """

    client: int
    seed: int
    randomize: bool
    density: float
    plants: list[PlantInfo]
    static_uids: list[int]
    light: dict = field(default_factory=dict)
    noise_std: float = 0.0
    blur_sigma: float = 0.0
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    _species_lut: np.ndarray = field(default_factory=lambda: np.zeros(1, np.uint8), repr=False)
    _instance_lut: np.ndarray = field(default_factory=lambda: np.zeros(1, np.uint16), repr=False)

    def __post_init__(self) -> None:
        top = max([q.uid for q in self.plants] + self.static_uids + [0])
        self._species_lut = np.zeros(top + 1, np.uint8)
        self._instance_lut = np.zeros(top + 1, np.uint16)
        for q in self.plants:
            self._species_lut[q.uid] = q.species_id
            self._instance_lut[q.uid] = q.instance_id

    def render_kwargs(self) -> dict:
        """Light keyword arguments for ``p.getCameraImage(..., renderer=p.ER_TINY_RENDERER)``:
        lightDirection (3,) world vector towards the light, lightColor (3,) RGB in [0, 1],
        lightAmbientCoeff, lightDiffuseCoeff, lightSpecularCoeff (floats), shadow (0/1)."""
        return dict(self.light)

    def postprocess(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Camera effects on a rendered frame: (H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB.

        Randomised scenes apply a per-channel gain (white balance), Gaussian blur (sigma ``blur_sigma`` px)
        and Gaussian noise (std ``noise_std`` in 0..255 units, drawn from ``rng``). Otherwise ``rgb`` is
        returned unchanged (the same array)."""
        if not self.randomize:
            return rgb
        img = rgb.astype(np.float32) * np.asarray(self.gain, np.float32)
        if self.blur_sigma > 0.05:
            img = cv2.GaussianBlur(img, (0, 0), self.blur_sigma)
        img += rng.normal(0.0, self.noise_std, img.shape).astype(np.float32)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)

    def masks_from_seg(self, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Species and instance masks from a PyBullet segmentation buffer.

        ``seg``: (H, W) int (int32 from getCameraImage), either plain body uids or
        ``uid + ((link + 1) << 24)`` (flags=ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX); -1 = background.
        Returns (species (H, W) uint8 in 0..12, instance (H, W) uint16 in 0..N); 0 = not a plant."""
        s = np.asarray(seg).astype(np.int64, copy=False)
        uid = np.where(s == -1, 0, s & 0xFFFFFF)  # low 24 bits, also when a big link index wrapped int32
        uid = np.where(uid < len(self._species_lut), uid, 0)
        return self._species_lut[uid], self._instance_lut[uid]


def _light(rng: np.random.Generator | None) -> dict:
    if rng is None:
        return {"lightDirection": [0.45, -0.35, 1.0], "lightColor": [1.0, 1.0, 1.0],
                "lightAmbientCoeff": 0.55, "lightDiffuseCoeff": 0.5, "lightSpecularCoeff": 0.04,
                "shadow": 0}
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(30), np.radians(88))
    warm = rng.uniform(-0.12, 0.12)
    bright = rng.uniform(0.85, 1.1)
    color = np.clip(np.array([1 + warm, 1.0, 1 - warm]) * bright, 0, 1.2)
    return {"lightDirection": [float(np.cos(el) * np.cos(az)), float(np.cos(el) * np.sin(az)),
                               float(np.sin(el))],
            "lightColor": [float(c) for c in color], "lightAmbientCoeff": float(rng.uniform(0.35, 0.75)),
            "lightDiffuseCoeff": float(rng.uniform(0.25, 0.65)),
            "lightSpecularCoeff": float(rng.uniform(0.0, 0.15)), "shadow": 0}


def _jitter(col: tuple[float, ...], rng: np.random.Generator, amount: float) -> tuple[float, ...]:
    c = np.asarray(col[:3]) * rng.uniform(1 - amount, 1 + amount) * rng.normal(1.0, amount / 2, 3)
    return tuple(float(v) for v in np.clip(c, 0.0, 1.0))


def build_scene(client: int, seed: int, randomize: bool = False, density: float = 1.0) -> Scene:
    """Fill a fresh (reset) PyBullet client with the bed for ``seed`` and return its :class:`Scene`.

    ``randomize``: domain randomisation of light direction/colour, ambient/diffuse/specular coefficients,
    soil tint, plant colours and camera gain/blur/noise (geometry and layout stay those of the seed).
    ``density``: multiplies the number of weeds (crops are sown in rows regardless)."""
    if density < 0:
        raise ValueError(f"density must be >= 0, got {density}")
    app = np.random.default_rng([seed, 2]) if randomize else None
    soil_rgba = [1.0, 1.0, 1.0, 1.0] if app is None else list(_jitter((1, 1, 1), app, 0.15)) + [1.0]
    static = build_bed(client, np.random.default_rng([seed, 3]), soil_rgba)
    srng = np.random.default_rng([seed, 4])
    static.append(build_stones(client, srng, int(srng.integers(6, 26))))
    shift = None if app is None else (app.uniform(0.8, 1.2), app.uniform(0.85, 1.1), app.uniform(0.7, 1.3))
    plants: list[PlantInfo] = []
    for i, spec in enumerate(plan_layout(seed, density)):
        prng = np.random.default_rng([seed, 5, i])
        name = species_by_id(spec.species_id).name
        parts = BUILDERS[name](prng, spec.stage)
        shade = prng.uniform(0.85, 1.12)
        cols = [_jitter(tuple(np.asarray(c) * shade), prng, 0.06) for _, c in parts]
        if shift is not None and app is not None:
            cols = [_jitter(tuple(np.asarray(c) * shift), app, 0.08) for c in cols]
        parts = [(m, c) for (m, _), c in zip(parts, cols, strict=True)]
        uid = create_body(client, parts, (spec.x, spec.y, 0.0), spec.yaw)
        radius = max(float(np.hypot(m.v[:, 0], m.v[:, 1]).max()) for m, _ in parts)
        plants.append(PlantInfo(uid, spec.species_id, i + 1, spec.x, spec.y, radius))
    scene = Scene(client, seed, randomize, density, plants, static, _light(app))
    if app is not None:
        scene.noise_std = float(app.uniform(0.0, 6.0))
        scene.blur_sigma = float(app.uniform(0.0, 1.0))
        scene.gain = tuple(float(g) for g in app.uniform(0.9, 1.1, 3))
    return scene


__all__ = ["SPECIES", "PlantInfo", "PlantSpec", "Scene", "build_scene", "plan_layout"]
