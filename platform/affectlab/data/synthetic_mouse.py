"""Write a small synthetic mouse pain-behaviour dataset in exactly the native formats.

The real videos are licence-gated, so tests and the demo use this. Every action is drawn
as its own motion of a bottom-view mouse (dark background, bright paws), so a model that
learns the task beats the majority-class baseline on held-out animals:

==============  ===========================================================================
action          motion
==============  ===========================================================================
rest            nothing moves
paw_withdraw    one hind paw jerks towards the body within 3 frames, shrinks (lifted), holds
paw_lick        the head curls to one hind paw and stays there with a small 5 Hz bob
paw_shake       one hind paw is lifted and oscillates sideways at 8 Hz
walk            the body moves forward with alternating diagonal paw steps (3 Hz)
active          the body turns irregularly on the spot, head leading, paws fidgeting
==============  ===========================================================================

Files written (see ``affectlab.data.mouse`` for the readers)::

    Videos/shortened_<date>_CFA_<nnn>_<animal>_tracking.mp4              mp4v, 30 fps, grayscale
    Videos/<stem>DLC_resnet50_pawtracking_comparisionMay7shuffle1_500000.csv (or .h5)
    Videos/<stem>DLC_Resnet50_pawtrackingMay7shuffle1_snapshot_010.csv      (DLC 3 name)
    Annotations/prediction_<video>.mp4_<trial>.csv                         raw labels 0-7
    Truth/<stem>.npz   the true keypoints and merged labels of every frame (not a native
                       file; lets tests check alignment and keypoint heads)

Some trials have 345 annotation rows (row r is trial frame r + 15), paw_withdraw is written
with the raw labels 1, 3 (paw_guard) and 5 (flinch) so the merge is exercised, and the DLC
pose has Gaussian noise plus occasional garbage points with likelihood < 0.6.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from affectlab.constants.mouse import BODYPARTS, CONTEXT_OFFSET, RAW_TO_MERGED, TRIAL_FRAMES

TF_SCORER = "DLC_resnet50_pawtracking_comparisionMay7shuffle1_500000"
DLC3_SCORER = "DLC_Resnet50_pawtrackingMay7shuffle1_snapshot_010"

REST, WITHDRAW, LICK, SHAKE, WALK, ACTIVE = range(6)
RAW_LABEL = {REST: [0], WITHDRAW: [1, 3, 5], LICK: [2], SHAKE: [4], WALK: [6], ACTIVE: [7]}
DURATION = {  # frames (min, max) of one bout
    REST: (20, 55),
    WITHDRAW: (20, 40),
    LICK: (30, 60),
    SHAKE: (20, 40),
    WALK: (30, 55),
    ACTIVE: (25, 45),
}
# Which behaviour follows a rest bout; the short bouts are drawn more often to even out frames.
BOUT_WEIGHTS = np.array([0, 0.25, 0.15, 0.25, 0.15, 0.2])

# Rest pose in body coordinates (forward, left), in units of the body length.
REST_POSE = np.array(
    [[0.50, 0.0], [0.20, -0.17], [0.20, 0.17], [-0.25, -0.20], [-0.25, 0.20], [-0.50, 0.0]],
    dtype=np.float64,
)
M, LF, RF, LH, RH, TB = range(6)


def _action_sequence(rng, n_trials: int) -> np.ndarray:
    """Merged action per video frame: rest bouts alternating with behaviour bouts.

    Every behaviour is put early in some trial (after a rest longer than the 15-frame
    context offset), so each video, hence each animal, shows every class.
    """
    required = list(rng.permutation([WITHDRAW, LICK, SHAKE, WALK, ACTIVE]))
    queues = [required[t::n_trials] for t in range(n_trials)]
    actions = []
    for queue in queues:
        trial = []
        while len(trial) < TRIAL_FRAMES:
            rest = rng.integers(*DURATION[REST], endpoint=True)
            trial += [REST] * int(rest)
            behaviour = queue.pop(0) if queue else int(rng.choice(6, p=BOUT_WEIGHTS))
            trial += [behaviour] * int(rng.integers(*DURATION[behaviour], endpoint=True))
        actions += trial[:TRIAL_FRAMES]
    return np.array(actions, dtype=np.int64)


def _simulate(rng, actions: np.ndarray, size: int, fps: float) -> dict[str, np.ndarray]:
    """Keypoints (pixels) and drawing state of every frame for a given action sequence."""
    n = len(actions)
    body = 0.32 * size
    centre = np.array([size / 2, size / 2], dtype=np.float64)
    heading = rng.uniform(-np.pi, np.pi)
    keypoints = np.zeros((n, 6, 2))
    lift = np.zeros((n, 6))
    headings = np.zeros(n)
    bout_start, side, turn_rate = 0, 1, 0.0
    for f in range(n):
        action = actions[f]
        if f == 0 or action != actions[f - 1]:
            bout_start, side, turn_rate = f, int(rng.integers(2)), rng.choice([-1, 1]) * 0.08
        k = f - bout_start
        t = k / fps
        pose = REST_POSE.copy()
        hind = (LH, RH)[side]
        inward = 1.0 if hind == LH else -1.0  # lateral direction towards the midline

        if action == WITHDRAW:
            ramp = min(1.0, (k + 1) / 3)
            pose[hind] += ramp * np.array([0.20, 0.10 * inward])
            lift[f, hind] = ramp
        elif action == LICK:
            ramp = min(1.0, (k + 1) / 8)
            ramp = ramp * ramp * (3 - 2 * ramp)
            target = REST_POSE[hind] + np.array([0.10, 0.05 * inward])
            mouth = REST_POSE[M] + ramp * (target - REST_POSE[M])
            mouth[0] += ramp * 0.03 * np.sin(2 * np.pi * 5 * t)
            pose[[LF, RF]] += 0.3 * (mouth - REST_POSE[M])
            pose[M] = mouth
        elif action == SHAKE:
            pose[hind] += np.array([0.10, -0.14 * inward * np.sin(2 * np.pi * 8 * t)])
            lift[f, hind] = 0.6
        elif action == WALK:
            offset = centre - size / 2
            if np.linalg.norm(offset) > 0.12 * size:  # steer back towards the arena centre
                wanted = np.arctan2(-offset[1], -offset[0])
                heading += 0.15 * np.angle(np.exp(1j * (wanted - heading)))
            centre += 0.008 * size * np.array([np.cos(heading), np.sin(heading)])
            step = 0.09 * np.sin(2 * np.pi * 3 * t)
            pose[[LF, RH], 0] += step
            pose[[RF, LH], 0] -= step
        elif action == ACTIVE:
            turn_rate = float(np.clip(0.85 * turn_rate + rng.normal(0, 0.05), -0.2, 0.2))
            heading += turn_rate
            centre += rng.normal(0, 0.003 * size, 2)
            pose[M, 1] += 0.8 * turn_rate
            pose[[LF, RF, LH, RH]] += rng.normal(0, 0.03, (4, 2))

        centre = np.clip(centre, 0.3 * size, 0.7 * size)
        forward = np.array([np.cos(heading), np.sin(heading)])
        left = np.array([np.sin(heading), -np.cos(heading)])
        keypoints[f] = centre + body * (pose[:, :1] * forward + pose[:, 1:] * left)
        headings[f] = heading
    return {"keypoints": keypoints, "lift": lift, "heading": headings, "body": np.full(n, body)}


def _stamp(image: np.ndarray, index: int) -> None:
    """Write ``index`` as 12 black/white blocks (2 rows x 6) in the top-left corner."""
    block = max(4, image.shape[0] // 16)
    for bit in range(12):
        row, col = divmod(bit, 6)
        value = 255 if (index >> bit) & 1 else 0
        image[row * block : (row + 1) * block, col * block : (col + 1) * block] = value


def decode_stamp(image: np.ndarray) -> int:
    """Read back the frame index written by ``stamp_frame_index=True``."""
    block = max(4, image.shape[0] // 16)
    index = 0
    for bit in range(12):
        row, col = divmod(bit, 6)
        if image[row * block + block // 2, col * block + block // 2] > 127:
            index |= 1 << bit
    return index


def _render(state: dict[str, np.ndarray], f: int, size: int) -> np.ndarray:
    """Draw frame ``f``: dark floor, grey body, lighter head, bright paw pads."""
    shift = 4  # sub-pixel drawing: coordinates in 1/16 pixel
    scale = 1 << shift

    def pt(p):
        return int(round(p[0] * scale)), int(round(p[1] * scale))

    def r(x):
        return max(scale, int(round(x * scale)))

    image = np.full((size, size), 18, dtype=np.uint8)
    kp, body, heading = state["keypoints"][f], state["body"][f], state["heading"][f]
    forward = np.array([np.cos(heading), np.sin(heading)])
    tail_tip = kp[TB] - 0.55 * body * forward
    cv2.line(image, pt(kp[TB]), pt(tail_tip), 110, max(1, int(0.04 * body)), cv2.LINE_AA, shift)
    trunk_centre = (kp[TB] + kp[TB] + 0.75 * body * forward) / 2
    cv2.ellipse(
        image, pt(trunk_centre), (r(0.40 * body), r(0.21 * body)),
        float(np.degrees(heading)), 0, 360, 140, -1, cv2.LINE_AA, shift,
    )
    neck = kp[TB] + 0.75 * body * forward
    cv2.line(image, pt(neck), pt(kp[M]), 170, max(1, int(0.16 * body)), cv2.LINE_AA, shift)
    cv2.circle(image, pt(kp[M]), r(0.10 * body), 190, -1, cv2.LINE_AA, shift)
    for paw in (LF, RF, LH, RH):
        lifted = state["lift"][f, paw]
        radius, brightness = r(0.065 * body * (1 - 0.5 * lifted)), int(255 - 70 * lifted)
        cv2.circle(image, pt(kp[paw]), radius, brightness, -1, cv2.LINE_AA, shift)
    return image


def _dlc_table(rng, keypoints: np.ndarray, size: int, scorer: str) -> pd.DataFrame:
    """DeepLabCut-like output: truth + noise, and a few confidently-wrong-looking outliers."""
    n = len(keypoints)
    xy = keypoints + rng.normal(0, 0.004 * size, keypoints.shape)
    likelihood = rng.uniform(0.92, 1.0, (n, 6))
    garbage = rng.random((n, 6)) < 0.03
    likelihood[garbage] = rng.uniform(0.01, 0.55, garbage.sum())
    xy[garbage] = rng.uniform(0, size, (garbage.sum(), 2))
    values = np.concatenate([xy, likelihood[..., None]], axis=-1).reshape(n, -1)
    columns = pd.MultiIndex.from_product(
        [[scorer], list(BODYPARTS), ["x", "y", "likelihood"]], names=["scorer", "bodyparts", "coords"]
    )
    return pd.DataFrame(values, columns=columns)


def _write_video(path: Path, frames, size: int, fps: float) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write mp4v video")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()


def write_synthetic_mouse(
    out_dir,
    n_animals: int = 6,
    videos_per_animal: int = 1,
    trials_per_video: int = 3,
    size: int = 128,
    seed: int = 0,
    fps: int = 30,
    stamp_frame_index: bool = False,
) -> Path:
    """Write the dataset under ``out_dir`` and return it.

    Odd-numbered videos have one 345-row trial; every third video (index 1, 4, ...) gets its
    pose as H5 instead of CSV and every third (index 2, 5, ...) a DLC 3 scorer name.
    ``stamp_frame_index`` draws the frame index as blocks in a corner (tests only: it is
    a cue no real video has).
    """
    out_dir = Path(out_dir)
    videos_dir, annotations_dir, truth_dir = out_dir / "Videos", out_dir / "Annotations", out_dir / "Truth"
    for folder in (videos_dir, annotations_dir, truth_dir):
        folder.mkdir(parents=True, exist_ok=True)
    merge = np.array([RAW_TO_MERGED[r] for r in range(8)])

    video_index = 0
    for animal in range(n_animals):
        animal_id = f"{250 + 3 * animal}{'MF'[animal % 2]}"
        for session in range(videos_per_animal):
            rng = np.random.default_rng([seed, video_index])
            stem = f"shortened_2023-10-{25 + session:02d}_CFA_{10 + video_index:03d}_{animal_id}_tracking"
            actions = _action_sequence(rng, trials_per_video)
            state = _simulate(rng, actions, size, fps)

            def frames():
                for f in range(len(actions)):
                    image = _render(state, f, size)
                    if stamp_frame_index:
                        _stamp(image, f)
                    yield image

            _write_video(videos_dir / f"{stem}.mp4", frames(), size, fps)

            # One raw code per bout; withdraw bouts cycle through paw_withdraw, paw_guard and
            # flinch (raw 1, 3, 5) so every dataset exercises the merge.
            raw = np.zeros(len(actions), dtype=np.int64)
            bounds = np.flatnonzero(np.diff(actions, prepend=-1))
            withdraw_bout = video_index
            for start, stop in zip(bounds, list(bounds[1:]) + [len(actions)]):
                codes = RAW_LABEL[int(actions[start])]
                raw[start:stop] = codes[withdraw_bout % len(codes)]
                withdraw_bout += int(actions[start]) == WITHDRAW
            assert (merge[raw] == actions).all()
            short_trial = video_index % trials_per_video + 1 if video_index % 2 == 1 else None
            for trial in range(1, trials_per_video + 1):
                begin = (trial - 1) * TRIAL_FRAMES
                if trial == short_trial:
                    begin += CONTEXT_OFFSET
                rows = raw[begin : trial * TRIAL_FRAMES]
                table = pd.DataFrame({"Frame": np.arange(len(rows)), "Action": rows})
                table.to_csv(annotations_dir / f"prediction_{stem}.mp4_{trial}.csv", index=False)

            scorer = DLC3_SCORER if video_index % 3 == 2 else TF_SCORER
            dlc = _dlc_table(rng, state["keypoints"], size, scorer)
            if video_index % 3 == 1:
                dlc.to_hdf(videos_dir / f"{stem}{scorer}.h5", key="df_with_missing", format="table", mode="w")
            else:
                dlc.to_csv(videos_dir / f"{stem}{scorer}.csv")

            np.savez(
                truth_dir / f"{stem}.npz",
                keypoints=state["keypoints"].astype(np.float32),
                labels=actions,
                raw_labels=raw,
            )
            video_index += 1
    return out_dir
