"""Headless mesh and skeleton rendering to MP4 / GIF: numpy rasteriser + ffmpeg.

No display, no GPU, no OpenGL: triangles are rasterised in numpy (orthographic camera
looking down -z, y up, z-buffer, flat shading with a directional light; back faces are
lit too but dimmed, so the inside of an open mouth reads as a cavity). Frames are piped
to the ffmpeg binary that ``imageio-ffmpeg`` ships and encoded as H.264 / yuv420p (what
browsers play), with the audio muxed as AAC.
One camera is fitted to all frames and panels, so the same pose gives the same pixels.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

DEFAULT_LIGHT = (0.3, 0.5, 1.0)
MESH_COLOR = np.array([200, 188, 178], dtype=np.float64)  # RGB
BACKGROUND = 255
BACK_FACE_DIM = 0.4  # back faces (seen through holes; counter-clockwise winding = front) are darker
_CANDIDATES_PER_CHUNK = 2_000_000  # pixel-triangle pairs rasterised at once (memory bound)


@dataclass(frozen=True)
class OrthoCamera:
    """Orthographic front camera: pixel = (x - cx, cy - y) * scale + size / 2; depth = z."""

    center: tuple[float, float]
    scale: float  # pixels per model unit
    size: int

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) model points -> (..., 3) pixel x, pixel y (down), depth (larger = nearer)."""
        points = np.asarray(points, dtype=np.float64)
        px = (points[..., 0] - self.center[0]) * self.scale + self.size / 2
        py = (self.center[1] - points[..., 1]) * self.scale + self.size / 2
        return np.stack([px, py, points[..., 2]], -1)


def fit_camera(points: np.ndarray, size: int, margin: float = 0.08, axes: tuple[int, int] = (0, 1)) -> OrthoCamera:
    """A camera whose view holds every point (any (..., 3) array) with ``margin`` each side."""
    flat = np.asarray(points, dtype=np.float64).reshape(-1, 3)[:, list(axes)]
    lo, hi = flat.min(0), flat.max(0)
    extent = float(max(hi - lo)) or 1.0
    return OrthoCamera(center=tuple((lo + hi) / 2), scale=size * (1 - 2 * margin) / extent, size=size)


def rasterize(
    vertices: np.ndarray, faces: np.ndarray, camera: OrthoCamera, light_dir: Sequence[float] = DEFAULT_LIGHT
) -> np.ndarray:
    """One (size, size, 3) uint8 RGB image of a mesh: z-buffered, flat-shaded triangles."""
    size = camera.size
    image = np.full((size * size, 3), BACKGROUND, dtype=np.uint8)
    tri3d = vertices[faces]  # (F, 3, 3)
    normals = np.cross(tri3d[:, 1] - tri3d[:, 0], tri3d[:, 2] - tri3d[:, 0])
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    light = np.asarray(light_dir, dtype=np.float64) / np.linalg.norm(light_dir)
    lambert = np.abs(normals @ light) / np.maximum(norm[:, 0], 1e-12)
    facing = np.where(normals[:, 2] >= 0, 1.0, BACK_FACE_DIM)  # inside of the mouth / neck reads as a cavity
    colors = np.clip(MESH_COLOR[None] * ((0.25 + 0.75 * lambert) * facing)[:, None], 0, 255).astype(np.uint8)

    tri = camera.project(tri3d)  # (F, 3, 3): px, py, depth
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    # Pixel centres at (i + 0.5); a triangle covers the centres inside its bounding box.
    x0 = np.clip(np.ceil(x.min(1) - 0.5), 0, size).astype(np.int64)
    x1 = np.clip(np.floor(x.max(1) - 0.5), -1, size - 1).astype(np.int64)
    y0 = np.clip(np.ceil(y.min(1) - 0.5), 0, size).astype(np.int64)
    y1 = np.clip(np.floor(y.max(1) - 0.5), -1, size - 1).astype(np.int64)
    width, height = x1 - x0 + 1, y1 - y0 + 1
    visible = (np.abs(area) > 1e-12) & (width > 0) & (height > 0)
    ids = np.flatnonzero(visible)
    counts = width[ids] * height[ids]

    zbuf = np.full(size * size, -np.inf)
    fbuf = np.full(size * size, -1, dtype=np.int64)
    ends = np.cumsum(counts)
    start = 0
    while start < len(ids):  # chunks of triangles, so memory stays bounded for any mesh
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + _CANDIDATES_PER_CHUNK, side="right")))
        chunk, n = ids[start:stop], counts[start:stop]
        face = np.repeat(chunk, n)
        offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        px = x0[face] + offset % width[face]
        py = y0[face] + offset // width[face]
        cx, cy = px + 0.5, py + 0.5
        xf, yf = x[face], y[face]
        wa = ((xf[:, 1] - cx) * (yf[:, 2] - cy) - (xf[:, 2] - cx) * (yf[:, 1] - cy)) / area[face]
        wb = ((xf[:, 2] - cx) * (yf[:, 0] - cy) - (xf[:, 0] - cx) * (yf[:, 2] - cy)) / area[face]
        wc = 1.0 - wa - wb
        inside = (wa >= -1e-9) & (wb >= -1e-9) & (wc >= -1e-9)
        zf = z[face]
        depth = (wa * zf[:, 0] + wb * zf[:, 1] + wc * zf[:, 2])[inside]
        pix, face = (py * size + px)[inside], face[inside]
        order = np.lexsort((-depth, pix))  # per pixel, nearest first (stable: lower face id on ties)
        pix, depth, face = pix[order], depth[order], face[order]
        first = np.ones(len(pix), dtype=bool)
        first[1:] = pix[1:] != pix[:-1]
        pix, depth, face = pix[first], depth[first], face[first]
        nearer = depth > zbuf[pix]
        zbuf[pix[nearer]] = depth[nearer]
        fbuf[pix[nearer]] = face[nearer]
        start = stop
    hit = fbuf >= 0
    image[hit] = colors[fbuf[hit]]
    return image.reshape(size, size, 3)


