"""Readers of real metric depth (datamodules/images/depth.py): PFM, Middlebury 2014 scenes, Metric3D listings, and
what they do with bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from PIL import Image

from datamodules.images.depth import (
    read_metric3d_frames,
    read_middlebury_calib,
    read_middlebury_scene,
    read_pfm,
    scan_depth_frames,
)

CALIB = "\n".join(  # Middlebury's stray spaces around keys and values, as in the real files
    ["cam0=[ 500.0 0 20 ; 0 500.0 15 ; 0 0 1 ] ", "cam1=[ 500.0 0 25 ; 0 500.0 15 ; 0 0 1 ]", " doffs= 5.0 ",
     "baseline= 100.0", " width= 40", ""]
)  # fmt: skip


def write_pfm(path: Path, array: np.ndarray, little: bool = True) -> None:
    h, w = array.shape
    with open(path, "wb") as handle:
        handle.write(f"Pf\n{w} {h}\n{-1.0 if little else 1.0}\n".encode())
        handle.write(np.flipud(array).astype("<f4" if little else ">f4").tobytes())


def middlebury_scene(folder: Path, disparity: np.ndarray, calib: str = CALIB, size: tuple[int, int] | None = None):
    folder.mkdir(parents=True)
    h, w = size or disparity.shape
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(folder / "im0.png")
    write_pfm(folder / "disp0GT.pfm", disparity)
    (folder / "calib.txt").write_text(calib)
    return folder


@pytest.mark.parametrize("little", [True, False])
def test_pfm_rows_come_top_to_bottom_in_either_byte_order(tmp_path, little):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_pfm(tmp_path / "a.pfm", array, little)
    assert np.array_equal(read_pfm(tmp_path / "a.pfm"), array)
    (tmp_path / "b.pfm").write_bytes(b"P6\n4 3\n255\n")
    with pytest.raises(ValueError, match="not a PFM file"):
        read_pfm(tmp_path / "b.pfm")
    (tmp_path / "c.pfm").write_bytes(b"Pf\n4 3\n-1.0\n" + b"\0" * 8)
    with pytest.raises(ValueError, match="says 4x3x1 floats but the file holds 2"):
        read_pfm(tmp_path / "c.pfm")


def test_middlebury_depth_is_baseline_times_focal_over_disparity_plus_doffs(tmp_path):
    disparity = np.full((30, 40), 45.0, np.float32)
    disparity[0, 0] = np.inf  # unknown: no measurement, not an invalid value
    disparity[0, 1] = -10.0  # d + doffs < 0: a negative depth, masked and counted
    frame = read_middlebury_scene(middlebury_scene(tmp_path / "Scene", disparity))
    assert frame.f_px == 500.0 and frame.dataset == "middlebury" and frame.name == "Scene"
    assert torch.isclose(frame.depth[5, 5], torch.tensor(100.0 * 500.0 / (45.0 + 5.0) / 1000))  # 1 m
    assert frame.depth[0, 0] == 0 and frame.depth[0, 1] == 0 and frame.masked == 1


def test_calibration_keys_tolerate_spaces_and_a_missing_one_is_named(tmp_path):
    (tmp_path / "calib.txt").write_text(CALIB)
    calib = read_middlebury_calib(tmp_path / "calib.txt")
    assert calib["doffs"] == 5.0 and calib["cam0"][0, 0] == 500.0 and calib["width"] == 40
    (tmp_path / "bad.txt").write_text(CALIB.replace(" doffs= 5.0 \n", ""))
    with pytest.raises(ValueError, match=r"bad.txt has no 'doffs'"):
        read_middlebury_calib(tmp_path / "bad.txt")
    zero = middlebury_scene(tmp_path / "Zero", np.ones((30, 40), np.float32), CALIB.replace("500.0 0 20", "0 0 20"))
    with pytest.raises(ValueError, match=r"cam0\[0, 0\]: the focal length must be a positive number"):
        read_middlebury_scene(zero)


def test_a_depth_map_of_another_size_than_its_image_names_both_files(tmp_path):
    scene = middlebury_scene(tmp_path / "S", np.ones((30, 40), np.float32), size=(30, 41))
    with pytest.raises(ValueError, match=r"disp0GT.pfm is 40x30 but its image .*im0.png is 41x30"):
        read_middlebury_scene(scene)


def metric3d_folder(root: Path, entries: list[dict]) -> Path:
    demo = root / "data" / "cam_demo"
    (demo / "rgb").mkdir(parents=True)
    (demo / "depth").mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(demo / "rgb" / "a.png")
    depth = np.full((6, 8), 2000, np.uint16)
    depth[0, :4] = 0
    Image.fromarray(depth).save(demo / "depth" / "a.png")
    (demo / "test_annotations.json").write_text(json.dumps({"files": entries}))
    return demo / "test_annotations.json"


def test_metric3d_listing_reads_depth_scale_and_focal_and_refuses_paths_outside_its_root(tmp_path):
    entry = {"rgb": "data/cam_demo/rgb/a.png", "depth": "data/cam_demo/depth/a.png", "cam_in": [300, 300, 4, 3],
             "depth_scale": 1000.0}  # fmt: skip
    listing = metric3d_folder(tmp_path / "m", [entry])
    (frame,) = [load() for load in read_metric3d_frames(listing)]
    assert frame.dataset == "cam" and frame.f_px == 300.0 and frame.name == "data/cam_demo/rgb/a.png"
    assert frame.depth[1, 1] == 2.0 and (frame.depth[0, :4] == 0).all()
    outside = metric3d_folder(tmp_path / "o", [entry | {"depth": "../../../../etc/passwd"}])
    with pytest.raises(ValueError, match="leads outside"):
        read_metric3d_frames(outside)
    for bad, match in (({"cam_in": [0, 0, 0, 0]}, "positive"), ({"depth_scale": None}, "depth_scale a number")):
        listing = metric3d_folder(tmp_path / f"b{len(match)}", [entry | bad])
        with pytest.raises(ValueError, match=match):
            read_metric3d_frames(listing)
    no_focal = metric3d_folder(tmp_path / "nf", [{k: v for k, v in entry.items() if k != "cam_in"}])
    with pytest.raises(ValueError, match=r"entry 0 has no 'cam_in'"):
        read_metric3d_frames(no_focal)


def test_scan_finds_both_layouts_and_an_empty_folder_says_what_it_expected(tmp_path):
    middlebury_scene(tmp_path / "mb" / "S", np.ones((30, 40), np.float32))
    entry = {"rgb": "data/cam_demo/rgb/a.png", "depth": "data/cam_demo/depth/a.png", "cam_in": [300, 300, 4, 3],
             "depth_scale": 1000.0}  # fmt: skip
    metric3d_folder(tmp_path / "m3", [entry])
    frames = [load() for load in scan_depth_frames(tmp_path)]
    assert [f.dataset for f in frames] == ["middlebury", "cam"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no Middlebury scene"):
        scan_depth_frames(tmp_path / "empty")


@pytest.mark.skipif(not (SHARED_DATA / "middlebury2014").is_dir(), reason="needs the shared data")
def test_the_real_frames_read_with_their_stated_ranges():
    frames = [load() for load in scan_depth_frames(SHARED_DATA)]
    by = {d: [f for f in frames if f.dataset == d] for d in ("middlebury", "nyu", "kitti")}
    assert [len(v) for v in by.values()] == [13, 3, 3]
    assert len({f.f_px for f in by["middlebury"]}) == 13
    for dataset, (lo, hi) in {"middlebury": (0.9, 8.7), "nyu": (0.6, 8.4), "kitti": (4.0, 86.0)}.items():
        values = torch.cat([f.depth[f.depth > 0] for f in by[dataset]])
        assert lo <= float(values.min()) and float(values.max()) <= hi, dataset
