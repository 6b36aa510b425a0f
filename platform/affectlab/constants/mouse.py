"""Constants of the mouse pain-behaviour workload (reference/mouse.md §1-§2). Stdlib only.

Every layer imports these from here: the readers, the pose graph, the metrics, the report
and the serving app, so a class name or a bodypart is defined once.
"""

from __future__ import annotations

# ------------------------------------------------------------------ labels (§2)

CLASS_NAMES = ("rest", "paw_withdraw", "paw_lick", "paw_shake", "walk", "active")
NUM_CLASSES = len(CLASS_NAMES)
RAW_NAMES = ("rest", "paw_withdraw", "paw_lick", "paw_guard", "paw_shake", "flinch", "walk", "active")
# paw_guard (3) and flinch (5) are merged into paw_withdraw: too rare to learn apart.
RAW_TO_MERGED = {0: 0, 1: 1, 2: 2, 3: 1, 4: 3, 5: 1, 6: 4, 7: 5}

# ------------------------------------------------------------------ recordings (§1)

FPS = 30.0
TRIAL_FRAMES = 360  # one video holds 3 trials x 360 frames
CONTEXT_OFFSET = 15  # 345-row annotation files start 15 frames into the trial

# ------------------------------------------------------------------ DeepLabCut pose (§1.3)

# affectlab's keypoints, in this order everywhere (pose graph, keypoint head). A DLC project
# with other names maps onto them with a bodypart map (ours=theirs).
BODYPARTS = ("mouth", "L_frontpaw", "R_frontpaw", "L_hindpaw", "R_hindpaw", "tail_base")
NUM_BODYPARTS = len(BODYPARTS)
NUM_POSE_FEATURES = 18  # 8 edge lengths + 10 angles (affectlab.data.pose)

# ------------------------------------------------------------------ models (§6)

MODELS = ("c3d", "c3d_light", "dual_stream", "multitask")
POSE_MODELS = ("dual_stream", "multitask")  # the models that read the pose features
DEFAULT_IMAGE_SIZE = {"c3d": 112, "c3d_light": 112, "dual_stream": 112, "multitask": 224}  # C3D's input; ViT's