def iter_mesh_frames(
    vertices: np.ndarray | Sequence[np.ndarray],
    faces: np.ndarray,
    size: int = 256,
    titles: Sequence[str] | None = None,
    light_dir: Sequence[float] = DEFAULT_LIGHT,
    camera: OrthoCamera | None = None,
) -> Iterator[np.ndarray]:
    """Yield T RGB frames (size, size * panels, 3) for (T, V, 3) vertices or a list of
    such sequences (side-by-side panels, one camera for all)."""
    panels, faces = _check_mesh_inputs(vertices, faces, size, titles)
    camera = camera or fit_camera(np.stack(panels), size)
    for t in range(panels[0].shape[0]):
        images = [rasterize(panel[t], faces, camera, light_dir) for panel in panels]
        for image, title in zip(images, titles or []):
            _put_title(image, title)
        yield np.concatenate(images, axis=1)


def render_mesh_video(
    vertices: np.ndarray | Sequence[np.ndarray],
    faces: np.ndarray,
    fps: float,
    out_path: str | Path,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    size: int = 256,
    titles: Sequence[str] | None = None,
) -> Path:
    """Render (T, V, 3) vertices (or a list of them, side by side) to an H.264 MP4.

    ``audio``: mono float32 samples at ``sample_rate``, muxed as AAC; padded with silence
    or cut so that the video keeps all T frames. Returns the output path.
    """
    out_path = _check_out(out_path, (".mp4",))
    fps = _check_fps(fps)
    panels, faces = _check_mesh_inputs(vertices, faces, size, titles)
    n_frames = panels[0].shape[0]
    frames = iter_mesh_frames(panels, faces, size, titles)
    return _write_mp4(frames, (size * len(panels), size), n_frames, fps, out_path, audio, sample_rate)


