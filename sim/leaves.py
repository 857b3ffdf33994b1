"""Triangle-mesh primitives for procedural plants, stones and bed parts (pure numpy, no PyBullet).

All meshes are in a local frame, metres, z up. A :class:`Mesh` holds ``v`` (N, 3) float64 vertices,
``f`` (M, 3) int64 triangle indices (counter-clockwise seen from the front) and optional ``uv``
(N, 2) float64 texture coordinates in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Mesh:
    """Triangle mesh: ``v`` (N,3) float64 metres, ``f`` (M,3) int64, ``uv`` (N,2) float64 or None."""

    v: np.ndarray
    f: np.ndarray
    uv: np.ndarray | None = None

    def transformed(self, rot: np.ndarray, pos: np.ndarray | tuple[float, float, float]) -> Mesh:
        """Return the mesh rotated by ``rot`` (3,3) then translated by ``pos`` (3,) metres."""
        return Mesh(self.v @ np.asarray(rot).T + np.asarray(pos, dtype=np.float64), self.f, self.uv)


def merge(meshes: list[Mesh]) -> Mesh:
    """Concatenate meshes into one (uvs are dropped unless every mesh has them)."""
    meshes = [m for m in meshes if len(m.f)]
    if not meshes:
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    offs = np.cumsum([0] + [len(m.v) for m in meshes[:-1]])
    v = np.concatenate([m.v for m in meshes])
    f = np.concatenate([m.f + o for m, o in zip(meshes, offs, strict=True)])
    uv = np.concatenate([m.uv for m in meshes]) if all(m.uv is not None for m in meshes) else None
    return Mesh(v, f, uv)


def rot_z(a: float) -> np.ndarray:
    """Rotation matrix (3,3) about z by ``a`` radians."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_x(a: float) -> np.ndarray:
    """Rotation matrix (3,3) about x by ``a`` radians."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _centre_line(length: float, n: int, pitch: float, droop: float, start: np.ndarray | None) -> np.ndarray:
    """Points (n+1, 3) along a curve in the xz-plane starting at ``start``: elevation ``pitch`` at the
    base (radians) that bends down by ``droop`` radians towards the tip."""
    t = np.linspace(0.0, 1.0, n + 1)
    theta = pitch - droop * t
    d = length / n
    steps = np.stack([np.cos(theta[:-1]), np.zeros(n), np.sin(theta[:-1])], axis=1) * d
    pts = np.concatenate([np.zeros((1, 3)), np.cumsum(steps, axis=0)])
    return pts + (np.zeros(3) if start is None else start)


def blade(
    length: float,
    half_width: np.ndarray,
    pitch: float,
    droop: float = 0.0,
    cup: float = 0.0,
    wave: float = 0.0,
    waves: float = 6.0,
    twist: float = 0.0,
) -> Mesh:
    """A leaf blade along +x from the origin, width along y.

    Args:
        length: blade length along its midrib, metres.
        half_width: (n+1,) half width at evenly spaced points from base to tip, metres (n segments).
        pitch: elevation of the base above the horizontal, radians.
        droop: how much the midrib bends down towards the tip, radians.
        cup: edge lift as a fraction of the half width (positive = cupped upward).
        wave: edge ruffle amplitude as a fraction of the half width (lettuce, kale).
        waves: number of ruffles along the blade.
        twist: rotation of the blade about its midrib at the tip, radians (grass).
    """
    w = np.asarray(half_width, dtype=np.float64)
    n = len(w) - 1
    c = _centre_line(length, n, pitch, droop, None)
    t = np.linspace(0.0, 1.0, n + 1)
    tw = twist * t
    side = np.stack([np.zeros(n + 1), np.cos(tw), np.sin(tw)], axis=1)
    ruffle = wave * np.sin(2 * np.pi * waves * t + 0.7)
    up = np.array([0.0, 0.0, 1.0])
    left = c + side * w[:, None] + up * (w * (cup + ruffle))[:, None]
    right = c - side * w[:, None] + up * (w * (cup - ruffle))[:, None]
    v = np.concatenate([c, left, right])
    i = np.arange(n)
    cl, cr = i, i + 1
    ll, lr = n + 1 + i, n + 2 + i
    rl, rr = 2 * n + 2 + i, 2 * n + 3 + i
    f = np.concatenate([
        np.stack([cl, ll, lr], 1), np.stack([cl, lr, cr], 1),
        np.stack([cl, rr, rl], 1), np.stack([cl, cr, rr], 1),
    ])
    return Mesh(v, f)


def profile(n: int, kind: str, teeth: int = 0, depth: float = 0.0) -> np.ndarray:
    """Normalised half-width profile (n+1,) in [0, 1] from base to tip.

    ``kind``: ``"oval"`` (widest mid), ``"obovate"`` (widest towards the tip, lettuce/dandelion),
    ``"lance"`` (narrow, long taper), ``"round"`` (cotyledon), ``"grass"`` (nearly parallel, pointed).
    ``teeth`` sawtooth lobes of relative ``depth`` cut into the edge (dandelion, thistle).
    """
    t = np.linspace(0.0, 1.0, n + 1)
    if kind == "oval":
        p = np.sin(np.pi * t) ** 0.8
    elif kind == "obovate":
        p = np.sin(np.pi * t**1.6) ** 0.7
    elif kind == "lance":
        p = np.sin(np.pi * t**0.7) ** 1.2
    elif kind == "round":
        p = np.sqrt(np.clip(1.0 - (2 * t - 1) ** 2, 0.0, 1.0))
    elif kind == "grass":
        p = np.clip((1.0 - t) * 1.6, 0.0, 1.0) * np.clip(t * 8.0, 0.3, 1.0)
    else:
        raise ValueError(f"unknown profile {kind!r}; use oval, obovate, lance, round or grass")
    if teeth:
        saw = (t * teeth) % 1.0
        p = p * (1.0 - depth * saw)
    p[-1] = 0.0
    return p


def tube(length: float, radius: float, pitch: float, droop: float, n: int = 5, sides: int = 4) -> Mesh:
    """A tapering hollow tube along +x from the origin (onion leaf), ``n`` segments, ``sides`` facets."""
    c = _centre_line(length, n, pitch, droop, None)
    t = np.linspace(0.0, 1.0, n + 1)
    r = radius * (1.0 - t**1.5)
    d = np.gradient(c, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    b = np.cross(d, [0.0, 1.0, 0.0])
    a = np.tile([0.0, 1.0, 0.0], (n + 1, 1))
    ang = 2 * np.pi * np.arange(sides) / sides
    ring = (np.cos(ang)[None, :, None] * a[:, None] + np.sin(ang)[None, :, None] * b[:, None])
    v = (c[:, None] + ring * r[:, None, None]).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n), np.arange(sides), indexing="ij")
    j2 = (j + 1) % sides
    p00, p01 = i * sides + j, i * sides + j2
    p10, p11 = (i + 1) * sides + j, (i + 1) * sides + j2
    f = np.concatenate([np.stack([p00, p10, p11], -1), np.stack([p00, p11, p01], -1)]).reshape(-1, 3)
    return Mesh(v, f)


def stalk(length: float, width: float, pitch: float, droop: float = 0.0, n: int = 2) -> Mesh:
    """A thin flat stalk (petiole, stem) along +x from the origin, ``width`` metres wide."""
    return blade(length, np.full(n + 1, width / 2), pitch, droop)


def tip_of(length: float, pitch: float, droop: float, n: int) -> np.ndarray:
    """End point (3,) of the centre line used by :func:`blade`/:func:`stalk` with the same arguments."""
    return _centre_line(length, n, pitch, droop, None)[-1]


def rock(radius: float, rng: np.random.Generator, squash: float = 0.6) -> Mesh:
    """A lumpy low-poly stone (subdivided octahedron, 32 triangles) of about ``radius`` metres,
    flattened in z by ``squash``."""
    v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)
    f = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    mids: dict[tuple[int, int], int] = {}
    verts = list(v)
    faces = []
    for a, b, c in f:
        m = []
        for e in ((a, b), (b, c), (c, a)):
            k = (min(e), max(e))
            if k not in mids:
                mids[k] = len(verts)
                verts.append((verts[e[0]] + verts[e[1]]) / 2)
            m.append(mids[k])
        faces += [[a, m[0], m[2]], [m[0], b, m[1]], [m[2], m[1], c], [m[0], m[1], m[2]]]
    vv = np.array(verts)
    vv /= np.linalg.norm(vv, axis=1, keepdims=True)
    vv *= radius * rng.uniform(0.8, 1.2, (len(vv), 1))
    vv[:, 2] *= squash
    return Mesh(vv, np.array(faces, np.int64))


def box(lo: tuple[float, float, float], hi: tuple[float, float, float], uv_scale: float = 4.0) -> Mesh:
    """Axis-aligned box from ``lo`` to ``hi`` (metres) with 6 flat faces (12 triangles) and uvs that
    run along the box's longest horizontal axis, ``uv_scale`` texture repeats per metre."""
    lo_a, hi_a = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    long_ax = 0 if hi_a[0] - lo_a[0] >= hi_a[1] - lo_a[1] else 1
    vs, fs, uvs = [], [], []
    for ax in range(3):
        for sgn in (0, 1):
            u_ax, w_ax = [a for a in range(3) if a != ax]
            corners = []
            for cu, cw in ((0, 0), (1, 0), (1, 1), (0, 1)):
                p = lo_a.copy()
                p[ax] = (lo_a if sgn == 0 else hi_a)[ax]
                p[u_ax] = (lo_a if cu == 0 else hi_a)[u_ax]
                p[w_ax] = (lo_a if cw == 0 else hi_a)[w_ax]
                corners.append(p)
            base = len(vs)
            vs += corners
            q = [(c[long_ax] * uv_scale, (c[2] + c[1 - long_ax]) * uv_scale) for c in corners]
            uvs += q
            normal = np.zeros(3)
            normal[ax] = 1.0 if sgn else -1.0
            e1, e2 = corners[1] - corners[0], corners[3] - corners[0]
            quad = [[0, 1, 2], [0, 2, 3]] if np.cross(e1, e2) @ normal > 0 else [[0, 2, 1], [0, 3, 2]]
            fs += [[base + a, base + b, base + c] for a, b, c in quad]
    return Mesh(np.array(vs), np.array(fs, np.int64), np.array(uvs))


