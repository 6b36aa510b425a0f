"""Constants of the ProbTalk3D workload (3DMEAD as ProbTalk3D prepares it; reference/talking_heads.md
§2.1, §4). Stdlib only.

The motion scaling ranges are the fixed ranges of the shipped ``scaler_exp.pkl`` /
``scaler_jaw.pkl`` (min-max to [0, 1], ``clip=False``): the pickles themselves are never
unpickled, these numbers are the same scalers.
"""

from __future__ import annotations

# ------------------------------------------------------------------ rates

FPS = 25  # motion frames per second
AUDIO_SAMPLE_RATE = 16000  # every loader resamples to 16 kHz mono
SAMPLES_PER_FRAME = AUDIO_SAMPLE_RATE // FPS  # 640 audio samples per motion frame

# ------------------------------------------------------------------ file layout (§2.1)

PARAM_DIR = "mead/param"  # {SUBJ}_{seq}_{e}_{i}.npy, float (1, T, 403)
WAV_DIR = "mead/wav"  # {SUBJ}_{seq}_{e}_{i}.wav
LIP_REGION_FILE = "regions/lve.txt"  # 428 lip vertex indices (LVE)
UPPER_FACE_REGION_FILE = "regions/fdd.txt"  # 1501 upper-face vertex indices (FDD)
ZERO_POSE_FILE = "flame_zero_pose.npy"  # (5023, 3): zero shape / zero pose FLAME mesh
TEMPLATES_FILE = "templates_mead_vert.pkl"  # {subject: (5023, 3)} neutral vertices

PARAM_DIM = 403
SHAPE_SLICE = (0, 300)  # per-frame shape betas
EXPRESSION_SLICE = (300, 400)  # 100 expression coefficients
JAW_SLICE = (400, 403)  # jaw axis-angle, radians
NUM_EXPRESSION = 50  # the model uses expression[0:50]
NUM_JAW = 3
MOTION_DIM = NUM_EXPRESSION + NUM_JAW  # 53

EXPRESSION_RANGE = (-3.0, 3.0)  # min-max scaled to [0, 1]: x / 6 + 0.5
JAW_RANGE = (-0.1, 0.5)  # min-max scaled to [0, 1]: (x + 0.1) / 0.6

NUM_FLAME_VERTICES = 5023
NUM_LIP_VERTICES = 428
NUM_UPPER_FACE_VERTICES = 1501

# ------------------------------------------------------------------ vocabularies (§2.1)

EMOTIONS = ("neutral", "happy", "sad", "surprised", "fear", "disgusted", "angry", "contempt")  # index e
INTENSITIES = ("level_1", "level_2", "level_3")  # index i; neutral only at i = 0
NEUTRAL = 0
NEUTRAL_SENTENCES = 40  # sentences 001-040 for neutral
EMOTIONAL_SENTENCES = 30  # sentences 001-030 per emotional level

# ------------------------------------------------------------------ subjects (§2.1)

TRAIN_SUBJECTS = (
    "M003", "M005", "M007", "M009", "M011", "M012", "M013", "M019", "M022", "M023", "M024",
    "M025", "M026", "M027", "M028", "M029", "M030", "M031", "W009", "W011", "W014", "W015",
    "W016", "W018", "W019", "W021", "W023", "W024", "W025", "W026", "W028", "W029",
)  # fmt: skip
PRIOR_VAL_SUBJECTS = ("M032", "M033", "M034", "M035", "W033", "W035", "W036")
PRIOR_TEST_SUBJECTS = ("M037", "M039", "M040", "M041", "M042", "W037", "W038", "W040")
# Identity index = position here: 0-31 are the training identities, the style one-hot's slots.
SUBJECTS = TRAIN_SUBJECTS + PRIOR_VAL_SUBJECTS + PRIOR_TEST_SUBJECTS

NUM_STYLE_IDENTITIES = len(TRAIN_SUBJECTS)  # 32
STYLE_DIM = NUM_STYLE_IDENTITIES + len(EMOTIONS) + len(INTENSITIES)  # 43: [id | emotion | intensity]

# ------------------------------------------------------------------ splits (§2.1, defect 4)

# Stage 1 (`mead-splits-prior`): identities disjoint, every sequence of each identity.
IDENTITY_DISJOINT = "identity_disjoint"
# Stage 2 (`mead-splits-pred`, also the FaceDiffuser baseline): the 32 training identities
# in every part; the parts differ by sentence. Its "test" is seen identities, unseen sentences.
SEEN_IDENTITIES_UNSEEN_SENTENCES = "seen_identities_unseen_sentences"
SPLIT_PROTOCOLS = (IDENTITY_DISJOINT, SEEN_IDENTITIES_UNSEEN_SENTENCES)
SPLIT_PARTS = ("train", "val", "test")

IDENTITY_SPLIT = {"train": TRAIN_SUBJECTS, "val": PRIOR_VAL_SUBJECTS, "test": PRIOR_TEST_SUBJECTS}
# inclusive sentence ranges per part: neutral, emotional (every intensity)
SENTENCE_SPLIT = {
    "train": {"neutral": (1, 32), "emotional": (1, 24)},
    "val": {"neutral": (33, 36), "emotional": (25, 27)},
    "test": {"neutral": (37, 40), "emotional": (28, 30)},
}
