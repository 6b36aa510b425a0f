"""Training sees all of its data: a weighted draw redrawn every epoch, batches across subjects."""

import json
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from affectlab.train.run import fit
from affectlab.train.sampling import draw_counts, weighted_epoch
from affectlab.workloads.pain import PainWorkload


class RecordingPain(PainWorkload):
    """Pain, writing every training batch's sample and subject ids to a file (the worker
    is another process)."""

    def __init__(self, log):
        self.log = str(log)

    def train_step(self, model, batch, cfg, generator):
        with open(self.log, "a") as f:
            # the loop seeds each epoch's generator afresh: its seed tells the epochs apart
            line = {"epoch_seed": generator.initial_seed(), "ids": batch["sample_id"].tolist(), "subjects": batch["subject_id"].tolist()}
            f.write(json.dumps(line) + "\n")
        return super().train_step(model, batch, cfg, generator)


def test_every_epoch_redraws_and_batches_mix_subjects(ray_cluster, tiny_pain_config, tmp_path):
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    log = tmp_path / "batches.jsonl"
    workload = RecordingPain(log)
    cfg = tiny_pain_config
    cfg.epochs, cfg.augment = 3, False
    datasets = workload.datasets(cfg, fold=0)
    train = datasets["train"].select_columns(["sample_id", "subject_id", "pspi"]).to_pandas()
    n, pain = len(train), set(train.loc[train["pspi"] >= 1, "sample_id"])
    result = fit(workload, cfg, datasets, str(tmp_path), "draws")
    assert result.metrics["final"]

    batches = [json.loads(line) for line in log.read_text().splitlines()]
    seeds = sorted({b["epoch_seed"] for b in batches})
    assert len(seeds) == cfg.epochs
    epochs = [[b for b in batches if b["epoch_seed"] == s] for s in seeds]
    seen = [Counter(i for b in e for i in b["ids"]) for e in epochs]
    # each epoch a draw of about N rows, and a different one
    for counts in seen:
        assert 0.8 * n <= sum(counts.values()) <= 1.2 * n
    assert seen[0] != seen[1] and seen[1] != seen[2]
    # a single draw with replacement misses ~40% of the rows; three redraws reach far more
    distinct = set().union(*seen)
    assert len(distinct) >= 0.85 * n > max(len(c) for c in seen)
    # PSPI >= 1 rows are drawn about twice as often as the others
    total = sum(seen, Counter())
    per_pain = np.mean([total[i] for i in pain])
    per_other = np.mean([total[i] for i in set(train["sample_id"]) - pain])
    assert 1.5 <= per_pain / per_other <= 2.6
    # batches come from many subjects, not one or two (the training fold has ~16)
    full = [b for e in epochs for b in e if len(b["ids"]) == cfg.batch_size]
    assert np.mean([len(set(b["subjects"])) for b in full]) >= 6


def test_draw_counts_are_a_pure_function_of_seed_epoch_and_id():
    ids = np.arange(20_000)
    rates = np.where(ids % 4 == 0, 2.0, 1.0)
    rates /= rates.mean()
    a = draw_counts(ids, rates, seed=1, epoch=0)
    assert np.array_equal(a, draw_counts(ids[::-1], rates[::-1], seed=1, epoch=0)[::-1])  # order-free
    assert not np.array_equal(a, draw_counts(ids, rates, seed=1, epoch=1))
    assert abs(a.sum() - len(ids)) < 4 * np.sqrt(len(ids))  # Poisson: mean N, sd √N
    assert a[ids % 4 == 0].mean() == pytest.approx(2 * a[ids % 4 != 0].mean(), rel=0.06)
    assert (a == 0).mean() == pytest.approx(np.mean(np.exp(-rates)), abs=0.01)


def test_unweighted_batches_pass_through_and_weighted_ones_are_recut():
    g = torch.Generator().manual_seed(0)
    plain = [{"sample_id": torch.arange(5)}]
    assert list(weighted_epoch(plain, batch_size=4, seed=0, epoch=0, generator=g)) == plain
    batches = [{"sample_id": torch.arange(i, i + 8), "sample_weight": torch.ones(8), "x": torch.arange(i, i + 8) * 10}
               for i in range(0, 80, 8)]  # fmt: skip
    out = list(weighted_epoch(batches, batch_size=8, seed=3, epoch=2, generator=g))
    assert all(len(b["x"]) == 8 for b in out[:-1]) and 1 <= len(out[-1]["x"]) <= 8
    ids = torch.cat([b["sample_id"] for b in out])
    expected = draw_counts(np.arange(80), np.ones(80), seed=3, epoch=2)
    assert np.array_equal(np.bincount(ids.numpy(), minlength=80), expected)  # rows kept with their ids
    assert all(torch.equal(b["x"], b["sample_id"] * 10) for b in out)  # columns stay aligned