def render_skeleton_animation(
    joints: np.ndarray, parents: Sequence[int], out_path: str | Path, fps: float, size: int = 256
) -> Path:
    """Draw a (T, J, 3) joint sequence as a front-view (x right, y up) stick figure.

    The format follows the suffix: ``.gif`` (Pillow) or ``.mp4`` (H.264). Each frame shows
    its index, so no two GIF frames are identical (Pillow merges identical ones).
    """
    out_path = _check_out(out_path, (".gif", ".mp4"))
    fps = _check_fps(fps)
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[2] != 3 or joints.shape[0] < 1:
        raise ValueError(f"joints must be (T, J, 3) with T >= 1, got {joints.shape}")
    if not np.isfinite(joints).all():
        raise ValueError("joints contain NaN or infinite values")
    parents = [int(p) for p in parents]
    n_joints = joints.shape[1]
    if len(parents) != n_joints:
        raise ValueError(f"parents has {len(parents)} entries for {n_joints} joints")
    bad = [j for j, p in enumerate(parents) if not -1 <= p < n_joints or p == j]
    if bad:
        raise ValueError(f"parents must be -1 or another joint index in [0, {n_joints}); bad joints {bad}")
    _check_size(size)
    camera = fit_camera(joints, size, margin=0.1)
    n_frames = len(joints)

    def frames() -> Iterator[np.ndarray]:
        for t, pose in enumerate(joints):
            image = np.full((size, size, 3), BACKGROUND, dtype=np.uint8)
            pix = np.round(camera.project(pose)[:, :2] * 16).astype(np.int64)  # 4 fractional bits
            for j, p in enumerate(parents):
                if p >= 0:
                    cv2.line(image, tuple(pix[p]), tuple(pix[j]), (40, 90, 200), 2, cv2.LINE_AA, shift=4)
            for point in pix:
                cv2.circle(image, tuple(point), 3 * 16, (200, 60, 40), -1, cv2.LINE_AA, shift=4)
            cv2.putText(image, f"{t + 1}/{n_frames}", (4, size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                        cv2.LINE_AA)
            yield image

    if out_path.suffix.lower() == ".mp4":
        return _write_mp4(frames(), (size, size), n_frames, fps, out_path)
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames()]
    tmp = out_path.with_name(out_path.name + ".partial")
    try:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=1000.0 / fps, loop=0)
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped by imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _write_mp4(
    frames: Iterable[np.ndarray],
    frame_size: tuple[int, int],
    n_frames: int,
    fps: float,
    out_path: Path,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> Path:
    """Pipe RGB frames to ffmpeg (H.264, yuv420p, AAC audio); write atomically."""
    width, height = frame_size
    with tempfile.TemporaryDirectory(prefix="affectlab_render_") as tmpdir:
        cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", repr(float(fps)), "-i", "-"]
        if audio is not None:
            wav = Path(tmpdir) / "audio.wav"
            _write_wav(wav, audio, sample_rate, min_seconds=n_frames / fps)
            cmd += ["-i", str(wav), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k", "-shortest"]
        tmp = out_path.with_name(out_path.stem + ".partial.mp4")
        cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-crf", "18",
                "-movflags", "+faststart", str(tmp)]
        log = Path(tmpdir) / "ffmpeg.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err)
            try:
                for frame in frames:
                    proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
            except BrokenPipeError:
                pass  # ffmpeg stopped early: its log says why
            finally:
                proc.stdin.close()
                code = proc.wait()
        if code != 0:
            tmp.unlink(missing_ok=True)
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"ffmpeg failed writing {out_path} (exit {code}): {tail}")
        tmp.replace(out_path)
    return out_path


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int, min_seconds: float) -> None:
    import soundfile

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (N,) samples, got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise ValueError("audio contains NaN or infinite values")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate}")
    needed = int(np.ceil(min_seconds * sample_rate)) + sample_rate // 10  # silence so video stays the shortest
    if len(audio) < needed:
        audio = np.pad(audio, (0, needed - len(audio)))
    soundfile.write(path, audio, int(sample_rate), subtype="FLOAT")


def _check_mesh_inputs(vertices, faces, size: int, titles) -> tuple[list[np.ndarray], np.ndarray]:
    panels = list(vertices) if isinstance(vertices, (list, tuple)) else [vertices]
    if not panels:
        raise ValueError("vertices: expected a (T, V, 3) array or a non-empty list of them")
    panels = [_to_numpy(panel) for panel in panels]
    for k, panel in enumerate(panels):
        if panel.ndim != 3 or panel.shape[2] != 3 or panel.shape[0] < 1:
            raise ValueError(f"vertices[{k}]: expected (T, V, 3) with T >= 1, got {panel.shape}")
        if panel.shape != panels[0].shape:
            raise ValueError(f"vertices[{k}]: shape {panel.shape} differs from panel 0's {panels[0].shape}")
        if not np.isfinite(panel).all():
            raise ValueError(f"vertices[{k}]: contains NaN or infinite values")
    faces = _to_numpy(faces)
    n_verts = panels[0].shape[1]
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces: expected (F, 3) integer vertex indices, got {faces.shape} {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() >= n_verts):
        raise ValueError(f"faces: indices must lie in [0, {n_verts}), got {faces.min()}..{faces.max()}")
    if titles is not None and len(titles) != len(panels):
        raise ValueError(f"titles: {len(titles)} given for {len(panels)} panels")
    _check_size(size)
    return [panel.astype(np.float64) for panel in panels], faces.astype(np.int64)


def _to_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_size(size: int) -> None:
    if int(size) != size or size < 32 or size % 2:
        raise ValueError(f"size must be an even integer >= 32 (H.264 yuv420p needs even sides), got {size}")


def _check_fps(fps: float) -> float:
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return float(fps)


def _check_out(out_path: str | Path, suffixes: tuple[str, ...]) -> Path:
    out_path = Path(out_path).expanduser().resolve()
    if out_path.suffix.lower() not in suffixes:
        raise ValueError(f"{out_path}: output must end in {' or '.join(suffixes)}")
    if not out_path.parent.is_dir():
        raise FileNotFoundError(f"{out_path.parent}: output directory does not exist")
    return out_path


def _put_title(image: np.ndarray, title: str) -> None:
    cv2.putText(image, str(title), (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
