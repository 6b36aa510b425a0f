"""Constants of the infant workload (InfAGenC; reference/infant.md). Stdlib only.

Class names and their indices are the original loaders' label maps (§1.1); labels in the
pkls are matched as exact strings. The skeleton tables are SMPL's kinematic tree and the
Human3.6M-17 graph of the InfActPrimitive benchmark (§1.4).
"""

from __future__ import annotations

# ------------------------------------------------------------------ datasets (§1.1)

PRIMITIVE_CLASSES = ("Supine", "Prone", "Sitting", "Standing", "All-fours")  # InfActPrimitive postures
PLUS_CLASSES = ("Crawling", "Sitting", "Standing", "Rolling")  # InfActPlus transitional actions
CLASSES = {"primitive": PRIMITIVE_CLASSES, "plus": PLUS_CLASSES}
LABEL_KEYS = {"primitive": "pos_label", "plus": "action_label"}
NUM_FRAMES = {"primitive": 60, "plus": 90}  # --num_frames of the paper runs
INFACT_FILES = {  # relative to the data directory, as the original repository lays them out
    "primitive": {"train": "InfActPrimitive/Data/primitive_train.pkl", "test": "InfActPrimitive/Data/primitive_test.pkl"},
    "plus": {"train": "InfActPlus/train_trans_data.pkl", "test": "InfActPlus/test_trans_data.pkl"},
}
GENERATED_SAMPLES = "generated_samples.npy"  # the original refinement loop's output (§1.6)

# ------------------------------------------------------------------ skeletons (§1.4, §3)

NUM_SMPL_JOINTS = 24
SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)  # fmt: skip
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
SMPL_EDGES = tuple((p, c) for c, p in enumerate(SMPL_PARENTS) if p >= 0)  # (parent, child), kintree order

NUM_H36M_JOINTS = 17
H36M_EDGES = (
    (10, 9), (9, 8), (8, 7), (7, 0), (13, 12), (12, 11), (11, 8), (16, 15), (15, 14), (14, 8),
    (3, 2), (2, 1), (1, 0), (6, 5), (5, 4), (4, 0),
)  # fmt: skip
# SMPL joint feeding each H36M-17 node: pelvis, L hip/knee/ankle, R hip/knee/ankle, spine2,
# spine3, neck, head, L shoulder/elbow/wrist, R shoulder/elbow/wrist.
SMPL_TO_H36M = (0, 1, 4, 7, 2, 5, 8, 6, 9, 12, 15, 16, 18, 20, 17, 19, 21)

# name -> (number of nodes, edges, centre node) for the ST-GCN graph (§5.1)
GRAPH_LAYOUTS = {
    "smpl": (NUM_SMPL_JOINTS, SMPL_EDGES, 0),
    "infact": (NUM_H36M_JOINTS, H36M_EDGES, 0),
}

# ------------------------------------------------------------------ training (§4, §5, §6)

CVAE_LOSS_WEIGHTS = {"rc": 1.0, "rcxyz": 1.0, "kl": 1e-5, "velxyz": 1e-3}  # the paper's --lambda_*
SEED = 10  # the original's global seed
CONFIDENCE_THRESHOLD = 0.75  # refinement: keep generated samples recognised at >= this softmax
WITHIN_WEIGHT, BETWEEN_WEIGHT = 0.6, 0.4  # ratio = (0.6 * within_n) / (0.4 * between_n)
SELECT_FRACTION = 0.5  # per class, n = int(0.5 * min_class_count) from the middle of the ranking
ROUND_EVERY = 10  # a data-adding round every 10 generator epochs

# ------------------------------------------------------------------ evaluation (§7)

DIVERSITY_PAIRS = 200
MULTIMODALITY_PAIRS = 20
FID_EPS = 1e-6
