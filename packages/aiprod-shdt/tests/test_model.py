"""SHDT model: patches, RoPE, masking, checkpointing, v1 size."""

import pytest
import torch

from aiprod_shdt.model import SHDT, patchify, unpatchify
from aiprod_shdt.presets import PRESETS, V1_VIDEO_TOKENS, memory_estimates
from aiprod_shdt.rope import apply_rope, rope_angles


def randomized_tiny(**over) -> SHDT:
    """Tiny model with the zero-initialised gates/output randomised, so every path matters."""
    torch.manual_seed(0)
    model = SHDT(**{**PRESETS["tiny"], **over})
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return model.eval()


def inputs(b=2, t=2, h=4, w=6, length=5, text_dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 16, t, h, w, generator=g), torch.rand(b, generator=g),
            torch.randn(b, length, text_dim, generator=g), torch.ones(b, length, dtype=torch.bool))


def test_patchify_roundtrip_and_token_order():
    x = torch.randn(2, 16, 3, 8, 10)
    tok = patchify(x, 2)
    assert tok.shape == (2, 3 * 4 * 5, 64)
    assert torch.equal(unpatchify(tok, (3, 4, 5), 2), x)
    # token (t=1, h=2, w=3) holds the 2x2 patch at rows 4:6, cols 6:8 of frame 1
    idx = 1 * 20 + 2 * 5 + 3
    assert torch.equal(tok[0, idx].view(16, 2, 2), x[0, :, 1, 4:6, 6:8])


def test_rope_scores_depend_on_relative_position_only():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32, generator=g), torch.randn(1, 1, 1, 32, generator=g)
    ang = rope_angles((6, 6, 6), (8, 12, 12), 10_000.0).view(6, 6, 6, 16)

    def score(pq, pk):
        a, b = ang[pq], ang[pk]
        return (apply_rope(q, a.cos()[None], a.sin()[None]) * apply_rope(k, b.cos()[None], b.sin()[None])).sum()

    assert torch.allclose(score((1, 2, 3), (2, 4, 1)), score((3, 3, 4), (4, 5, 2)), atol=1e-5)
    assert not torch.allclose(score((1, 2, 3), (2, 4, 1)), score((1, 2, 3), (2, 4, 2)), atol=1e-3)


def test_output_depends_on_text_and_sigma():
    model = randomized_tiny()
    x, s, c, m = inputs()
    with torch.no_grad():
        v = model(x, s, c, m)
        assert not torch.allclose(v, model(x, s, c + 1, m), atol=1e-4)
        assert not torch.allclose(v, model(x, s * 0.5, c, m), atol=1e-4)


def test_text_padding_is_ignored():
    """A padded prompt gives the same velocity as the same prompt unpadded, alone or in a batch."""
    model = randomized_tiny()
    x, s, c, _ = inputs(b=2, length=7)
    m = torch.ones(2, 7, dtype=torch.bool)
    m[1, 4:] = False
    garbage = c.clone()
    garbage[1, 4:] = 100.0
    with torch.no_grad():
        v = model(x, s, c, m)
        assert torch.allclose(v, model(x, s, garbage, m), atol=1e-5)
        alone = model(x[1:], s[1:], c[1:, :4], torch.ones(1, 4, dtype=torch.bool))
        assert torch.allclose(v[1:], alone, atol=1e-5)


def test_activation_checkpointing_same_gradients():
    model = randomized_tiny().train()
    x, s, c, m = inputs()

    def grads():
        model.zero_grad()
        model(x, s, c, m).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    ref = grads()
    model.set_activation_checkpointing(True)
    for a, b in zip(ref, grads()):
        assert torch.allclose(a, b, atol=1e-6)


def test_guidance_embedding_used():
    model = randomized_tiny(guidance_embed=True)
    x, s, c, m = inputs()
    with torch.no_grad():
        assert not torch.allclose(model(x, s, c, m, guidance=torch.full((2,), 3.0)),
                                  model(x, s, c, m, guidance=torch.full((2,), 6.0)), atol=1e-5)


def test_bad_latents_one_line_error():
    model = randomized_tiny()
    x, s, c, m = inputs(w=5)
    with pytest.raises(ValueError, match="multiples of patch_size"):
        model(x, s, c, m)


