"""The infant workload's own Train worker loops: refinement (§6) and evaluation (§7).

Both run on one Train worker: a round scores generated samples against the features of
the whole training set, and the evaluation trains small recognisers one after another.
They keep the platform's behaviour through ``affectlab.train.custom``: resume from the
checkpoint Ray Train hands back, one report per epoch with an ``epoch_{e:03d}``
checkpoint, a ``final`` checkpoint with ``{"final": 1}`` and ``predictions.npz``, weights
only as safetensors.

``refine_loop`` — each epoch (1-based, as the original's ``epoch % 10 == 0``):

1. one CVAE epoch on the real training clips plus every synthetic sample added so far;
2. right after a round that added data, ``finetune_epochs`` recogniser epochs on the same
   set; otherwise the recogniser only evaluates;
3. one generated sample per real training clip, labels class-balanced in every batch, in
   ``eval()``/``no_grad()`` from a seeded generator (defect 2); the recogniser's accuracy on
   them (``accuracy_gen``) and on the real validation split;
4. the epoch's outputs are cached when their accuracy beats the best since the last round;
5. every ``round_every`` epochs, a round on the cache: confidence filter, skip when a class
   has <= 1 survivor, feature ratio against the current training features, middle selection
   (``affectlab.metrics.infant``). The cache is reset whether the round adds data or not
   (defect 6); the accepted samples get ``epoch_idx`` = their generation epoch, one entry
   per kept sample (defect 11), and are written as ``generated_samples.npz``.

``eval_loop`` — for ``eval_seeds`` seeds, a recogniser trained on real data only and one
trained with the synthetic samples are scored on the real test set: seed 0 are the
``init_recognizer`` / ``final_recognizer`` checkpoints themselves, later seeds retrain each
with the recipe recorded in that checkpoint's ``config.json`` and another seed. Then, for
``generation_seeds`` seeds, the generator makes a set with the test set's labels and
durations, scored with the real-data recogniser's features (ACTOR protocol): FID against
the real test set, accuracy, diversity and multimodality; Gaussian noise sequences with
the training poses' per-joint mean and spread give the FID a generator should stay far
below, and the real training set the FID a perfect one would reach.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from affectlab.body.rotations import axis_angle_to_rot6d, matrix_to_axis_angle, rot6d_to_axis_angle, rot6d_to_matrix
from affectlab.data.infant import GeneratedSamples, read_generated_samples, write_generated_samples
from affectlab.metrics import infant as im
from affectlab.models.infant_cvae import cvae_losses, rot6d_to_joints
from affectlab.models.infant_inference import balanced_labels, build_generator, build_recognizer, normalize_rot6d, recognize
from affectlab.train.checkpoint import save_checkpoint, write_json
from affectlab.train.custom import (
    cpu_state,
    epoch_seed,
    load_state,
    load_weights,
    report_epoch,
    report_final,
    restored_checkpoint,
    save_state,
    state_fingerprint,
    world,
)
from affectlab.train.loop import cosine_factor
from affectlab.workloads.infant import GENERATED_FILE, InfantWorkload, load_infant_weights, read_infant_config

RECOGNIZER_FILE = "recognizer.safetensors"  # the refined recogniser, beside the generator's model.safetensors
REFINEMENT_FILE = "refinement.json"  # init fingerprints, every round, every epoch
ROUND_FEATURES_FILE = "round_features.npz"  # real and accepted features per round (t-SNE)
EVALUATION_FILE = "evaluation.json"


def _one_worker(stage: str) -> None:
    if world()[1] > 1:
        raise ValueError(f"the {stage} stage runs on one Train worker (num_workers=1): it scores generated samples "
                         "against the whole training set")  # fmt: skip


def load_split(name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole (small) dataset as ACTOR tensors on ``device``: x (N, J, F, T), y (N,)."""
    xs, ys = [], []
    for batch in ray.train.get_dataset_shard(name).iter_torch_batches(batch_size=512, device="cpu"):
        x, y = InfantWorkload.inputs(batch)
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError(f"the {name!r} dataset is empty")
    return torch.cat(xs).to(device), torch.cat(ys).to(device)


def batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator, device=generator.device)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def recognizer_epoch(model, optimizer, x, y, batch_size: int, grad_clip: float, generator: torch.Generator) -> float:
    """One cross-entropy epoch over shuffled batches; the mean loss."""
    model.train()
    total, steps = 0.0, 0
    for idx in batches(len(y), batch_size, generator):
        loss = F.cross_entropy(model(x[idx])[0], y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total, steps = total + loss.item(), steps + 1
    return total / max(1, steps)


def _accuracy(model, x, y) -> float:
    return im.accuracy(y.cpu().numpy(), recognize(model, x)[0].argmax(1).numpy())


def _per_class(labels, logits, names) -> dict[str, float]:
    values = im.per_class_accuracy(np.asarray(labels), np.asarray(logits).argmax(1), len(names))
    return {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, values)}


def _counts(values: np.ndarray, names) -> dict[str, int]:
    return {name: int(n) for name, n in zip(names, np.asarray(values)[: len(names)])}


# ---------------------------------------------------------------------------- refinement (§6)


def refine_loop(loop_config: dict) -> None:
    workload = loop_config["workload"]
    cfg = workload.make_config(loop_config["config"])
    _one_worker("refine")
    for name in ("init_recognizer", "init_cvae"):
        if not getattr(cfg, name):
            raise ValueError(f"the refine stage needs {name}: the checkpoint it refines (stage {'recognizer' if 'recog' in name else 'cvae'})")
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)
    names, num_classes = cfg.class_names, cfg.num_classes

    generator_model, recognizer = build_generator(asdict(cfg)), build_recognizer(asdict(cfg))
    init = {}
    for key, model, kind, path in (("cvae", generator_model, "cvae", cfg.init_cvae), ("recognizer", recognizer, "stgcn", cfg.init_recognizer)):
        state = load_infant_weights(model, path, kind, cfg)
        init[key] = {"path": str(path), "tensors": len(state), "fingerprint": state_fingerprint(state)}
    generator_model.to(device)
    recognizer.to(device)
    opt_generator = torch.optim.AdamW(workload.param_groups(generator_model, cfg))
    opt_recognizer = torch.optim.AdamW(workload.param_groups(recognizer, cfg))
    joints_fn = workload.joints_fn(cfg, device)

    real_x, real_y = load_split("train", device)
    val_x, val_y = load_split("val", device)
    syn_x, syn_y = real_x[:0], real_y[:0]
    accepted: GeneratedSamples | None = None
    rounds, history, round_features = [], [], {}
    best = im.BestGeneration()
    finetune, start = False, 1

    with restored_checkpoint() as d:
        if d is not None:  # resume: both models, both optimizers, the data added and the round state
            load_weights(generator_model, d)
            load_weights(recognizer, d, RECOGNIZER_FILE)
            state = load_state(d)
            opt_generator.load_state_dict(state["optimizer_generator"])
            opt_recognizer.load_state_dict(state["optimizer_recognizer"])
            start, finetune = state["epoch"] + 1, state["finetune"]
            syn_x, syn_y = state["syn_x"].to(device), state["syn_y"].to(device)
            best = im.BestGeneration(state["best_max_acc"], state["best_epoch"], state["best_outputs"])
            journal = json.loads((d / REFINEMENT_FILE).read_text())
            init, rounds, history = journal["init"], journal["rounds"], journal["history"]
            accepted = read_generated_samples(d / GENERATED_FILE) if (d / GENERATED_FILE).exists() else None
            if (d / ROUND_FEATURES_FILE).exists():
                with np.load(d / ROUND_FEATURES_FILE, allow_pickle=False) as f:
                    round_features = {k: f[k] for k in f.files}
            print(f"refine: resumed after epoch {start - 1} with {len(syn_y)} synthetic samples", flush=True)

    def write(d: Path, metrics: dict, epoch: int) -> None:
        save_checkpoint(d, cpu_state(generator_model), workload.name, asdict(cfg), metrics)
        save_file({k: v.contiguous() for k, v in cpu_state(recognizer).items()}, str(d / RECOGNIZER_FILE))
        save_state(d, {
            "optimizer_generator": opt_generator.state_dict(), "optimizer_recognizer": opt_recognizer.state_dict(),
            "epoch": epoch, "finetune": finetune, "syn_x": syn_x.cpu(), "syn_y": syn_y.cpu(),
            "best_max_acc": best.max_acc, "best_epoch": best.epoch, "best_outputs": best.outputs,
        })  # fmt: skip
        write_json(d / REFINEMENT_FILE, {"init": init, "rounds": rounds, "history": history})
        write_generated_samples(d / GENERATED_FILE, accepted if accepted is not None else GeneratedSamples([], [], [], []))
        if round_features:
            np.savez(d / ROUND_FEATURES_FILE, **round_features)

    metrics = {}
    for epoch in range(start, cfg.epochs + 1):
        started = time.perf_counter()
        g = torch.Generator(device=device).manual_seed(epoch_seed(cfg.seed, epoch))
        train_x, train_y = torch.cat([real_x, syn_x]), torch.cat([real_y, syn_y])

        # 1. the generator, on real + synthetic
        generator_model.train()
        sums, steps = defaultdict(float), 0
        for idx in batches(len(train_y), cfg.batch_size, g):
            x, y = train_x[idx], train_y[idx]
            mask = torch.ones(len(y), x.shape[-1], dtype=torch.bool, device=device)
            loss, terms = cvae_losses(x, mask, generator_model(x, y, mask, generator=g), joints_fn, cfg.loss_weights)
            opt_generator.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(generator_model.parameters(), cfg.grad_clip)
            opt_generator.step()
            for k, v in terms.items():
                sums["train_loss" if k == "mixed" else f"train_{k}"] += v.item()
            steps += 1

        # 2. the recogniser: fine-tuned only right after a round that added data
        finetuned = finetune
        if finetune:
            for _ in range(cfg.finetune_epochs):
                recognizer_epoch(recognizer, opt_recognizer, train_x, train_y, cfg.batch_size, cfg.grad_clip, g)
            finetune = False

        # 3. one generated sample per real training clip, balanced labels in every batch
        labels = torch.from_numpy(balanced_labels(len(real_y), num_classes, cfg.batch_size)).to(device)
        x_gen = normalize_rot6d(generator_model.generate(labels, cfg.num_frames, g)["output"].float())
        logits_gen, feat_gen = recognize(recognizer, x_gen)
        accuracy_gen = im.accuracy(labels.cpu().numpy(), logits_gen.argmax(1).numpy())
        val_accuracy = _accuracy(recognizer, val_x, val_y)

        # 4. keep the best-recognised generation since the last round
        if accuracy_gen > best.max_acc:
            _, train_feat = recognize(recognizer, train_x)
            best.offer(accuracy_gen, epoch, {
                "x": x_gen.cpu(), "y": labels.cpu(), "logits": logits_gen, "feat": feat_gen,
                "train_feat": train_feat, "train_y": train_y.cpu(), "n_real": torch.tensor(len(real_y)),
            })  # fmt: skip

        # 5. a data-adding round
        if epoch % cfg.round_every == 0:
            best_accuracy = best.max_acc
            generation_epoch, cached = best.take()  # reset in every case, added or skipped (defect 6)
            selection = im.select_by_feature_ratio(
                cached["logits"].numpy(), cached["y"].numpy(), cached["feat"].numpy(), cached["train_feat"].numpy(),
                cached["train_y"].numpy(), num_classes, cfg.confidence_threshold, cfg.select_fraction,
            )  # fmt: skip
            entry = {
                "round": len(rounds) + 1, "epoch": epoch, "generation_epoch": generation_epoch,
                "accuracy_gen": best_accuracy, "survivors_per_class": _counts(selection.survivors, names),
                "skipped": selection.skipped, "reason": selection.reason,
            }  # fmt: skip
            idx = torch.from_numpy(selection.indices)
            kept_y = cached["y"][idx]
            entry["accepted_per_class"] = _counts(np.bincount(kept_y.numpy(), minlength=num_classes), names)
            if not selection.skipped:
                x_kept = cached["x"][idx]
                pose = matrix_to_axis_angle(rot6d_to_matrix(x_kept.permute(0, 3, 1, 2)))  # (n, T, 24, 3)
                mask = torch.ones(len(idx), x_kept.shape[-1], dtype=torch.bool, device=device)
                with torch.no_grad():
                    joints = rot6d_to_joints(x_kept.to(device), mask, joints_fn).permute(0, 3, 1, 2).cpu()
                samples = GeneratedSamples(
                    list(pose.numpy()), list(joints.numpy()), kept_y.numpy(),
                    np.full(len(idx), generation_epoch),  # one entry per kept sample (defect 11)
                    selection.scores, cached["feat"][idx].numpy(),
                )  # fmt: skip
                accepted = samples if accepted is None else accepted.concat(samples)
                syn_x, syn_y = torch.cat([syn_x, x_kept.to(device)]), torch.cat([syn_y, kept_y.to(device)])
                finetune = True
                n_real, k = int(cached["n_real"]), entry["round"]
                round_features.update({
                    f"round{k}/real_feat": cached["train_feat"][:n_real].numpy(), f"round{k}/real_y": cached["train_y"][:n_real].numpy(),
                    f"round{k}/synthetic_feat": cached["feat"][idx].numpy(), f"round{k}/synthetic_y": kept_y.numpy(),
                })  # fmt: skip
            entry["synthetic_total"] = len(syn_y)
            rounds.append(entry)
            verdict = f"skipped ({selection.reason})" if selection.skipped else f"added {entry['accepted_per_class']}"
            print(f"refine round {entry['round']} at epoch {epoch} (best generation: epoch {generation_epoch}, "
                  f"accuracy {best_accuracy:.3f}): {verdict}", flush=True)  # fmt: skip

        history.append({
            "epoch": epoch, "accuracy_gen": accuracy_gen, "val_accuracy": val_accuracy, "finetuned": finetuned,
            "accuracy_gen_per_class": _per_class(labels.cpu().numpy(), logits_gen.numpy(), names),
            "train_loss": sums["train_loss"] / max(1, steps),
        })  # fmt: skip
        metrics = {k: v / max(1, steps) for k, v in sums.items()}
        metrics.update(
            epoch=epoch, accuracy_gen=accuracy_gen, val_accuracy=val_accuracy, finetuned=int(finetuned),
            synthetic_samples=len(syn_y), rounds_added=sum(not r["skipped"] for r in rounds),
            rounds_skipped=sum(r["skipped"] for r in rounds), epoch_seconds=time.perf_counter() - started,
        )  # fmt: skip
        print(f"refine epoch {epoch}/{cfg.epochs} loss={metrics['train_loss']:.4g} accuracy_gen={accuracy_gen:.3f} "
              f"val_accuracy={val_accuracy:.3f} synthetic={len(syn_y)} ({metrics['epoch_seconds']:.1f} s)", flush=True)  # fmt: skip
        report_epoch(epoch, metrics, lambda d, e=epoch, m=dict(metrics): write(d, m, e))

    val_logits, _ = recognize(recognizer, val_x)
    final = {k: metrics[k] for k in ("accuracy_gen", "val_accuracy", "synthetic_samples", "rounds_added", "rounds_skipped") if k in metrics}
    predictions = {"val/label": val_y.cpu().numpy(), "val/logits": val_logits.numpy()}
    report_final(final, lambda d: write(d, {**final, "final": 1}, cfg.epochs), predictions)


