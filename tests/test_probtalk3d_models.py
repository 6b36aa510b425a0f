"""ProbTalk3D models: priors, quantiser layout, masks, audio front-ends, frozen prior,
seeded generation (models/probtalk3d*.py, models/audio_encoders.py)."""

import math

import numpy as np
import pytest
import torch

from affectlab.metrics.talking_heads import sample_diversity
from affectlab.models.audio_encoders import HubertAudioEncoder, build_audio_encoder, hubert_num_frames
from affectlab.models.probtalk3d import PREDICTOR_TERMS, build_probtalk3d, trainable_parameters
from affectlab.models.probtalk3d_prior import (
    VAE_PRIOR_TERMS,
    VQ_PRIOR_TERMS,
    VectorQuantizer,
    build_prior,
    sample_codes,
)

VOCAB = {"n_identities": 4, "n_emotions": 8, "n_intensities": 3}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def smooth_motion(n: int, frames: int, seed: int) -> torch.Tensor:
    """Scaled 53-d motion from 3 sinusoid sources (random frequency and phase per sequence)
    mixed by one fixed matrix: smooth, low-dimensional, around 0.5 like min-max scaled FLAME."""
    g = torch.Generator().manual_seed(seed)
    mix = 0.1 * torch.randn(3, 53, generator=torch.Generator().manual_seed(0))
    t = torch.arange(frames, dtype=torch.float32)[None, :, None] / 25
    freq = 0.5 + 2 * torch.rand(n, 1, 3, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, 3, generator=g)
    return 0.5 + torch.sin(2 * math.pi * freq * t + phase) @ mix


