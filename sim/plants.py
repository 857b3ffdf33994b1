"""Procedural plant geometry: one builder per species, each returning coloured triangle meshes.

A builder ``fn(rng, stage) -> list[Part]`` makes one plant in its local frame (metres, z up, base at the
origin). ``stage`` in [0, 1] is the growth stage (size and leaf count grow with it). Colours are linear
RGB floats in [0, 1]. :func:`sim.bed.create_body` turns the parts into a PyBullet body.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim.leaves import Mesh, blade, merge, profile, rock, rot_z, stalk, tip_of, tube

Color = tuple[float, float, float]
Part = tuple[Mesh, Color]
GOLDEN = 2.399963  # golden angle, radians: phyllotaxis of rosettes


def _leaf(rng: np.random.Generator, length: float, width: float, kind: str, pitch: float,
          droop: float = 0.3, cup: float = 0.1, wave: float = 0.0, waves: float = 5.0,
          petiole: float = 0.0, teeth: int = 0, depth: float = 0.0, n: int = 4,
          stem_w: float = 0.003) -> tuple[Mesh, Mesh | None]:
    """A leaf along +x: optional petiole of ``petiole`` metres then a blade; returns (blade, petiole)."""
    hw = width / 2 * profile(n, kind, teeth, depth)
    start = np.zeros(3)
    stem = None
    if petiole > 0:
        sp = pitch + 0.35
        stem = stalk(petiole, stem_w, sp, 0.2)
        start = tip_of(petiole, sp, 0.2, 2)
    leaf = blade(length, hw, pitch, droop, cup, wave, waves).transformed(np.eye(3), start)
    return leaf, stem


def _place(m: Mesh | None, yaw: float, at: np.ndarray | tuple = (0.0, 0.0, 0.0)) -> Mesh | None:
    return None if m is None else m.transformed(rot_z(yaw), at)


def _rosette(rng: np.random.Generator, count: int, length: tuple[float, float], aspect: float,
             kind: str, pitch: tuple[float, float], inner_scale: float = 0.6,
             **leaf_kw: float) -> tuple[list[Mesh], list[Mesh], list[Mesh]]:
    """Leaves at golden-angle yaws; later (inner) leaves smaller and more upright.
    Returns (outer blades, inner blades, petioles)."""
    outer, inner, stems = [], [], []
    yaw0 = rng.uniform(0, 2 * np.pi)
    for i in range(count):
        f = i / max(count - 1, 1)
        ln = rng.uniform(*length) * (1.0 - (1.0 - inner_scale) * f)
        p = pitch[0] + (pitch[1] - pitch[0]) * f + rng.normal(0, 0.08)
        leaf, stem = _leaf(rng, ln, ln * aspect * rng.uniform(0.85, 1.15), kind, p, **leaf_kw)
        yaw = yaw0 + i * GOLDEN + rng.normal(0, 0.15)
        (inner if f > 0.6 else outer).append(_place(leaf, yaw))
        if stem is not None:
            stems.append(_place(stem, yaw))
    return outer, inner, stems


def lettuce(rng: np.random.Generator, stage: float) -> list[Part]:
    n = int(8 + 10 * stage)
    outer, inner, _ = _rosette(rng, n, (0.05 + 0.08 * stage, 0.07 + 0.1 * stage), 0.8, "obovate",
                               (0.35, 1.2), 0.55, droop=0.5, cup=0.25, wave=0.35, waves=4.0, n=5)
    return [(_m(outer), (0.50, 0.78, 0.22)), (_m(inner), (0.68, 0.88, 0.36))]


def onion(rng: np.random.Generator, stage: float) -> list[Part]:
    tubes = []
    for i in range(int(3 + 4 * stage)):
        ln = rng.uniform(0.08, 0.14) + 0.16 * stage * rng.uniform(0.6, 1.0)
        t = tube(ln, rng.uniform(0.003, 0.005), rng.uniform(1.2, 1.5), rng.uniform(0.3, 1.1))
        tubes.append(_place(t, i * GOLDEN + rng.normal(0, 0.3)))
    bulb = rock(0.008 + 0.01 * stage, rng, 1.0).transformed(np.eye(3), (0, 0, 0.004))
    return [(_m(tubes), (0.36, 0.58, 0.38)), (bulb, (0.86, 0.78, 0.62))]


def carrot(rng: np.random.Generator, stage: float) -> list[Part]:
    stems, leaflets = [], []
    for i in range(int(3 + 5 * stage)):
        ln, p, d = rng.uniform(0.05, 0.08) + 0.08 * stage, rng.uniform(0.7, 1.2), rng.uniform(0.5, 1.1)
        yaw = i * GOLDEN + rng.normal(0, 0.2)
        stems.append(_place(stalk(ln, 0.002, p, d, n=4), yaw))
        npin = 5
        for k in range(1, npin + 1):
            at = tip_of(ln * k / npin, p, d * k / npin, 4)
            size = ln * 0.32 * (1.15 - 0.5 * k / npin)
            for side in (-1, 1):
                lf = blade(size, size * 0.22 * profile(2, "lance"), 0.25, 0.4)
                lf = lf.transformed(rot_z(side * rng.uniform(0.7, 1.1) + 0.15 * side), at)
                leaflets.append(_place(lf, yaw))
    return [(_m(leaflets), (0.24, 0.52, 0.14)), (_m(stems), (0.35, 0.55, 0.2))]


def radish(rng: np.random.Generator, stage: float) -> list[Part]:
    leaves, stems = [], []
    size = 0.018 + 0.02 * stage
    yaw0 = rng.uniform(0, 2 * np.pi)
    for side in (0.0, np.pi):
        lf, st = _leaf(rng, size, size * 1.25, "round", 0.25, 0.2, 0.25, petiole=0.012, n=4)
        leaves.append(_place(lf, yaw0 + side))
        stems.append(_place(st, yaw0 + side))
    if stage > 0.5:
        lf, st = _leaf(rng, size * 2.2, size * 1.0, "obovate", 0.6, 0.4, 0.1, petiole=0.02,
                       teeth=4, depth=0.3)
        leaves.append(_place(lf, yaw0 + np.pi / 2))
        stems.append(_place(st, yaw0 + np.pi / 2))
    return [(_m(leaves), (0.42, 0.72, 0.2)), (_m(stems), (0.75, 0.35, 0.4))]


def spinach(rng: np.random.Generator, stage: float) -> list[Part]:
    outer, inner, stems = _rosette(rng, int(5 + 7 * stage), (0.04 + 0.06 * stage, 0.06 + 0.07 * stage),
                                   0.62, "oval", (0.45, 1.0), droop=0.6, cup=0.12, petiole=0.03, n=4)
    return [(_m(outer + inner), (0.13, 0.38, 0.1)), (_m(stems), (0.3, 0.55, 0.2))]


def beetroot(rng: np.random.Generator, stage: float) -> list[Part]:
    outer, inner, stems = _rosette(rng, int(4 + 6 * stage), (0.05 + 0.07 * stage, 0.07 + 0.08 * stage),
                                   0.5, "oval", (0.6, 1.1), droop=0.7, cup=0.15, wave=0.12,
                                   petiole=0.04, n=4, stem_w=0.004)
    ribs = [_midrib(m) for m in outer + inner]
    return [(_m(outer + inner), (0.2, 0.3, 0.1)), (_m(stems + ribs), (0.6, 0.05, 0.18))]


def _midrib(leaf: Mesh) -> Mesh:
    """A thin vein strip over a blade's centre line (first n+1 vertices of :func:`blade`)."""
    n1 = len(leaf.v) // 3
    c = leaf.v[:n1] + np.array([0, 0, 0.0015])
    side = np.cross(np.gradient(c, axis=0), [0, 0, 1.0])
    side /= np.maximum(np.linalg.norm(side, axis=1, keepdims=True), 1e-9)
    w = 0.0015 * (1 - np.linspace(0, 1, n1))[:, None]
    v = np.concatenate([c + side * w, c - side * w])
    i = np.arange(n1 - 1)
    f = np.concatenate([np.stack([i, i + n1, i + n1 + 1], 1), np.stack([i, i + n1 + 1, i + 1], 1)])
    return Mesh(v, f)