# ---------------------------------------------------------------------------- evaluation (§7)


def train_recognizer(model, train, val, recipe: dict, seed: int, device) -> torch.nn.Module:
    """Train a recogniser with a stage's recorded recipe (AdamW, cosine schedule per epoch,
    gradient clipping, batch size, epochs) and keep the weights best on validation by the
    recipe's ``select_metric`` (``val_accuracy`` or ``val_loss``), as the platform loop does
    for the ``recognizer`` and ``final`` stages."""
    (x, y), (val_x, val_y) = train, val
    epochs = int(recipe["epochs"])
    by_loss = recipe.get("select_metric") == "val_loss"
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": params, "lr": recipe["lr"], "weight_decay": recipe["weight_decay"]}])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: cosine_factor(e, epochs))
    best_value, best_state = -np.inf, cpu_state(model)
    for epoch in range(epochs):
        g = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))
        recognizer_epoch(model, optimizer, x, y, int(recipe["batch_size"]), float(recipe["grad_clip"]), g)
        scheduler.step()
        logits, _ = recognize(model, val_x)
        labels = val_y.cpu()
        value = -F.cross_entropy(logits, labels).item() if by_loss else im.accuracy(labels.numpy(), logits.argmax(1).numpy())
        if value > best_value:
            best_value, best_state = value, cpu_state(model)
    model.load_state_dict(best_state)
    return model