def train_prior(kind: str, steps: int = 120):
    torch.manual_seed(0)
    prior = build_prior(kind, "tiny")
    train = smooth_motion(64, 40, seed=1)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=2e-3, betas=(0.9, 0.98), eps=1e-9)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss, _ = prior.loss(train[torch.randint(0, 64, (8,), generator=g)], generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return prior.eval(), train


@pytest.fixture(scope="module")
def trained_vq():
    return train_prior("vqvae")


def padded_batch(a: torch.Tensor, b: torch.Tensor, fill: float = 7.0):
    """Stack two sequences (T_a ≥ T_b) with junk after b's end, and the mask."""
    x = torch.full((2, *a.shape), fill)
    x[0], x[1, : b.shape[0]] = a, b
    mask = torch.zeros(2, a.shape[0], dtype=torch.bool)
    mask[0], mask[1, : b.shape[0]] = True, True
    return x, mask


# ------------------------------------------------------------------------ stage 1


@pytest.mark.parametrize("kind", ["vqvae", "vae"])
def test_prior_reconstructs_held_out_motion_better_than_the_mean(kind, trained_vq):
    prior, train = trained_vq if kind == "vqvae" else train_prior("vae")
    test = smooth_motion(16, 40, seed=2)  # held out: other frequencies and phases
    with torch.no_grad():
        latent = prior(test)["latent"] if kind == "vqvae" else prior.encode(test)[0]
        recon = prior.decode(latent)
    error = (recon - test).abs().mean().item()
    baseline = (test - train.mean((0, 1))).abs().mean().item()
    assert error < 0.5 * baseline, (error, baseline)


def test_quantiser_assigns_codes_per_frame_not_channel_major():
    # 2 tokens per frame of 2 channels; codebook rows are easy to tell apart
    quantizer = VectorQuantizer(n_codes=4, code_dim=2, tokens_per_frame=2, beta=0.25)
    book = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    quantizer.codebook.weight.data.copy_(book)
    want = torch.tensor([[[1, 2], [3, 0], [2, 2]]])  # (B=1, T=3, G=2)
    z = book[want].reshape(1, 3, 4) + 0.01  # frame t's channels = [code a, code b]
    out = quantizer(z, torch.ones(1, 3, dtype=torch.bool))
    assert out["codes"].shape == (1, 3, 2)
    assert torch.equal(out["codes"], want)  # channel-major slicing would mix frames
    assert torch.allclose(out["latent"], book[want].reshape(1, 3, 4))  # straight-through value = z_q


@pytest.mark.parametrize("tokens_per_frame", [1, 2])
def test_prior_codes_are_b_t_g(tokens_per_frame):
    prior = build_prior("vqvae", "tiny", tokens_per_frame=tokens_per_frame).eval()
    out = prior(torch.rand(3, 11, 53))
    assert out["codes"].shape == (3, 11, tokens_per_frame)
    assert out["motion"].shape == (3, 11, 53)


@pytest.mark.parametrize("kind,terms", [("vqvae", VQ_PRIOR_TERMS), ("vae", VAE_PRIOR_TERMS)])
def test_padded_batch_gives_the_real_frames_their_unpadded_loss(kind, terms):
    torch.manual_seed(0)
    prior = build_prior(kind, "tiny").eval()
    a, b = smooth_motion(1, 10, seed=3)[0], smooth_motion(1, 6, seed=4)[0]
    x, mask = padded_batch(a, b)
    with torch.no_grad():
        total, batch_terms = prior.loss(x, mask)
        total_a, terms_a = prior.loss(a[None])
        total_b, terms_b = prior.loss(b[None])
        single_padded, _ = prior.loss(x[1:], mask[1:])
    assert set(batch_terms) == set(terms)
    assert single_padded.item() == pytest.approx(total_b.item(), rel=1e-5)
    # every loss term is a mean over real frames: the batch is the frame-weighted mix (10 : 6)
    assert total.item() == pytest.approx((10 * total_a.item() + 6 * total_b.item()) / 16, rel=1e-5)
    for name in set(terms) - {"perplexity"}:
        assert batch_terms[name] == pytest.approx((10 * terms_a[name] + 6 * terms_b[name]) / 16, rel=1e-5)


def test_loss_needs_a_generator_only_where_it_draws():
    vae = build_prior("vae", "tiny").train()
    with pytest.raises(ValueError, match="torch.Generator"):
        vae.loss(torch.rand(1, 5, 53))
    vae.loss(torch.rand(1, 5, 53), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="prefix"):
        vae.eval().loss(torch.rand(1, 5, 53), torch.tensor([[True, False, True, True, True]]))


def transformer_layer_params(w: int, ffn: int) -> int:
    attention = 3 * w * w + 3 * w + w * w + w
    return attention + (w * ffn + ffn) + (ffn * w + w) + 2 * 2 * w  # + two LayerNorms


def test_paper_preset_sizes():
    """Parameter counts follow the §4.1 / §4.2 tables (the reference states no totals)."""
    w, ffn, k, m = 256, 384, 5, 53
    trunk = (w * w * k + w) + (w * w + w) + 6 * transformer_layer_params(w, ffn) + 2 * w  # conv, Linear, 6 layers, final LN
    encoder = (m * w + w) + trunk
    decoder = trunk + w * m  # output Linear(256→53, no bias)
    vq = build_prior("vqvae", "paper")
    assert vq.quantizer.codebook.weight.shape == (256, 128)
    assert sum(p.numel() for p in vq.parameters()) == encoder + decoder + 256 * 128
    vae = build_prior("vae", "paper")
    assert sum(p.numel() for p in vae.parameters()) == encoder + decoder + 2 * (w * w + w)

    model = build_probtalk3d("vqvae", "paper", n_identities=32, n_emotions=8, n_intensities=3, audio="logmel")
    pred_trunk = (w * w * k + w) + (w * w + w) + 12 * transformer_layer_params(w, ffn) + 2 * w
    logmel = (80 * w + w) + 2 * (w * w * 3 + w) + 2 * w
    expected = pred_trunk + (w * w + w) + 43 * w + logmel  # + audio projection, style (= Linear(43→256, no bias))
    assert sum(p.numel() for p in trainable_parameters(model)) == expected


def test_paper_hubert_is_hubert_base_and_frames_pair_up():
    encoder, source = build_audio_encoder("hubert", "paper")
    assert source.startswith("random init")
    assert encoder.out_dim == 1536
    # HuBERT BASE is ~95M parameters (Hsu et al. 2021, Table 1)
    assert 94e6 < sum(p.numel() for p in encoder.parameters()) < 95.5e6
    frozen = {n.split(".")[1] for n, p in encoder.named_parameters() if not p.requires_grad}
    assert frozen == {"feature_extractor", "feature_projection", "encoder"}
    layers = {int(n.split(".")[3]) for n, p in encoder.named_parameters() if "encoder.layers" in n and not p.requires_grad}
    assert layers == {0, 1}
    # 1 s of 16 kHz audio → 49 HuBERT frames → 24 motion frames at 25 fps (the odd one dropped)
    assert hubert_num_frames(torch.tensor([16000, 640, 639]), encoder.hubert.config).tolist() == [49, 1, 1]


# ---------------------------------------------------------------------- audio


def test_hubert_pair_concatenation_and_truncation():
    torch.manual_seed(0)
    encoder, _ = build_audio_encoder("hubert", "tiny")
    encoder.eval()
    audio = torch.randn(1, 16000)  # 49 HuBERT frames
    with torch.no_grad():
        hidden = encoder.hubert((audio - audio.mean()) / audio.std(unbiased=False)).last_hidden_state
        feats, mask = encoder(audio)
    assert feats.shape == (1, 24, 2 * 32) and mask.all()  # ⌊49 / 2⌋ frames
    assert torch.allclose(feats[0, 5], torch.cat([hidden[0, 10], hidden[0, 11]]), atol=1e-5)
    with torch.no_grad():
        _, longer_motion = encoder(audio, torch.ones(1, 30, dtype=torch.bool))  # motion longer: truncated to 24
        short_feats, shorter_motion = encoder(audio, torch.ones(1, 20, dtype=torch.bool))  # audio longer
    assert longer_motion.shape == (1, 30) and longer_motion.sum() == 24
    assert shorter_motion.shape == (1, 20) and shorter_motion.all()
    assert torch.allclose(short_feats, feats[:, :20], atol=1e-5)


def test_hubert_normalisation_is_scale_free():
    torch.manual_seed(0)
    encoder, _ = build_audio_encoder("hubert", "tiny")
    encoder.eval()
    audio = torch.randn(1, 8000)
    with torch.no_grad():
        a, _ = encoder(audio)
        b, _ = encoder(3.0 * audio + 0.2)  # min-max or any affine rescaling: same features
    assert torch.allclose(a, b, atol=1e-4)


def test_logmel_encoder_padding_invariant():
    torch.manual_seed(0)
    encoder, source = build_audio_encoder("logmel", "tiny")
    assert "log-mel" in source and encoder.out_dim == 64
    encoder.eval()
    a, b = torch.randn(9, 80), torch.randn(5, 80)
    x, mask = padded_batch(a, b)
    with torch.no_grad():
        batch, out_mask = encoder(x, mask)
        single, _ = encoder(b[None])
    assert torch.equal(out_mask, mask)
    assert torch.allclose(batch[1, :5], single[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"\[B, T, 80\]"):
        encoder(torch.randn(1, 5, 40))


# ------------------------------------------------------------------------ stage 2


def tiny_predictor(kind: str = "vqvae", audio: str = "logmel", prior=None):
    torch.manual_seed(0)
    return build_probtalk3d(kind, "tiny", audio=audio, prior=prior, **VOCAB)


def stage2_batch(audio: str = "logmel"):
    g = torch.Generator().manual_seed(5)
    frames = 12
    x = torch.randn(2, frames, 80, generator=g) if audio == "logmel" else torch.randn(2, 640 * frames + 100, generator=g)
    frame_mask = torch.ones(2, frames, dtype=torch.bool)
    frame_mask[1, 8:] = False
    style = torch.tensor([[0, 1, 2], [3, 7, 0]])
    return x, style, smooth_motion(2, frames, seed=6), frame_mask


@pytest.mark.parametrize("kind,audio", [("vqvae", "logmel"), ("vae", "hubert")])
def test_frozen_prior_is_bit_identical_after_predictor_steps(kind, audio):
    model = tiny_predictor(kind, audio)
    before = {k: v.clone() for k, v in model.prior.state_dict().items()}
    trainable = {id(p) for p in trainable_parameters(model)}
    assert not any(id(p) in trainable for p in model.prior.parameters())
    head_before = model.trunk.linear.weight.clone()
    # weight decay on every parameter handed over: the frozen ones still must not move
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    x, style, motion, mask = stage2_batch(audio)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        loss, terms = model.loss(x, style, motion, mask, generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert set(terms) == set(PREDICTOR_TERMS)
    assert not model.prior.training and model.training
    assert all(torch.equal(before[k], v) for k, v in model.prior.state_dict().items())
    assert not torch.equal(head_before, model.trunk.linear.weight)


def test_predictor_loss_padding_invariant():
    model = tiny_predictor().eval()
    x, style, motion, mask = stage2_batch()
    with torch.no_grad():
        x[1, 8:], motion[1, 8:] = 5.0, 9.0  # junk after the second sequence ends
        batch, terms = model.loss(x, style, motion, mask)
        a, terms_a = model.loss(x[:1], style[:1], motion[:1])
        b, terms_b = model.loss(x[1:, :8], style[1:], motion[1:, :8])
    assert batch.item() == pytest.approx((12 * a.item() + 8 * b.item()) / 20, rel=1e-5)


@pytest.mark.parametrize("kind", ["vqvae", "vae"])
def test_generation_is_seeded_only_by_the_generator(kind):
    model = tiny_predictor(kind)
    x, style, _, mask = stage2_batch()
    rng_state = torch.get_rng_state()

    def run(seed, **kw):
        return model.generate(x, style, mask, generator=torch.Generator().manual_seed(seed), temperature=0.5, **kw)

    first, out_mask = run(11)
    assert first.shape == (2, 12, 53) and torch.equal(out_mask, mask)
    assert torch.equal(first, run(11)[0])  # bit-identical
    assert not torch.equal(first, run(12)[0])
    assert torch.equal(first[1, 8:], torch.zeros(4, 53))  # padded frames are zero
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG was never touched
    greedy = [model.generate(x, style, mask, sample=False)[0] for _ in range(3)]
    assert all(torch.equal(greedy[0], g) for g in greedy)
    stack = torch.stack(greedy, 1)[0, :, :, :, None].numpy()  # (S, T, 53, 1) for the metric
    assert sample_diversity([stack]) == 0.0
    with pytest.raises(ValueError, match="Generator"):
        model.generate(x, style, mask)


def test_vae_fact_scales_the_noise():
    model = tiny_predictor("vae")
    x, style, _, mask = stage2_batch()
    mean, _ = model.generate(x, style, mask, sample=False)
    zero_noise, _ = model.generate(x, style, mask, fact=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(zero_noise, mean, atol=1e-6)

    def spread(fact):
        s = [model.generate(x, style, mask, fact=fact, generator=torch.Generator().manual_seed(i))[0][0] for i in range(6)]
        return sample_diversity([torch.stack(s)[..., None].numpy()])

    assert spread(20.0) > spread(1.0) > 0


def test_code_diversity_grows_with_temperature(trained_vq):
    """Fixed non-degenerate logits (code k at distance k/2) decoded by the trained prior."""
    prior, _ = trained_vq
    t, g_tokens, k = 20, prior.cfg.tokens_per_frame, prior.cfg.n_codes
    logits = -0.5 * torch.arange(k, dtype=torch.float32).expand(1, t, g_tokens, k)

    def diversity(temperature):
        gen = torch.Generator().manual_seed(0)
        motions = []
        for _ in range(10):
            codes = sample_codes(logits, temperature=temperature, generator=gen)
            with torch.no_grad():
                motions.append(prior.decode(prior.quantizer.lookup(codes))[0])
        return sample_diversity([torch.stack(motions)[..., None].numpy()])

    assert diversity(0.5) > diversity(0.1) > 0

    # end to end: a predictor over the trained prior, 10 seeded samples per temperature
    model = tiny_predictor(prior=prior)
    x, style, _, mask = stage2_batch()

    def generated(temperature):
        s = [model.generate(x, style, mask, temperature=temperature, generator=torch.Generator().manual_seed(i))[0][0] for i in range(10)]
        return sample_diversity([torch.stack(s)[..., None].numpy()])

    assert generated(0.5) > generated(0.1) > 0
    # top_k = 1 keeps the nearest code only: no diversity left
    codes = sample_codes(logits, temperature=0.5, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(codes, torch.zeros_like(codes))


def test_sampled_codes_follow_the_softmax():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2])).expand(20000, 3)
    codes = sample_codes(logits, temperature=1.0, generator=torch.Generator().manual_seed(0))
    freq = np.bincount(codes.numpy(), minlength=3) / 20000
    assert freq == pytest.approx([0.5, 0.3, 0.2], abs=0.015)
    with pytest.raises(ValueError, match="temperature"):
        sample_codes(logits, temperature=0.0, generator=torch.Generator())


def test_bad_inputs_are_named():
    model = tiny_predictor()
    x, style, motion, mask = stage2_batch()
    with pytest.raises(ValueError, match="emotion index out of range"):
        model.loss(x, torch.tensor([[0, 8, 0], [0, 0, 0]]), motion, mask)
    with pytest.raises(ValueError, match="prior given is a 'vae'"):
        build_probtalk3d("vqvae", "tiny", audio="logmel", prior=build_prior("vae", "tiny"), **VOCAB)
    with pytest.raises(FileNotFoundError, match="/nonexistent/hubert"):
        build_audio_encoder("hubert", path="/nonexistent/hubert")
    assert isinstance(tiny_predictor(audio="hubert").audio_encoder, HubertAudioEncoder)
