"""Tests of the procedural plant bed: species table, layouts, determinism, masks, randomisation."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import numpy as np
import pybullet as p
import pytest

from sim.bed import create_body
from sim.plants import BUILDERS
from sim.scene import Scene, build_scene, plan_layout
from sim.species import CROPS, FOLDS, SPECIES, WEEDS


@pytest.fixture
def client() -> Iterator[int]:
    c = p.connect(p.DIRECT)
    yield c
    p.disconnect(c)


def _top(client: int, scene: Scene, size: int, x: float, y: float, h: float, fov: float = 60.0):
    """Straight-down view (image up = +y): rgb (size,size,3) uint8 and seg (size,size) int32."""
    view = p.computeViewMatrix([x, y, h], [x, y, 0.0], [0, 1, 0])
    proj = p.computeProjectionMatrixFOV(fov, 1.0, 0.01, 5.0)
    _, _, rgba, _, seg = p.getCameraImage(size, size, view, proj, renderer=p.ER_TINY_RENDERER,
                                          flags=p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX,
                                          physicsClientId=client, **scene.render_kwargs())
    rgb = np.reshape(np.asarray(rgba, np.uint8), (size, size, 4))[..., :3]
    return rgb.copy(), np.reshape(np.asarray(seg, np.int32), (size, size))


def test_species_table_and_folds() -> None:
    assert [s.id for s in SPECIES] == list(range(1, 13))
    assert len(CROPS) == 7 and len(WEEDS) == 5
    assert all(s.fold == (s.id - 1) % 4 for s in SPECIES)
    assert sorted(i for f in FOLDS for i in f) == list(range(1, 13)) and len(FOLDS) == 4
    for fold in FOLDS:
        kinds = {SPECIES[i - 1].kind for i in fold}
        assert kinds == {"crop", "weed"}, fold
    assert len({s.color for s in SPECIES}) == 12
    assert set(BUILDERS) == {s.name for s in SPECIES}


@pytest.mark.parametrize("stage", [0.2, 1.0])
def test_every_species_builds(client: int, stage: float) -> None:
    for s in SPECIES:
        parts = BUILDERS[s.name](np.random.default_rng(s.id), stage)
        tris = sum(len(m.f) for m, _ in parts)
        assert 0 < tris <= 1500, (s.name, tris)  # single-sided count; the body doubles it
        for m, col in parts:
            assert np.isfinite(m.v).all() and m.f.min() >= 0 and m.f.max() < len(m.v)
            assert all(0.0 <= c <= 1.0 for c in col)
        uid = create_body(client, parts, (0.3, 0.3, 0.0), 0.5)
        assert p.getNumJoints(uid, physicsClientId=client) == len(parts) - 1


def test_layout_deterministic_and_seed_dependent() -> None:
    a, b, c = plan_layout(5), plan_layout(5), plan_layout(6)
    assert a == b
    assert a != c
    for q in a:
        assert 0.0 < q.x < 0.75 and 0.0 < q.y < 0.75 and 0.0 <= q.stage <= 1.0


def test_every_species_appears_across_layouts() -> None:
    seen: set[int] = set()
    for seed in range(40):
        layout = plan_layout(seed)
        assert {q.species_id for q in layout} & set(CROPS), seed
        seen |= {q.species_id for q in layout}
    assert seen == set(range(1, 13))


def test_density_scales_weeds() -> None:
    def weeds(d: float) -> int:
        return sum(q.species_id in WEEDS for seed in range(10) for q in plan_layout(seed, d))
    assert weeds(0.0) == 0
    assert weeds(0.5) < weeds(1.0) < weeds(2.5)


def test_plants_do_not_pile_up() -> None:
    for seed in range(10):
        qs = plan_layout(seed)
        for i, a in enumerate(qs):
            for b in qs[i + 1:]:  # within a crop row: spacing >= 0.6 * 0.85 of the summed footprints
                assert np.hypot(a.x - b.x, a.y - b.y) >= 0.45 * (a.radius + b.radius)


def test_same_seed_identical_render(client: int) -> None:
    s1 = build_scene(client, 3)
    img1, seg1 = _top(client, s1, 64, 0.3, 0.4, 0.3)
    p.resetSimulation(physicsClientId=client)
    s2 = build_scene(client, 3)
    img2, seg2 = _top(client, s2, 64, 0.3, 0.4, 0.3)
    assert img1.tobytes() == img2.tobytes() and np.array_equal(seg1, seg2)
    assert [(q.species_id, q.x, q.y) for q in s1.plants] == [(q.species_id, q.x, q.y) for q in s2.plants]
    p.resetSimulation(physicsClientId=client)
    s3 = build_scene(client, 4)
    assert [(q.species_id, q.x) for q in s3.plants] != [(q.species_id, q.x) for q in s1.plants]
    assert _top(client, s3, 64, 0.3, 0.4, 0.3)[0].tobytes() != img1.tobytes()


def test_plant_centre_pixel_carries_its_ids(client: int) -> None:
    scene = build_scene(client, 1)
    assert [q.instance_id for q in scene.plants] == list(range(1, len(scene.plants) + 1))
    hits = 0
    for q in scene.plants:  # its centre shows the plant itself, or a bigger neighbour that covers it
        _, seg = _top(client, scene, 32, q.x, q.y, 0.3, fov=15.0)  # ~2.5 mm per pixel
        species, instance = scene.masks_from_seg(seg)
        assert species.dtype == np.uint8 and instance.dtype == np.uint16
        for k in np.unique(instance[instance > 0]):  # every labelled pixel: species matches its instance
            assert np.all(species[instance == k] == scene.plants[k - 1].species_id)
        assert np.all((species == 0) == (instance == 0))
        window = set(np.unique(instance[14:19, 14:19]).tolist())
        covering = {o.instance_id for o in scene.plants if np.hypot(o.x - q.x, o.y - q.y) < o.radius}
        assert q.instance_id in window or window & (covering - {q.instance_id}), (q, window)
        hits += q.instance_id in window
    assert hits >= 0.75 * len(scene.plants), (hits, len(scene.plants))


def test_masks_from_seg_forms(client: int) -> None:
    scene = build_scene(client, 2, density=0.5)
    q = scene.plants[0]
    seg = np.array([[-1, q.uid, q.uid + (1 << 24)], [q.uid + (3 << 24), scene.static_uids[0], 10_000],
                    [q.uid + (200 << 24) - (1 << 32), -1, -1]], np.int64).astype(np.int32)  # wrapped link
    species, instance = scene.masks_from_seg(seg)
    assert species.tolist() == [[0, q.species_id, q.species_id], [q.species_id, 0, 0], [q.species_id, 0, 0]]
    assert instance.tolist() == [[0, q.instance_id, q.instance_id], [q.instance_id, 0, 0],
                                 [q.instance_id, 0, 0]]


def test_rebuilding_does_not_leak_python_objects(client: int) -> None:
    """pybullet's createVisualShape(vertices=...) leaks its arguments; create_body must not use it."""
    build_scene(client, 0, density=0.3)
    p.resetSimulation(physicsClientId=client)
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(2):
        p.resetSimulation(physicsClientId=client)
        build_scene(client, 0, density=0.3)
    gc.collect()
    assert len(gc.get_objects()) - before < 2000


