"""ProbTalk3D benchmarks: generation real-time factor, and the Ray Data sequence feed.

    python bench/probtalk3d_bench.py     # prints JSON; bench/run.py calls run_probtalk3d_bench(work_dir)

- ``generation``: seconds of 25 fps animation generated per second of compute (the
  real-time factor, > 1 is faster than real time) by ``generate_samples`` — the function the
  evaluation and the server call — for the ``tiny`` predictor (log-mel front-end, as the
  synthetic demo trains it) and the ``paper`` one (HuBERT-base + 12-layer predictor, §4.2;
  random weights: speed does not depend on them), for 1 and 10 samples of one utterance.
  Timed after one warm-up call, median of ``repeats``.
- ``feed``: 3DMEAD sequences per second delivered as padded stage-2 batches (motion,
  envelope, log-mel), by the workload's Ray Dataset read through ``iter_torch_batches`` with
  its collate, against a plain loop in this process (``numpy`` + ``soundfile`` through the
  same ``read_sequence``, the same collate). Both compute the log-mel features every pass,
  as an uncached epoch does; the first ``warmup_passes`` are discarded.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

try:
    import affectlab  # noqa: F401
except ImportError:  # not installed: use the source root, as the jobs do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def generation_rtf(preset: str, audio: str, seconds: float, samples: tuple[int, ...], repeats: int) -> dict:
    import numpy as np
    import torch

    from affectlab.models.probtalk3d_generate import generate_samples, predictor_from_config

    torch.manual_seed(0)
    config = {"model": "vqvae", "preset": preset, "audio": audio, "mel_per_frame": 4, "n_codes": 256, "tokens_per_frame": 2}
    model = predictor_from_config(config).eval()
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, int(seconds * 16000)).astype(np.float32)
    out = {"audio": audio, "seconds_of_audio": seconds, "parameters": sum(p.numel() for p in model.parameters())}
    for n in samples:
        generate_samples(model, wave, (0, 1, 2), n_samples=n, seed=0)  # warm-up
        times = []
        for r in range(repeats):
            started = time.perf_counter()
            motion = generate_samples(model, wave, (0, 1, 2), n_samples=n, seed=r)
            times.append(time.perf_counter() - started)
        animated = motion.shape[1] / 25
        out[f"rtf_{n}_samples"] = animated / float(np.median(times))
        out[f"seconds_{n}_samples"] = float(np.median(times))
    return out


def sequence_feed(work: Path, passes: int, warmup_passes: int, batch_size: int) -> dict:
    import numpy as np
    import ray

    from affectlab.data.audio import audio_envelope
    from affectlab.data.mead import discover_mead, read_sequence
    from affectlab.data.probtalk3d_dataset import TIME_AXES, stage_datasets, stage_sequences
    from affectlab.data.sequences import SequenceCollate
    from affectlab.data.synthetic_mead import write_synthetic_mead
    from affectlab.ray_utils import init_ray

    layout = discover_mead(write_synthetic_mead(work / "mead", size="small"))
    rows = stage_sequences(layout, "pred", "train") + stage_sequences(layout, "pred", "val") + stage_sequences(layout, "pred", "test")
    collate = SequenceCollate(TIME_AXES)

    plain = []
    for _ in range(passes):
        started, n = time.perf_counter(), 0
        for i in range(0, len(rows), batch_size):
            part = [read_sequence(layout.param_path(s.name), layout.wav_path(s.name), mel_per_frame=4) for s in rows[i : i + batch_size]]
            batch = collate({
                "motion": [p["motion"] for p in part], "mel": [p["mel"] for p in part],
                "envelope": [audio_envelope(p["audio"], 16000, 25, len(p["motion"])) for p in part],
                "identity": np.array([s.identity for s in rows[i : i + batch_size]]),
            })  # fmt: skip
            n += len(batch["identity"])
        plain.append(n / (time.perf_counter() - started))

    owns_ray = not ray.is_initialized()
    init_ray()
    try:
        splits = stage_datasets(layout, "pred", audio="logmel", cache=False)
        dataset = splits["train"].union(splits["val"], splits["test"])
        ray_rates = []
        for _ in range(passes):
            started, n = time.perf_counter(), 0
            for batch in dataset.iter_torch_batches(batch_size=batch_size, collate_fn=collate):
                n += len(batch["identity"])
            if n != len(rows):
                raise RuntimeError(f"Ray Data returned {n} sequences, expected {len(rows)}")
            ray_rates.append(n / (time.perf_counter() - started))
    finally:
        if owns_ray:
            ray.shutdown()
    plain_rate, ray_rate = float(np.mean(plain[warmup_passes:])), float(np.mean(ray_rates[warmup_passes:]))
    return {
        "sequences": len(rows), "batch_size": batch_size, "passes": passes, "warmup_passes": warmup_passes,
        "plain_sequences_per_s": plain_rate, "ray_data_sequences_per_s": ray_rate,
        "ray_data_warmup_sequences_per_s": ray_rates[:warmup_passes], "ratio_ray_data_vs_plain": ray_rate / plain_rate,
    }  # fmt: skip


def run_probtalk3d_bench(work: Path | None = None, seconds: float = 4.0, repeats: int = 3, passes: int = 3,
                         warmup_passes: int = 1, batch_size: int = 8) -> dict:  # fmt: skip
    import torch

    results = {"load_average_1m_at_start": os.getloadavg()[0], "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    results["generation"] = {
        "tiny": generation_rtf("tiny", "logmel", seconds, (1, 10), repeats),
        "paper": generation_rtf("paper", "hubert", seconds, (1, 10), repeats),
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["feed"] = sequence_feed(Path(work or tmp), passes, warmup_passes, batch_size)
    return results


if __name__ == "__main__":
    print(json.dumps(run_probtalk3d_bench(), indent=2))