def test_v1_is_19b_on_meta():
    with torch.device("meta"):
        model = SHDT(**PRESETS["v1"])
    n = model.num_parameters()
    assert abs(n - 19e9) <= 0.05 * 19e9, n
    assert V1_VIDEO_TOKENS == 57_600
    assert model.num_tokens((16, 25, 72, 128)) == 57_600
    mem = memory_estimates(model)
    assert mem["weights_fp8_GiB"] < 0.55 * mem["weights_bf16_GiB"]


def test_v1_flops_estimate_matches_traced_forward_at_57600_tokens():
    """Trace v1 on the meta device at 1024x576x97 (57,600 video tokens): shapes hold end to end and the
    analytic FLOP count printed by the presets report matches the traced one."""
    from torch.utils.flop_counter import FlopCounterMode

    from aiprod_shdt.presets import flops_estimate

    with torch.device("meta"):
        model = SHDT(**PRESETS["v1"]).to(torch.bfloat16)
        x = torch.randn(1, 16, 25, 72, 128, dtype=torch.bfloat16)
        text, mask = torch.randn(1, 256, 4096, dtype=torch.bfloat16), torch.ones(1, 256, dtype=torch.bool)
        counter = FlopCounterMode(display=False)
        with counter:
            out = model(x, torch.rand(1, dtype=torch.bfloat16), text, mask)
    assert out.shape == x.shape
    assert counter.get_total_flops() / 1e12 == pytest.approx(flops_estimate(model)["forward_TFLOP"], rel=0.01)


@pytest.mark.parametrize("abs_pos_theta", [0.0, 16.0])
def test_absolute_positions_tell_tokens_apart_in_a_uniform_input(abs_pos_theta):
    """RoPE alone: the same content at every position gives the same output at every position (scores depend
    on offsets, values are equal; with the empty prompt, as text keys carry no rotation and would otherwise
    be seen differently from each position), so a flat input such as pure noise's mean cannot be placed;
    abs_pos_theta adds what the token's (t, h, w) index is, with no parameters."""
    model = randomized_tiny(abs_pos_theta=abs_pos_theta)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in randomized_tiny().parameters())
    x, s, c, m = inputs(t=3, h=6, w=6)
    m = torch.zeros_like(m)
    flat = x[:, :, :1, :2, :2].repeat(1, 1, 3, 3, 3)  # one 2x2 patch everywhere
    with torch.no_grad():
        v = model(flat, s, c, m)
    spread = float((v - v[:, :, :1, :2, :2].repeat(1, 1, 3, 3, 3)).abs().max())
    if abs_pos_theta:
        assert spread > 1e-2
    else:
        assert spread < 1e-4


def test_convolution_head_starts_as_the_identity_and_corrects_each_pixel_from_its_neighbours():
    """``out_conv`` added to a trained model changes nothing until trained; then it adds a correction from the
    velocity, the noisy latents and sigma around each latent pixel: 5x5 in the frame (two 3x3), one frame."""
    from aiprod_shdt.model import OutConv

    plain = randomized_tiny()
    head = SHDT(**{**PRESETS["tiny"], "out_conv": 8})
    missing, unexpected = head.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == ["out_conv.conv1.bias", "out_conv.conv1.weight",
                                                  "out_conv.conv2.bias", "out_conv.conv2.weight"]
    x, s, c, m = inputs()
    with torch.no_grad():
        assert torch.equal(head.eval()(x, s, c, m), plain(x, s, c, m))
    head(x, s, c, m).square().mean().backward()
    assert head.out_conv.conv2.weight.grad.abs().sum() > 0  # trainable from its zero start

    torch.manual_seed(0)
    conv = OutConv(16, 8)
    torch.nn.init.normal_(conv.conv2.weight, std=0.1)
    v, lat = torch.randn(1, 16, 3, 8, 8), torch.randn(1, 16, 3, 8, 8)
    sigma = torch.tensor([0.5])
    with torch.no_grad():
        out = conv(v, lat, sigma)
        for moved in (v, lat):
            moved[0, :, 1, 0, 0] += 1.0
            changed = (conv(v, lat, sigma) - out).abs().amax(dim=(0, 1)) > 0  # [T, H, W]
            moved[0, :, 1, 0, 0] -= 1.0
            assert changed[1, :3, :3].all() and changed.sum() == 9  # frame 1, rows and columns 0-2 only
        assert not torch.allclose(conv(v, lat, torch.tensor([0.9])), out, atol=1e-4)