def test_randomize_changes_image_not_masks(client: int) -> None:
    plain = build_scene(client, 7)
    rgb0, seg0 = _top(client, plain, 64, 0.4, 0.35, 0.3)
    frame = np.full((8, 8, 3), 120, np.uint8)
    assert plain.postprocess(frame, np.random.default_rng(0)) is frame
    assert plain.render_kwargs() == build_scene_kwargs_fixed()
    p.resetSimulation(physicsClientId=client)
    rand = build_scene(client, 7, randomize=True)
    rgb1, seg1 = _top(client, rand, 64, 0.4, 0.35, 0.3)
    assert not np.array_equal(rgb0, rgb1)
    for m0, m1 in zip(plain.masks_from_seg(seg0), rand.masks_from_seg(seg1), strict=True):
        assert np.array_equal(m0, m1)
    out = rand.postprocess(rgb1, np.random.default_rng(0))
    assert out.shape == rgb1.shape and out.dtype == np.uint8 and not np.array_equal(out, rgb1)
    assert np.array_equal(out, rand.postprocess(rgb1, np.random.default_rng(0)))
    assert rand.render_kwargs() != plain.render_kwargs()


def build_scene_kwargs_fixed() -> dict:
    """The fixed light of a plain scene (seed-independent)."""
    c = p.connect(p.DIRECT)
    try:
        return build_scene(c, 123, density=0.0).render_kwargs()
    finally:
        p.disconnect(c)