def eval_loop(loop_config: dict) -> None:
    workload = loop_config["workload"]
    cfg = workload.make_config(loop_config["config"])
    _one_worker("eval")
    for name in ("init_recognizer", "final_recognizer", "init_cvae"):
        if not getattr(cfg, name):
            raise ValueError(f"the eval stage needs {name} (the real-data recogniser, the recogniser trained with synthetic "
                             "samples and the generator)")  # fmt: skip
    device = ray.train.torch.get_device()
    names = cfg.class_names
    real = load_split("train", device)
    val = load_split("val", device)
    test_x, test_y = load_split("test", device)
    test_labels = test_y.cpu().numpy()
    try:
        syn = load_split("synthetic", device)
    except (KeyError, ValueError):  # no synthetic dataset, or no accepted sample
        syn = (real[0][:0], real[1][:0])
    if cfg.eval_seeds > 1 and not len(syn[1]):
        print("eval: no synthetic samples to retrain with: later seeds of 'with_synthetic' train on real data only", flush=True)
    mixed = (torch.cat([real[0], syn[0]]), torch.cat([real[1], syn[1]]))
    recipes = {"real_only": (cfg.init_recognizer, real), "with_synthetic": (cfg.final_recognizer, mixed)}

    results: dict[str, list] = {name: [] for name in recipes}
    fingerprints: dict[str, str] = {}
    with restored_checkpoint() as d:
        if d is not None:  # resume: the seeds scored before the restart
            done = json.loads((d / EVALUATION_FILE).read_text())
            results, fingerprints = done["seeds"], done["fingerprints"]

    reference = build_recognizer(asdict(cfg)).to(device)  # the real-data recogniser: generation features
    reference_state = load_infant_weights(reference, cfg.init_recognizer, "stgcn", cfg)
    sources = {"real_only": cfg.init_recognizer, "with_synthetic": cfg.final_recognizer}

    for i in range(cfg.eval_seeds):
        for recipe_name, (path, data) in recipes.items():
            if i < len(results[recipe_name]):
                continue  # done before a restart
            saved = read_infant_config(path)
            seed = int(saved["seed"]) + i
            torch.manual_seed(seed)
            model = build_recognizer(asdict(cfg)).to(device)
            if i == 0:
                fingerprints[recipe_name] = state_fingerprint(load_infant_weights(model, path, "stgcn", cfg))
                source = "checkpoint"
            else:
                if saved.get("init_recognizer") and Path(saved["init_recognizer"]).is_dir():
                    load_infant_weights(model, saved["init_recognizer"], "stgcn", cfg)
                train_recognizer(model, data, val, saved, seed, device)
                source = f"retrained (seed {seed})"
            logits, _ = recognize(model, test_x)
            pred = logits.argmax(1).numpy()
            results[recipe_name].append({
                "source": source, "accuracy": im.accuracy(test_labels, pred), "per_class": _per_class(test_labels, logits.numpy(), names),
                "confusion": im.confusion(test_labels, pred, len(names)).tolist(), "pred": pred.tolist(),
            })  # fmt: skip
            print(f"eval seed {i}: {recipe_name} test accuracy {results[recipe_name][-1]['accuracy']:.3f} ({source})", flush=True)
        partial = {f"{k}_accuracy_seed{i}": v[i]["accuracy"] for k, v in results.items()}
        report_epoch(i, {"epoch": i, **partial}, lambda d: _write_eval(d, workload, cfg, reference_state, {"seeds": results, "fingerprints": fingerprints}, {"epoch": i}))

    generation = generation_metrics(cfg, reference, real, (test_x, test_y), device)
    majority = float(np.bincount(test_labels, minlength=len(names)).max() / len(test_labels))
    summary = {
        "recognizer_test_accuracy": {k: dict(zip(("mean", "ci95"), im.mean_ci95([r["accuracy"] for r in v]))) for k, v in results.items()},
        "recognizer_test_accuracy_per_seed": {k: [r["accuracy"] for r in v] for k, v in results.items()},
        "recognizer_test_accuracy_per_class": {
            k: {n: float(np.mean([r["per_class"][n] for r in v if r["per_class"][n] is not None] or [np.nan])) for n in names}
            for k, v in results.items()
        },
        "confusion": {k: np.sum([r["confusion"] for r in v], axis=0).tolist() for k, v in results.items()},
        "majority_baseline_accuracy": majority,
        "n_test": int(len(test_labels)),
        "n_synthetic": int(len(syn[1])),
        **generation,
        "sources": sources,
        "fingerprints": fingerprints,
        "seeds": results,
    }
    final = {
        "real_only_test_accuracy": summary["recognizer_test_accuracy"]["real_only"]["mean"],
        "with_synthetic_test_accuracy": summary["recognizer_test_accuracy"]["with_synthetic"]["mean"],
        "majority_baseline_accuracy": majority,
        **{f"generation_{k}": v for k, v in generation["generation"].items()},
    }
    predictions = {"test/label": test_labels}
    predictions.update({f"test/{k}_pred": np.asarray([r["pred"] for r in v], dtype=np.int64) for k, v in results.items()})
    report_final(final, lambda d: _write_eval(d, workload, cfg, reference_state, summary, {**final, "final": 1}), predictions)


