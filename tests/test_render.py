"""affectlab.body.render: z-buffered rasteriser, H.264 + AAC MP4 that OpenCV decodes frame
for frame, jaw opening visible in the mouth box only, skeleton GIF/MP4 frame counts."""

import re
import subprocess

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from affectlab.body.models import flame_layer, flame_regions, flame_vertices
from affectlab.body.render import (
    OrthoCamera, ffmpeg_exe, fit_camera, iter_mesh_frames, rasterize, render_mesh_video, render_skeleton_animation,
)
from affectlab.body.standin import SMPL_JOINTS, SMPL_PARENTS, write_tiny_flame

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FPS, SIZE, T = 25, 128, 10


@pytest.fixture(scope="module")
def jaw_sequence(tmp_path_factory):
    """T frames of the tiny FLAME: jaw closed for the first half, open 0.3 rad after."""
    model_dir = write_tiny_flame(tmp_path_factory.mktemp("flame"))
    layer = flame_layer(model_dir, n_shape=300, n_expression=100)
    jaw = torch.zeros(T, 3)
    jaw[T // 2:, 0] = 0.3
    with torch.no_grad():
        vertices = flame_vertices(layer, torch.zeros(T, 100), jaw).numpy()
    return vertices, layer.faces.astype(np.int64), flame_regions(model_dir)


def ffmpeg_info(path) -> str:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def decode(path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    cap.release()
    return np.stack(frames)


def box(camera: OrthoCamera, points: np.ndarray, pad: int = 2) -> tuple[slice, slice]:
    pix = camera.project(points)
    x0, y0 = np.floor(pix[..., :2].reshape(-1, 2).min(0)).astype(int) - pad
    x1, y1 = np.ceil(pix[..., :2].reshape(-1, 2).max(0)).astype(int) + pad
    return slice(max(y0, 0), y1), slice(max(x0, 0), x1)


def test_rasterizer_keeps_the_nearest_triangle_whatever_the_order():
    camera = OrthoCamera(center=(0.0, 0.0), scale=20.0, size=64)
    # A faces the camera (z = 0); B is tilted and nearer (z ~ 0.5) over the centre pixel.
    verts = np.array([[-1, -1, 0], [1, -1, 0], [0, 1, 0],
                      [-1, -1, 0.2], [1, -1, 0.8], [0, 1, 0.5]], dtype=float)
    a, b = np.array([[0, 1, 2]]), np.array([[3, 4, 5]])
    only_a, only_b = rasterize(verts, a, camera)[32, 32], rasterize(verts, b, camera)[32, 32]
    assert not np.array_equal(only_a, only_b)
    for faces in (np.r_[a, b], np.r_[b, a]):
        np.testing.assert_array_equal(rasterize(verts, faces, camera)[32, 32], only_b)
    assert (rasterize(verts, a, camera)[2, 2] == 255).all()  # background outside the triangle


def test_mesh_video_frames_audio_and_mouth(tmp_path, jaw_sequence):
    vertices, faces, regions = jaw_sequence
    sample_rate = 16000
    seconds = T / FPS
    tone = np.sin(2 * np.pi * 220 * np.arange(int(seconds * sample_rate)) / sample_rate).astype(np.float32)
    out = render_mesh_video(vertices, faces, FPS, tmp_path / "face.mp4", audio=0.3 * tone, sample_rate=sample_rate,
                            size=SIZE)
    info = ffmpeg_info(out)
    assert re.search(r"Video: h264.*yuv420p", info) and "Audio: aac" in info, info
    duration = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info).groups()
    assert abs(float(duration[2]) + 60 * int(duration[1]) - seconds) < 0.1, info

    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    cap.release()
    decoded = decode(out)
    assert decoded.shape == (T, SIZE, SIZE, 3)  # every frame survived -shortest and the AAC padding

    raw = np.stack(list(iter_mesh_frames(vertices, faces, size=SIZE)))
    camera = fit_camera(vertices, SIZE)
    mouth = box(camera, vertices[[0, -1]][:, regions["lips"]])
    brows = box(camera, vertices[0, regions["upper_face"]])
    closed, opened = T // 2 - 1, T // 2
    # Static half: identical rendered frames, and (after H.264) practically identical decoded ones.
    assert all(np.array_equal(raw[0], raw[t]) for t in range(T // 2))
    static_diff = np.abs(decoded[:T // 2].astype(int) - decoded[0].astype(int))
    assert static_diff.mean() < 0.1 and (static_diff > 3).mean() < 1e-3  # H.264 refines a few edge pixels
    # Jaw 0 -> 0.3 rad changes the mouth box and leaves the upper face alone.
    diff = np.abs(decoded[opened].astype(int) - decoded[closed].astype(int))
    assert diff[mouth].mean() > 8, diff[mouth].mean()  # ~16 grey levels on average over the box
    assert np.array_equal(raw[opened][brows], raw[closed][brows])
    assert diff[brows].mean() < 1.5
    # The decoded video is the rendered frames (H.264 at crf 18: a few grey levels).
    assert np.abs(decoded.astype(int) - raw.astype(int)).mean() < 2.0


def test_side_by_side_panels_and_titles(tmp_path, jaw_sequence):
    vertices, faces, _ = jaw_sequence
    out = render_mesh_video([vertices, vertices[::-1].copy()], faces, FPS, tmp_path / "pair.mp4", size=SIZE,
                            titles=["gt", "pred"])
    decoded = decode(out)
    assert decoded.shape == (T, SIZE, 2 * SIZE, 3)
    assert "Audio" not in ffmpeg_info(out)
    left, right = decoded[:, :, :SIZE].astype(int), decoded[:, :, SIZE:].astype(int)
    assert np.abs(left[0, 24:] - right[-1, 24:]).mean() < 2.0  # same mesh, same camera (below the titles)
    assert np.abs(left[0] - right[0]).mean() > 0.5


def test_render_errors_name_the_problem(tmp_path, jaw_sequence):
    vertices, faces, _ = jaw_sequence
    with pytest.raises(ValueError, match=r"vertices\[0\]: expected \(T, V, 3\)"):
        render_mesh_video(vertices[0], faces, FPS, tmp_path / "a.mp4")
    with pytest.raises(ValueError, match=r"vertices\[1\]: shape .* differs"):
        render_mesh_video([vertices, vertices[:3]], faces, FPS, tmp_path / "a.mp4")
    with pytest.raises(ValueError, match=r"faces: indices must lie in \[0, "):
        render_mesh_video(vertices, faces + 1000, FPS, tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="size must be an even integer"):
        render_mesh_video(vertices, faces, FPS, tmp_path / "a.mp4", size=101)
    with pytest.raises(ValueError, match="must end in .mp4"):
        render_mesh_video(vertices, faces, FPS, tmp_path / "a.avi")
    with pytest.raises(ValueError, match="audio must be mono"):
        render_mesh_video(vertices, faces, FPS, tmp_path / "a.mp4", audio=np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="titles: 1 given for 2 panels"):
        render_mesh_video([vertices, vertices], faces, FPS, tmp_path / "a.mp4", titles=["x"])
    assert not list(tmp_path.glob("*.mp4"))  # nothing half-written


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_skeleton_animation_has_t_frames(tmp_path, suffix):
    n_frames = 7
    joints = np.repeat(SMPL_JOINTS[None], n_frames, 0)
    joints[:, 20:, 1] += np.linspace(0, 0.3, n_frames)[:, None]  # wave the wrists and hands
    out = render_skeleton_animation(joints, SMPL_PARENTS, tmp_path / f"skeleton{suffix}", fps=10, size=96)
    if suffix == ".gif":
        with Image.open(out) as gif:
            assert gif.n_frames == n_frames and gif.info["duration"] == pytest.approx(100)
        static = render_skeleton_animation(np.repeat(SMPL_JOINTS[None], 5, 0), SMPL_PARENTS, tmp_path / "s.gif", 10)
        with Image.open(static) as gif:
            assert gif.n_frames == 5  # the frame counter keeps Pillow from merging identical frames
    else:
        decoded = decode(out)
        assert decoded.shape == (n_frames, 96, 96, 3)
        assert (decoded[0] < 200).any()  # something was drawn
    with pytest.raises(ValueError, match="parents has 23 entries for 24 joints"):
        render_skeleton_animation(joints, SMPL_PARENTS[:23], tmp_path / f"bad{suffix}", fps=10)
    with pytest.raises(ValueError, match=r"joints must be \(T, J, 3\)"):
        render_skeleton_animation(joints[0], SMPL_PARENTS, tmp_path / f"bad{suffix}", fps=10)
