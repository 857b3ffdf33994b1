"""The static part of the plant bed: procedural textures, soil, wooden boards, ground path and stones,
plus :func:`create_body`, which turns coloured meshes into one PyBullet multibody.

World frame, metres, z up. The bed's soil spans x, y in [0, 0.75] at z ~ 0 (a few mm of relief); boards
stand around it (top at z = +0.04) and the gravel path lies 0.16 m lower, reaching 0.9 m beyond the bed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading

import cv2
import numpy as np
import pybullet as p

from sim.leaves import Mesh, box, grid, merge, obj_text, rock

BED = 0.75
"""Bed side length, metres."""
BOARD_T, BOARD_TOP, GROUND_Z, PATH_W = 0.035, 0.04, -0.16, 0.9
_TEX_PATHS: dict[str, str] = {}
_MESH_DIR: str | None = None
_LOCK = threading.Lock()


def _fbm(rng: np.random.Generator, size: int, cells: int, octaves: int) -> np.ndarray:
    """Seamlessly tiling fractal value noise (size, size) float32, roughly zero mean, unit-ish amplitude."""
    out = np.zeros((size, size), np.float32)
    amp = 1.0
    for k in range(octaves):
        c = cells * 2**k
        g = np.tile(rng.normal(0, 1, (c, c)).astype(np.float32), (3, 3))
        up = cv2.resize(g, (3 * size, 3 * size), interpolation=cv2.INTER_CUBIC)
        out += amp * up[size:2 * size, size:2 * size]
        amp *= 0.55
    return out / 1.6


def _speckle(rng: np.random.Generator, img: np.ndarray, n: int, rmax: int, colors: np.ndarray) -> None:
    """Draw ``n`` small irregular blobs (pebbles, grains) of random ``colors`` (K,3) into img in place."""
    s = img.shape[0]
    for _ in range(n):
        c = colors[rng.integers(len(colors))] * rng.uniform(0.8, 1.15)
        x, y = rng.integers(0, s, 2)
        r = int(rng.integers(1, rmax + 1))
        axes = (r, max(1, int(r * rng.uniform(0.5, 1.0))))
        cv2.ellipse(img, (int(x), int(y)), axes, float(rng.uniform(0, 180)), 0, 360,
                    tuple(float(v) for v in np.clip(c * 0.7, 0, 255)), -1)
        cv2.ellipse(img, (int(x) - 1, int(y) - 1), (max(1, axes[0] - 1), max(1, axes[1] - 1)),
                    0.0, 0, 360, tuple(float(v) for v in np.clip(c, 0, 255)), -1)


def make_texture(name: str, size: int = 512) -> np.ndarray:
    """Procedural texture ``name`` in {"soil", "gravel", "wood"}: (size, size, 3) uint8 RGB, fixed seed."""
    rng = np.random.default_rng({"soil": 11, "gravel": 12, "wood": 13}[name])
    if name == "soil":
        n = _fbm(rng, size, 4, 5)
        moist = _fbm(rng, size, 3, 2)
        lumps = _fbm(rng, size, 24, 2)
        relief = np.roll(lumps, 2, axis=(0, 1)) - lumps  # emboss: lit and shaded sides of crumbs
        base = np.array([84, 60, 42], np.float32) * (1 + 0.2 * n[..., None] + 0.25 * relief[..., None])
        base *= (1 - 0.25 * np.clip(moist, 0, None))[..., None]
        img = base.copy()
        crumbs = np.array([[120, 95, 70], [55, 38, 27], [150, 140, 125]], np.float32)
        _speckle(rng, img, 900 * (size // 512) ** 2, 2, crumbs)
        _speckle(rng, img, 60 * (size // 512) ** 2, 5, np.array([[100, 76, 55], [75, 54, 38]], np.float32))
        img = img + rng.normal(0, 7, (size, size, 1)).astype(np.float32)
    elif name == "gravel":
        n = _fbm(rng, size, 8, 3)
        img = np.array([150, 142, 128], np.float32) * (1 + 0.1 * n[..., None])
        _speckle(rng, img, 4000, 5, np.array([[175, 168, 155], [120, 112, 100], [160, 140, 115],
                                               [95, 90, 85]], np.float32))
        img = img + rng.normal(0, 6, (size, size, 1)).astype(np.float32)
    elif name == "wood":
        n = _fbm(rng, size, 4, 4)
        y = np.linspace(0, 1, size, dtype=np.float32)[:, None]
        rings = np.sin(2 * np.pi * (y * 18 + 0.6 * n)) * 0.5 + 0.5
        img = np.array([150, 108, 68], np.float32) * (0.8 + 0.25 * rings[..., None])
        img = img + rng.normal(0, 4, (size, size, 1)).astype(np.float32)
    else:
        raise ValueError(f"unknown texture {name!r}; use soil, gravel or wood")
    return np.clip(img, 0, 255).astype(np.uint8)


def texture_path(name: str) -> str:
    """PNG file of :func:`make_texture` (written once per process into the temp dir)."""
    if name not in _TEX_PATHS:
        path = os.path.join(tempfile.gettempdir(), f"microfarm_{name}_{os.getpid()}.png")
        img = make_texture(name, 1024 if name == "soil" else 512)
        cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        _TEX_PATHS[name] = path
    return _TEX_PATHS[name]


def _mesh_dir() -> str:
    global _MESH_DIR
    if _MESH_DIR is None:
        _MESH_DIR = tempfile.mkdtemp(prefix=f"microfarm_mesh_{os.getpid()}_")
        atexit.register(shutil.rmtree, _MESH_DIR, True)
    return _MESH_DIR


def create_body(client: int, parts: list[tuple[Mesh, tuple[float, ...]]], pos: tuple[float, float, float],
                yaw: float = 0.0, double_sided: bool = True) -> int:
    """One static multibody (mass 0, no collision) from coloured meshes; returns its uid.

    ``parts``: [(mesh in the body frame, rgb or rgba floats in [0, 1])]; the first part is the base's visual,
    the others become fixed links 0..K-2 (so the segmentation link index tells the parts apart).
    ``pos``: body origin in the world (metres); ``yaw``: rotation about z (radians).

    The meshes go through temporary OBJ files with PyBullet's file cache switched off for ``client``
    (``enableFileCaching=0``): pybullet 3.2.6's ``createVisualShape(vertices=...)`` leaks its Python
    arguments (about 10 MB per bed), whereas loaded OBJ files are freed by ``resetSimulation``.
    """
    p.setPhysicsEngineParameter(enableFileCaching=0, physicsClientId=client)
    vis = []
    with _LOCK:  # the files are reused: write, load and build one body at a time
        for k, (mesh, col) in enumerate(parts):
            path = os.path.join(_mesh_dir(), f"part{k}.obj")
            with open(path, "w") as fh:
                fh.write(obj_text(mesh, double_sided))
            rgba = list(col) + [1.0] * (4 - len(col))
            vis.append(p.createVisualShape(p.GEOM_MESH, fileName=path, rgbaColor=rgba, physicsClientId=client))
        k = len(vis) - 1
        return p.createMultiBody(
            baseMass=0, baseCollisionShapeIndex=-1, baseVisualShapeIndex=vis[0], basePosition=pos,
            baseOrientation=p.getQuaternionFromEuler([0, 0, yaw]),
            linkMasses=[0] * k, linkCollisionShapeIndices=[-1] * k, linkVisualShapeIndices=vis[1:],
            linkPositions=[[0, 0, 0]] * k, linkOrientations=[[0, 0, 0, 1]] * k,
            linkInertialFramePositions=[[0, 0, 0]] * k, linkInertialFrameOrientations=[[0, 0, 0, 1]] * k,
            linkParentIndices=[0] * k, linkJointTypes=[p.JOINT_FIXED] * k, linkJointAxis=[[0, 0, 1]] * k,
            physicsClientId=client)


def _textured(client: int, mesh: Mesh, tex: str, rgba: list[float]) -> int:
    uid = create_body(client, [(mesh, tuple(rgba))], (0.0, 0.0, 0.0), double_sided=False)
    tid = p.loadTexture(texture_path(tex), physicsClientId=client)
    p.changeVisualShape(uid, -1, textureUniqueId=tid, physicsClientId=client)
    return uid


def build_bed(client: int, rng: np.random.Generator, soil_rgba: list[float]) -> list[int]:
    """Soil, boards and path into ``client``; returns their uids. ``rng`` draws the soil relief and the
    texture offset; ``soil_rgba`` multiplies the soil texture (tint)."""
    n = 12
    relief = 0.004 * _fbm(rng, n + 1, 2, 2).astype(np.float64)
    soil = grid(0.0, 0.0, BED, BED, n, relief)
    off = rng.uniform(0, 1, 2)
    soil.uv = soil.uv + off  # the 1024 px seamless texture covers the bed once (0.73 mm / px)
    lo, hi = -BOARD_T, BED + BOARD_T
    boards = merge([
        box((lo, lo, GROUND_Z), (hi, 0.0, BOARD_TOP)), box((lo, BED, GROUND_Z), (hi, hi, BOARD_TOP)),
        box((lo, 0.0, GROUND_Z), (0.0, BED, BOARD_TOP)), box((BED, 0.0, GROUND_Z), (hi, BED, BOARD_TOP)),
    ])
    g0, g1 = -PATH_W, BED + PATH_W
    ground = grid(g0, g0, g1, g1, 4, np.full((5, 5), GROUND_Z))
    ground.uv = ground.uv * (g1 - g0) / 0.5  # one texture tile per 0.5 m
    return [_textured(client, soil, "soil", soil_rgba), _textured(client, boards, "wood", [1, 1, 1, 1]),
            _textured(client, ground, "gravel", [1, 1, 1, 1])]


def build_stones(client: int, rng: np.random.Generator, count: int) -> int:
    """``count`` stones scattered over the bed (plus a few on the path) as one body; returns its uid."""
    greys = [(0.55, 0.53, 0.5), (0.62, 0.56, 0.48), (0.42, 0.4, 0.38)]
    groups: list[list[Mesh]] = [[] for _ in greys]
    for i in range(count + 6):
        r = rng.uniform(0.006, 0.022) * (1.0 if rng.random() < 0.85 else 1.8)
        if i < count:
            x, y = rng.uniform(0.02, BED - 0.02, 2)
            z = -0.3 * r
        else:
            side = rng.integers(4)
            t, d = rng.uniform(-0.3, BED + 0.3), rng.uniform(0.08, 0.6)
            x, y = [(t, -d), (t, BED + d), (-d, t), (BED + d, t)][side]
            z = GROUND_Z - 0.3 * r
        m = rock(r, rng, rng.uniform(0.45, 0.8))
        c, s = np.cos(rng.uniform(0, 6.3)), np.sin(rng.uniform(0, 6.3))
        groups[int(rng.integers(len(greys)))].append(
            m.transformed(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]), (x, y, z)))
    parts = [(merge(g), col) for g, col in zip(groups, greys, strict=True) if g]
    return create_body(client, parts, (0.0, 0.0, 0.0), double_sided=False)