def kale(rng: np.random.Generator, stage: float) -> list[Part]:
    outer, inner, stems = _rosette(rng, int(4 + 5 * stage), (0.06 + 0.07 * stage, 0.08 + 0.09 * stage),
                                   0.55, "lance", (0.7, 1.2), droop=0.9, cup=0.05, wave=0.45, waves=8.0,
                                   petiole=0.05, teeth=9, depth=0.25, n=6, stem_w=0.005)
    return [(_m(outer + inner), (0.24, 0.42, 0.36)), (_m(stems + [_midrib(m) for m in outer + inner]),
                                                      (0.62, 0.72, 0.6))]


def grass(rng: np.random.Generator, stage: float) -> list[Part]:
    blades = []
    for _ in range(int(5 + 9 * stage)):
        ln = rng.uniform(0.04, 0.08) + 0.08 * stage
        b = blade(ln, rng.uniform(0.0015, 0.0025) * profile(3, "grass"), rng.uniform(0.9, 1.4),
                  rng.uniform(0.6, 1.8), twist=rng.uniform(-0.8, 0.8))
        off = np.array([rng.normal(0, 0.006), rng.normal(0, 0.006), 0.0])
        blades.append(_place(b, rng.uniform(0, 2 * np.pi), off))
    return [(_m(blades), (0.38, 0.62, 0.18))]


