"""Render the documentation previews of the plant bed: ``python -m sim.preview --out docs``.

Writes ``bed_rgb.png`` (top-down view of a whole bed, 512x512 RGB) and ``bed_species.png`` (the species
mask of the same view, colour-coded, with a legend). ``--views`` also writes 64x64 and 256x256 frames from
0.3 m above the soil and prints the render rate of each (TinyRenderer, CPU).
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
import pybullet as p

from sim.scene import Scene, build_scene
from sim.species import SPECIES


def render_top(client: int, scene: Scene, size: int, centre: tuple[float, float], height: float,
               fov: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Straight-down render from ``height`` metres above the soil at world ``centre`` (x, y), image up = +y.

    Returns (rgb (size, size, 3) uint8, seg (size, size) int32 with uid + ((link + 1) << 24), -1 = none)."""
    view = p.computeViewMatrix([centre[0], centre[1], height], [centre[0], centre[1], 0.0], [0, 1, 0])
    proj = p.computeProjectionMatrixFOV(fov, 1.0, 0.01, 5.0)
    _, _, rgba, _, seg = p.getCameraImage(size, size, view, proj, renderer=p.ER_TINY_RENDERER,
                                          flags=p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX,
                                          physicsClientId=client, **scene.render_kwargs())
    rgb = np.reshape(np.asarray(rgba, np.uint8), (size, size, 4))[..., :3]
    return np.ascontiguousarray(rgb), np.reshape(np.asarray(seg, np.int32), (size, size))


def species_image(species: np.ndarray, legend: bool = True) -> np.ndarray:
    """Colour-code a species mask (H, W) uint8 -> (H, W [+ 190 legend], 3) uint8 RGB; 0 (no plant) = grey."""
    lut = np.full((256, 3), 40, np.uint8)
    for s in SPECIES:
        lut[s.id] = s.color
    img = lut[species]
    if not legend:
        return img
    h = img.shape[0]
    panel = np.full((h, 190, 3), 255, np.uint8)
    row = max(18, min(36, h // (len(SPECIES) + 1)))
    for i, s in enumerate(SPECIES):
        y = 10 + i * row
        cv2.rectangle(panel, (10, y), (10 + row - 8, y + row - 8), s.color, -1)
        cv2.rectangle(panel, (10, y), (10 + row - 8, y + row - 8), (0, 0, 0), 1)
        cv2.putText(panel, f"{s.id} {s.name} ({s.kind})", (row + 10, y + row - 12),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([img, panel], axis=1)


def _save(path: str, rgb: np.ndarray) -> None:
    cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--out", default="docs", help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--randomize", action="store_true")
    ap.add_argument("--density", type=float, default=1.0)
    ap.add_argument("--views", action="store_true", help="also write 64/256 px views from 0.3 m, with fps")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    client = p.connect(p.DIRECT)
    try:
        scene = build_scene(client, a.seed, a.randomize, a.density)
        h = 0.4 / np.tan(np.radians(30.0))  # fov 60: the bed and its boards fill the frame
        rgb, seg = render_top(client, scene, a.size, (0.375, 0.375), h)
        rgb = scene.postprocess(rgb, np.random.default_rng(a.seed))
        _save(os.path.join(a.out, "bed_rgb.png"), rgb)
        _save(os.path.join(a.out, "bed_species.png"), species_image(scene.masks_from_seg(seg)[0]))
        print(f"seed {a.seed}: {len(scene.plants)} plants -> {a.out}/bed_rgb.png, {a.out}/bed_species.png")
        if a.views:
            for size in (64, 256):
                n = 40 if size == 64 else 8
                t = time.perf_counter()
                for _ in range(n):
                    rgb, _ = render_top(client, scene, size, (0.3, 0.4), 0.3)
                fps = n / (time.perf_counter() - t)
                _save(os.path.join(a.out, f"view_{size}.png"), rgb)
                print(f"{size}x{size} from 0.3 m: {fps:.0f} fps (TinyRenderer)")
    finally:
        p.disconnect(client)


if __name__ == "__main__":
    main()
