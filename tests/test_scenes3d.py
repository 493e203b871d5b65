"""Ray-cast metric-depth scenes and their simulated depth sources: ray-casting geometry against closed forms,
determinism, focal-length bands, the noise and coverage statistics of each source, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.synthetic.scenes3d import (
    HELD_OUT_BANDS,
    SOURCES,
    TRAIN_BANDS,
    Box,
    Camera,
    Plane,
    Sphere,
    generate,
    ray_cast,
    render_scene,
    simulate_source,
)

GROUND = Plane((0.0, 0.0, 0.0), (0.0, 1.0, 0.0))

# ---------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("f_px", [12.0, 80.0])
def test_fronto_parallel_wall_has_its_distance_as_depth_and_ground_rows_the_closed_form(f_px):
    height, width, cam_h, wall = 24, 32, 1.5, 7.0
    camera = Camera(f_px=f_px, height_m=cam_h, pitch_rad=0.0)
    depth, index, normal, point = ray_cast(camera, (height, width), [GROUND, Plane((0, 0, wall), (0, 0, -1))])
    assert (index[: height // 2] == 1).all()  # everything above the horizon is wall
    np.testing.assert_allclose(depth[index == 1], wall, rtol=1e-12)  # z-depth, the same at the corners
    np.testing.assert_allclose(normal[index == 1], np.broadcast_to([0, 0, -1], normal[index == 1].shape), atol=1e-12)
    v = np.arange(height) + 0.5 - height / 2  # pixel offsets below the principal point
    ground = index == 0
    closed = np.broadcast_to((cam_h * f_px / np.where(v > 0, v, np.nan))[:, None], depth.shape)
    assert ground.any() == (cam_h * f_px / v[-1] < wall)
    np.testing.assert_allclose(depth[ground], closed[ground], rtol=1e-12)
    np.testing.assert_allclose(point[ground][:, 1], 0, atol=1e-9)


def test_pitched_and_turned_camera_sees_ground_depth_per_row_and_sky_above_the_horizon():
    height, width, f_px, cam_h, pitch = 32, 24, 16.0, 2.0, 0.3
    camera = Camera(f_px=f_px, height_m=cam_h, pitch_rad=pitch, yaw_rad=0.2)
    depth, index, normal, _ = ray_cast(camera, (height, width), [GROUND])
    v = np.arange(height) + 0.5 - height / 2
    denominator = v / f_px * np.cos(pitch) + np.sin(pitch)  # the ray's downward slope per unit of z-depth
    expected = np.where(denominator > 0, cam_h / np.where(denominator > 0, denominator, 1), np.inf)
    np.testing.assert_allclose(depth, np.broadcast_to(expected[:, None], depth.shape), rtol=1e-12)
    sky = ~np.isfinite(depth)
    assert sky[0].all() and not sky[-1].any()
    assert (index[sky] == -1).all() and (normal[sky] == 0).all()
    np.testing.assert_allclose(normal[~sky], np.broadcast_to([0, 1, 0], normal[~sky].shape), atol=1e-12)


def test_box_front_face_and_sphere_tip_depths_and_normals():
    camera = Camera(f_px=4.0, height_m=1.2, pitch_rad=0.0)
    box = Box((-3.2, 0.0, 4.0), (-0.8, 2.5, 5.0))  # its front face spans columns 1-3 and rows 3-5
    sphere = Sphere((0.0, 1.2, 6.0), 0.5)  # centred on the optical axis
    depth, index, normal, _ = ray_cast(camera, (9, 9), [GROUND, box, sphere])
    assert index[4, 4] == 2  # the odd-sized image's centre pixel is the optical axis
    assert depth[4, 4] == pytest.approx(5.5, abs=1e-12)
    np.testing.assert_allclose(normal[4, 4], [0, 0, -1], atol=1e-12)
    front = index == 1
    np.testing.assert_array_equal(np.argwhere(front), [(r, c) for r in (3, 4, 5) for c in (1, 2, 3)])
    np.testing.assert_allclose(depth[front], 4.0, rtol=1e-12)
    np.testing.assert_allclose(normal[front], np.broadcast_to([0, 0, -1], normal[front].shape), atol=1e-12)


def test_rendered_scene_is_physically_plausible():
    for seed in range(6):
        scene = render_scene(seed, size=(32, 40))
        depth, camera = scene["depth"], scene["camera"]
        assert scene["rgb"].shape == (32, 40, 3) and scene["rgb"].dtype == np.uint8
        assert depth.shape == (32, 40) and depth.dtype == np.float32
        finite = depth[np.isfinite(depth)]
        assert finite.size > 0 and np.isposinf(depth[~np.isfinite(depth)]).all()
        assert 0.3 < finite.min() and finite.max() < 60
        assert 0.5 <= camera.height_m <= 3.0 and np.radians(-5) <= camera.pitch_rad <= np.radians(30)
        assert scene["f_px"] == camera.f_px and 0.5 * 40 <= camera.f_px <= 2.0 * 40


# ---------------------------------------------------------------------------- determinism and bands


def test_samples_are_determined_by_seed_and_index():
    a = generate(3, seed=7, size=(16, 16))
    b = generate(5, seed=7, size=(16, 16))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key][:3])
    np.testing.assert_array_equal(a["rgb"][1], render_scene([7, 1], size=(16, 16))["rgb"])
    c = generate(3, seed=8, size=(16, 16))
    assert not np.array_equal(a["rgb"], c["rgb"]) and not np.array_equal(a["depth"], c["depth"])
    depth = render_scene(3, size=(16, 16))["depth"]
    for kind in SOURCES:
        first = simulate_source(depth, kind, np.random.default_rng(5))
        np.testing.assert_array_equal(first, simulate_source(depth, kind, np.random.default_rng(5)))


def test_generate_contract_and_source_restriction():
    out = generate(6, seed=1, size=(16, 24), sources=("tof", "mvs"))
    assert out["rgb"].shape == (6, 16, 24, 3) and out["rgb"].dtype == np.uint8
    assert out["depth"].dtype == out["source"].dtype == out["f_px"].dtype == np.float32
    assert out["kind"].dtype == np.int64 and set(out["kind"]) <= {SOURCES.index("tof"), SOURCES.index("mvs")}
    assert np.isfinite(out["depth"]).all() and np.isfinite(out["source"]).all() and (out["source"] >= 0).all()
    assert (out["source"][out["depth"] == 0] == 0).all()
    everything = generate(6, seed=1, size=(16, 24))
    np.testing.assert_array_equal(out["depth"], everything["depth"])  # the sources change, the scenes do not


def test_train_and_held_out_bands_tile_the_range_and_interleave():
    bands = sorted(TRAIN_BANDS + HELD_OUT_BANDS)
    assert bands[0][0] == 0.5 and bands[-1][1] == 2.0
    assert all(hi == lo for (_, hi), (lo, _) in zip(bands, bands[1:]))  # contiguous and disjoint
    for lo, hi in HELD_OUT_BANDS:
        assert any(t_hi <= lo for _, t_hi in TRAIN_BANDS) and any(t_lo >= hi for t_lo, _ in TRAIN_BANDS)


@pytest.mark.parametrize("bands", [HELD_OUT_BANDS, TRAIN_BANDS])
def test_focal_lengths_are_drawn_inside_the_bands(bands):
    ratios = np.array([render_scene(s, size=(8, 10), bands=bands)["f_px"] / 10 for s in range(40)])
    inside = np.zeros(len(ratios), bool)
    for lo, hi in bands:
        inside |= (ratios >= lo) & (ratios < hi)
    assert inside.all()
    assert len({int(np.searchsorted([lo for lo, _ in bands], r, "right")) for r in ratios}) == len(bands)
    assert render_scene(0, size=(8, 10), f_over_w=(1.3, 1.3))["f_px"] == pytest.approx(13.0)


# ---------------------------------------------------------------------------- sources


def _columns(lo: float, hi: float, size: int = 64) -> np.ndarray:
    """[size, size] depth growing linearly across columns, the same in every row."""
    return np.broadcast_to(np.linspace(lo, hi, size)[None, :], (size, size)).copy()


def test_lidar_measures_whole_scanlines_within_20_m_with_2_cm_noise():
    truth = _columns(2.0, 30.0)
    truth[:, :4] = np.inf
    errors = []
    for seed in range(4):
        measured = simulate_source(truth, "lidar", np.random.default_rng(seed))
        rows = np.flatnonzero((measured > 0).any(1))
        assert 16 <= len(rows) <= 32 and np.ptp(np.diff(rows)) <= 1  # evenly spaced lines
        on_line = np.zeros(truth.shape, bool)
        on_line[rows] = True
        np.testing.assert_array_equal(measured > 0, on_line & (truth <= 20))
        errors.append((measured - truth)[measured > 0])
    errors = np.concatenate(errors)
    assert abs(errors.mean()) < 0.003 and 0.018 < errors.std() < 0.022


def test_tof_is_dense_within_5_m_with_1_percent_noise_and_holes_at_edges():
    rows = np.arange(64)[:, None]
    truth = np.broadcast_to(1 / (0.1 + 0.9 * rows / 63), (64, 64)).copy()  # a slanted floor, 10 m to 1 m
    truth[:, 40:] = 2.0  # an object standing in front of part of it
    measured = simulate_source(truth, "tof", np.random.default_rng(0))
    assert not (measured[truth > 5] > 0).any()
    floor = (truth <= 4.5) & (np.arange(64)[None, :] < 36)
    assert (measured[floor] > 0).all()  # no false holes on the slanted plane
    edge = (truth[:, 39] < 1.8) | (truth[:, 39] > 2.2)
    assert not (measured[edge, 39:41] > 0).any()
    assert (measured[:, 42:] > 0).all()
    relative = measured[measured > 0] / truth[measured > 0] - 1
    assert abs(relative.mean()) < 0.002 and 0.009 < relative.std() < 0.011


def test_mvs_is_off_by_one_scale_per_image_and_has_blob_holes():
    truth = _columns(3.0, 8.0)
    truth[:8] = np.inf
    medians = []
    for seed in range(8):
        measured = simulate_source(truth, "mvs", np.random.default_rng(seed))
        assert not (measured[:8] > 0).any()
        hole = (measured[8:] == 0).mean()
        assert 0.0 < hole <= 0.25
        inner = measured[12:-4, 4:-4]
        ratio = inner[inner > 0] / truth[12:-4, 4:-4][inner > 0]
        assert np.ptp(ratio) < 1e-3  # one scale over the whole image
        medians.append(np.median(ratio))
    assert all(0.9 <= m <= 1.1 for m in medians) and np.std(medians) > 0.01
    full = simulate_source(_columns(3.0, 8.0), "mvs", np.random.default_rng(0))
    assert 0.04 <= (full == 0).mean() <= 0.21


def test_rendered_is_the_truth_and_every_source_leaves_invalid_pixels_empty():
    truth = 1 / _columns(2.0, 0.025, 32)  # a plane slanting away from 0.5 m to 40 m
    truth[:3], truth[3, :5], truth[4, :5] = np.inf, np.nan, -1.0
    valid = np.isfinite(truth) & (truth > 0)
    rendered = simulate_source(truth, "rendered", np.random.default_rng(0))
    np.testing.assert_array_equal(rendered[valid], truth[valid].astype(np.float32))
    for kind in SOURCES:
        measured = simulate_source(truth, kind, np.random.default_rng(1))
        assert measured.dtype == np.float32 and np.isfinite(measured).all() and (measured >= 0).all()
        assert not (measured[~valid] > 0).any() and (measured > 0).any()


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: simulate_source(np.ones((8, 8)), "sonar", np.random.default_rng(0)), "unknown depth source"),
        (lambda: generate(1, 0, sources=("lidar", "radar")), "unknown depth source"),
        (lambda: generate(1, 0, sources=()), "sources is empty"),
        (lambda: render_scene(0, size=(4, 64)), "at least 8"),
        (lambda: generate(1, 0, size=(8, 7)), "at least 8"),
        (lambda: render_scene(0, bands=[]), "bands is empty"),
        (lambda: render_scene(0, bands=[(1.0, 0.9)]), "invalid f/W band"),
        (lambda: render_scene(0, bands=[(0.5, 1.0), (0.9, 1.5)]), "overlap"),
        (lambda: render_scene(0, f_over_w=(0.0, 1.0)), "f_over_w"),
    ],
)
def test_bad_input_raises_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
