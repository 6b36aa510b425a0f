"""ViTPain: positions, trainable parameters, LoRA, multi-shot, checkpoints."""

import pickle

import pytest
import torch

from affectlab.data.augment import augment_faces
from affectlab.models.vitpain import ViTPainConfig, build_vitpain, param_groups
from affectlab.train.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from affectlab.serving.pain import build_model
from affectlab.train.config import config_to_dict
from affectlab.workloads.pain import PRESETS, PainConfig

TINY = {"backbone": "tiny", "image_size": 48, "pretrained": False}


def permute_patches(images, patch, seed=0):
    b, c, h, w = images.shape
    g = h // patch
    tiles = images.reshape(b, c, g, patch, g, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c, patch, patch)
    tiles = tiles[:, torch.randperm(g * g, generator=torch.Generator().manual_seed(seed))]
    return tiles.reshape(b, g, g, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def sharpen(encoder):
    """Make a random-init encoder look trained: layer scales at 1 and peaked attention.
    (At init, LayerScale 1e-5 and near-uniform attention hide positions from any ViT.)"""
    with torch.no_grad():
        for blk in encoder.blocks:
            blk.gamma_1.fill_(1.0)
            blk.gamma_2.fill_(1.0)
            blk.attn.qkv.weight.mul_(20)


def test_backbone_sees_positions():
    """With RoPE in the backbone's own forward, shuffling patches changes the CLS token;
    the original's manual block loop (no ``rope=``) leaves it unchanged."""
    torch.manual_seed(0)
    model = build_vitpain({**TINY, "finetune": "full"}).eval()
    sharpen(model.encoder)
    images = torch.rand(2, 3, 48, 48)
    shuffled = permute_patches(images, patch=8)
    with torch.no_grad():
        ours = model.tokens(model.encoder, images)[:, 0], model.tokens(model.encoder, shuffled)[:, 0]

        def original_path(x):  # patch_embed, prepend CLS, blocks without rope, norm
            e = model.encoder
            t = e.patch_embed((x - model.mean) / model.std).flatten(1, -2)
            t = torch.cat([e.cls_token.expand(len(t), -1, -1), t], dim=1)
            for blk in e.blocks:
                t = blk(t)
            return e.norm(t)[:, 0]

        theirs = original_path(images), original_path(shuffled)
    assert (ours[0] - ours[1]).abs().max() > 1e-2
    assert (theirs[0] - theirs[1]).abs().max() < 1e-4
    assert model.num_prefix == 5  # CLS + 4 register tokens


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_every_trainable_parameter_is_optimised_au_queries_included(finetune):
    torch.manual_seed(0)
    model = build_vitpain({**TINY, "finetune": finetune})
    groups = param_groups(model, lr=1e-3, weight_decay=0.1, backbone_lr_mult=0.1)
    in_optimizer = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_optimizer == trainable
    assert id(model.au_head.queries) in in_optimizer
    assert {g["name"]: g["lr"] for g in groups} == {"backbone": pytest.approx(1e-4), "heads": 1e-3}

    before = model.au_head.queries.detach().clone()
    opt = torch.optim.AdamW(groups)
    out = model(torch.rand(4, 3, 48, 48), torch.rand(4, 3, 48, 48))
    out["aus"].sum().backward()
    opt.step()
    assert not torch.equal(before, model.au_head.queries)  # the AU queries really train


def test_lora_wraps_attention_and_freezes_the_backbone():
    model = build_vitpain({**TINY, "finetune": "lora"})
    lora = [n for n, _ in model.encoder.named_modules() if n.endswith("lora_A")]
    assert len(lora) == 2 * 2  # qkv and proj in each of the 2 blocks
    trainable = [n for n, p in model.encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert model.neutral_encoder is not model.encoder  # separate weights for the reference


def test_multi_shot_averages_the_shots():
    torch.manual_seed(0)
    model = build_vitpain({**TINY, "finetune": "full"}).eval()
    image, refs = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 3, 48, 48)
    with torch.no_grad():
        multi = model(image, refs)
        single = [model(image, refs[:, i]) for i in range(3)]
    expected = torch.stack([s["pspi"] for s in single]).mean(0)
    assert torch.allclose(multi["pspi"], expected, atol=1e-6)


def test_checkpoint_round_trip_rebuilds_without_download(tmp_path):
    torch.manual_seed(0)
    cfg = PainConfig(**PRESETS["tiny"])
    from affectlab.workloads.pain import PainWorkload

    model = PainWorkload().build_model(cfg).eval()
    save_checkpoint(tmp_path, model.state_dict(), "pain", config_to_dict(cfg), {"val_pearson": 0.5})
    loaded, loaded_cfg, metrics = load_model(tmp_path, build_model)
    x, r = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x, r)["pspi"], loaded(x, r)["pspi"])
    assert vars(loaded_cfg) == config_to_dict(cfg) and metrics == {"val_pearson": 0.5}


def test_a_pickle_is_never_loaded(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.zeros(1)}, "pain", config_to_dict(PainConfig(**PRESETS["tiny"])), {})

    class Boom:
        def __reduce__(self):
            return (print, ("unpickled!",))

    (tmp_path / "model.safetensors").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_checkpoint(tmp_path)


def test_config_rejects_unknown_names_and_bad_values():
    from affectlab.workloads.pain import PainWorkload

    with pytest.raises(ValueError, match="unknown PainConfig field"):
        PainWorkload().make_config({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="backbone must be one of"):
        PainConfig(backbone="small_dinov3")
    with pytest.raises(ValueError, match="reference_policy"):
        PainConfig(reference_policy="random")
    with pytest.raises(ValueError):
        ViTPainConfig(finetune="half")


def test_augmentation_is_seeded_and_stays_in_range():
    images = torch.rand(4, 3, 32, 32)
    a = augment_faces(images, torch.Generator().manual_seed(1))
    b = augment_faces(images, torch.Generator().manual_seed(1))
    c = augment_faces(images, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


@pytest.mark.parametrize("use_reference", [True, False])
def test_a_training_step_with_and_without_references(use_reference):
    from affectlab.workloads.pain import PainWorkload

    torch.manual_seed(0)
    cfg = PainConfig(**{**PRESETS["tiny"], "use_reference": use_reference})
    workload = PainWorkload()
    model = workload.build_model(cfg)
    batch = {"image": torch.randint(0, 255, (4, 3, 48, 48), dtype=torch.uint8),
             "reference": torch.randint(0, 255, (4, 2, 3, 48, 48), dtype=torch.uint8),
             "pspi": torch.tensor([0.0, 2.0, 5.0, 9.0]), "aus": torch.rand(4, 6)}  # fmt: skip
    loss, terms = workload.train_step(model, batch, cfg, torch.Generator().manual_seed(0))
    w = cfg.w_pspi * terms["pspi_loss"] + cfg.w_au * terms["au_loss"] + cfg.w_binary * terms["binary_loss"]
    assert loss.item() == pytest.approx(w, rel=1e-5)  # the total is the configured weighted sum
    assert (model.neutral_encoder is None) != use_reference