def clover(rng: np.random.Generator, stage: float) -> list[Part]:
    leaflets, stems, flowers = [], [], []
    for i in range(int(3 + 8 * stage)):
        ln, p = rng.uniform(0.025, 0.045) + 0.03 * stage, rng.uniform(0.6, 1.1)
        yaw = i * GOLDEN + rng.normal(0, 0.3)
        stems.append(_place(stalk(ln, 0.0015, p, 0.3), yaw))
        top = tip_of(ln, p, 0.3, 2)
        s = rng.uniform(0.012, 0.02)
        for k in range(3):
            lf = blade(s, s * 0.45 * profile(4, "obovate"), 0.1, -0.1, 0.1)
            leaflets.append(_place(lf.transformed(rot_z(k * 2 * np.pi / 3), top), yaw))
    if stage > 0.6 and rng.random() < 0.5:
        flowers.append(rock(0.009, rng, 0.8).transformed(np.eye(3), (0.0, 0.0, 0.05)))
        stems.append(tube(0.05, 0.001, np.pi / 2, 0.0, 2, 3))
    parts: list[Part] = [(_m(leaflets), (0.2, 0.45, 0.16)), (_m(stems), (0.45, 0.6, 0.35))]
    if flowers:
        parts.append((_m(flowers), (0.95, 0.93, 0.88)))
    return parts


def dandelion(rng: np.random.Generator, stage: float) -> list[Part]:
    outer, inner, _ = _rosette(rng, int(6 + 8 * stage), (0.05 + 0.06 * stage, 0.07 + 0.08 * stage),
                               0.3, "obovate", (0.12, 0.45), 0.7, droop=0.15, cup=0.05, teeth=5,
                               depth=0.65, n=10)
    parts: list[Part] = [(_m(outer + inner), (0.3, 0.55, 0.14))]
    if stage > 0.5 and rng.random() < 0.6:
        h = 0.06 + 0.05 * rng.random()
        head = rock(0.014, rng, 0.35).transformed(np.eye(3), (0.0, 0.0, h))
        parts += [(head, (1.0, 0.82, 0.05)), (tube(h, 0.0015, np.pi / 2, 0.0, 2, 3), (0.5, 0.6, 0.3))]
    return parts


def chickweed(rng: np.random.Generator, stage: float) -> list[Part]:
    leaves, stems = [], []
    for i in range(int(3 + 4 * stage)):
        yaw, ln = i * GOLDEN + rng.normal(0, 0.3), 0.03 + 0.05 * stage
        stems.append(_place(stalk(ln, 0.0012, 0.25, 0.3, n=3), yaw))
        for k in range(4):
            at = tip_of(ln * k / 3, 0.25, 0.3 * k / 3, 3) + np.array([0.0, 0.0, 0.004 * (k == 0)])
            s = rng.uniform(0.007, 0.012)
            for side in (-1, 1):
                lf = blade(s, s * 0.3 * profile(3, "oval"), 0.3, 0.2).transformed(rot_z(side * 1.3), at)
                leaves.append(_place(lf, yaw))
    return [(_m(leaves), (0.45, 0.74, 0.22)), (_m(stems), (0.5, 0.65, 0.3))]


def thistle(rng: np.random.Generator, stage: float) -> list[Part]:
    outer, inner, _ = _rosette(rng, int(5 + 6 * stage), (0.06 + 0.07 * stage, 0.08 + 0.08 * stage),
                               0.35, "lance", (0.3, 0.9), droop=0.35, cup=-0.05, wave=0.4, waves=6.0,
                               teeth=7, depth=0.85, n=14)
    ribs = [_midrib(m) for m in outer + inner]
    return [(_m(outer + inner), (0.36, 0.5, 0.3)), (_m(ribs), (0.85, 0.88, 0.78))]


def _m(meshes: list[Mesh | None]) -> Mesh:
    return merge([m for m in meshes if m is not None])


BUILDERS: dict[str, Callable[[np.random.Generator, float], list[Part]]] = {
    "lettuce": lettuce, "onion": onion, "carrot": carrot, "radish": radish, "grass": grass,
    "clover": clover, "dandelion": dandelion, "chickweed": chickweed, "spinach": spinach,
    "beetroot": beetroot, "kale": kale, "thistle": thistle,
}
"""Species name -> geometry builder ``fn(rng, stage) -> [(Mesh, rgb)]``."""

FOOTPRINT: dict[str, tuple[float, float]] = {
    "lettuce": (0.06, 0.14), "onion": (0.04, 0.09), "carrot": (0.06, 0.12), "radish": (0.02, 0.07),
    "grass": (0.05, 0.1), "clover": (0.04, 0.08), "dandelion": (0.06, 0.12), "chickweed": (0.04, 0.07),
    "spinach": (0.07, 0.12), "beetroot": (0.07, 0.13), "kale": (0.09, 0.15), "thistle": (0.07, 0.13),
}
"""Species name -> footprint radius (metres) at growth stage 0 and 1 (about 0.85 of the leaf tips'
reach), used to space plants in layouts."""


def footprint(name: str, stage: float) -> float:
    """Footprint radius (metres) of a plant of species ``name`` at growth ``stage`` in [0, 1]."""
    r0, r1 = FOOTPRINT[name]
    return r0 + (r1 - r0) * stage