def _write_eval(d: Path, workload, cfg, reference_state: dict, evaluation: dict, metrics: dict) -> None:
    save_checkpoint(d, reference_state, workload.name, asdict(cfg), metrics)
    write_json(d / EVALUATION_FILE, evaluation)


def generation_metrics(cfg, reference, real, test, device) -> dict:
    """ACTOR's generation metrics over ``generation_seeds`` generated sets, with the
    ``reference`` (real-data) recogniser's features; mean and ci95 over the seeds."""
    generator_model = build_generator(asdict(cfg)).to(device)
    load_infant_weights(generator_model, cfg.init_cvae, "cvae", cfg)
    (real_x, _), (test_x, test_y) = real, test
    labels = test_y.cpu().numpy()
    _, test_feat = recognize(reference, test_x)
    _, real_feat = recognize(reference, real_x)
    test_feat, real_feat = test_feat.numpy(), real_feat.numpy()
    # noise sequences: every frame and joint drawn from the training poses' per-joint axis-angle mean and spread
    real_aa = rot6d_to_axis_angle(real_x.permute(0, 3, 1, 2).cpu())  # (N, T, 24, 3)
    mean, std = real_aa.mean(dim=(0, 1)).numpy(), real_aa.std(dim=(0, 1)).numpy()
    per_seed = defaultdict(list)
    per_class = []
    for s in range(cfg.generation_seeds):
        seed = cfg.seed * 1000 + s
        g = torch.Generator(device=device).manual_seed(seed)
        x_gen = normalize_rot6d(generator_model.generate(test_y, cfg.num_frames, g)["output"].float())
        logits, feat = recognize(reference, x_gen)
        logits, feat = logits.numpy(), feat.numpy()
        rng = np.random.default_rng(seed)
        noise = mean + std * rng.standard_normal((len(labels), cfg.num_frames, *mean.shape))
        noise_x = axis_angle_to_rot6d(torch.from_numpy(noise.astype(np.float32))).permute(0, 2, 3, 1)
        _, noise_feat = recognize(reference, noise_x)
        per_seed["fid_test"].append(im.fid(feat, test_feat))
        per_seed["fid_noise_test"].append(im.fid(noise_feat.numpy(), test_feat))
        per_seed["accuracy_gen"].append(im.accuracy(labels, logits.argmax(1)))
        per_seed["accuracy_gen_shuffled_labels"].append(im.accuracy(rng.permutation(labels), logits.argmax(1)))
        per_seed["diversity"].append(im.diversity(feat, seed=seed))
        per_seed["multimodality"].append(im.multimodality(feat, labels, seed=seed))
        per_seed["diversity_real_test"].append(im.diversity(test_feat, seed=seed))
        per_seed["multimodality_real_test"].append(im.multimodality(test_feat, labels, seed=seed))
        per_class.append(im.per_class_accuracy(labels, logits.argmax(1), cfg.num_classes))
    stats = {k: im.mean_ci95(v) for k, v in per_seed.items()}
    generation = {k: m for k, (m, _) in stats.items()}
    generation["fid_train_test"] = im.fid(real_feat, test_feat)  # two real sets: the floor
    generation["accuracy_real_test"] = im.accuracy(labels, recognize(reference, test_x)[0].argmax(1).numpy())
    class_means = np.nanmean(np.stack(per_class), axis=0)
    return {
        "generation": generation,
        "generation_ci95": {k: h for k, (_, h) in stats.items()},
        "generation_per_seed": dict(per_seed),
        "generation_accuracy_per_class": {n: float(v) for n, v in zip(cfg.class_names, class_means)},
        "generation_seeds": cfg.generation_seeds,
    }