def grid(x0: float, y0: float, x1: float, y1: float, n: int, z: np.ndarray | None = None) -> Mesh:
    """A horizontal (n+1)x(n+1) vertex grid over [x0,x1]x[y0,y1] with optional heights ``z``
    ((n+1,n+1) metres, indexed [iy, ix]); uvs map the rectangle to [0,1]^2."""
    xs, ys = np.linspace(x0, x1, n + 1), np.linspace(y0, y1, n + 1)
    gx, gy = np.meshgrid(xs, ys)
    gz = np.zeros_like(gx) if z is None else z
    v = np.stack([gx, gy, gz], -1).reshape(-1, 3)
    uv = np.stack([(gx - x0) / (x1 - x0), (gy - y0) / (y1 - y0)], -1).reshape(-1, 2)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = i * (n + 1) + j
    f = np.concatenate([np.stack([a, a + 1, a + n + 2], -1), np.stack([a, a + n + 2, a + n + 1], -1)])
    return Mesh(v, f.reshape(-1, 3), uv)


def vertex_normals(m: Mesh) -> np.ndarray:
    """Area-weighted unit vertex normals (N,3) of a mesh."""
    a, b, c = m.v[m.f[:, 0]], m.v[m.f[:, 1]], m.v[m.f[:, 2]]
    fn = np.cross(b - a, c - a)
    n = np.zeros_like(m.v)
    for k in range(3):
        np.add.at(n, m.f[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(norm > 1e-12, n / np.maximum(norm, 1e-12), np.array([0.0, 0.0, 1.0]))
    return n


def obj_text(m: Mesh, double_sided: bool = True) -> str:
    """Wavefront OBJ text of a mesh with vertex normals (and uvs when present), positions to 0.01 mm.
    ``double_sided`` adds a back copy with flipped winding and normals so thin leaves are visible and lit
    from both sides."""
    n = vertex_normals(m)
    v, f, uv = m.v, m.f, m.uv
    if double_sided:
        f = np.concatenate([f, f[:, ::-1] + len(v)])
        v = np.concatenate([v, v])
        n = np.concatenate([n, -n])
        uv = None if uv is None else np.concatenate([uv, uv])
    out = [("v %.5f %.5f %.5f\n" * len(v)) % tuple(v.ravel()),
           ("vn %.4f %.4f %.4f\n" * len(n)) % tuple(n.ravel())]
    k = f.reshape(-1) + 1
    if uv is None:
        out.append(("f %d//%d %d//%d %d//%d\n" * len(f)) % tuple(np.repeat(k, 2).tolist()))
    else:
        out.append(("vt %.5f %.5f\n" * len(uv)) % tuple(uv.ravel()))
        out.append(("f %d/%d/%d %d/%d/%d %d/%d/%d\n" * len(f)) % tuple(np.repeat(k, 3).tolist()))
    return "".join(out)
