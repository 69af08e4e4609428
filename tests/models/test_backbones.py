"""DiT and MLP backbones: shapes, conditioning, the release's switches, init, param counts, gradients."""

import pytest
import torch

from ism.config import ModelConfig
from ism.models import DIT_PRESETS, DiT, MLPBackbone, build_model, count_parameters
from ism.models.dit import sincos_2d
from ism.models.embeddings import sinusoidal_features


def _inputs(batch=4, shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, *shape, generator=g),
        torch.rand(batch, generator=g),
        torch.randint(0, 8, (batch,), generator=g),
        torch.randint(0, 10, (batch,), generator=g),
    )


def _tiny_dit(**kw):
    torch.manual_seed(0)
    args = dict(input_size=8, in_channels=1, num_classes=10, patch_size=2, hidden_size=32, depth=2, num_heads=2)
    return DiT(**(args | kw))


def _perturb_output_layers(model):
    """Untrained outputs are exactly zero; give the zero-initialised output layers some weight."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.mark.parametrize(("shape", "patch"), [((1, 8, 8), 2), ((3, 16, 16), 4), ((4, 32, 32), 2)])
def test_dit_output_shape_and_zero_init(shape, patch):
    model = DiT(
        input_size=shape[1],
        in_channels=shape[0],
        num_classes=10,
        patch_size=patch,
        hidden_size=32,
        depth=1,
        num_heads=2,
    )
    x, t, k, y = _inputs(shape=shape)
    out = model(x, t, k, y)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.all(out == 0), "the zero-initialised final layer makes an untrained model output 0"


def test_output_depends_on_every_conditioning_input():
    model = _perturb_output_layers(_tiny_dit(guidance_embedding=True))
    x, t, k, y = _inputs()
    w = torch.zeros(4)
    base = model(x, t, k, y, w)
    assert not torch.allclose(base, model(x, t + 0.1, k, y, w))
    assert not torch.allclose(base, model(x, t, (k + 1) % 8, y, w))
    assert not torch.allclose(base, model(x, t, k, (y + 1) % 10, w))
    assert not torch.allclose(base, model(x, t, k, y, w + 1.0))
    assert not torch.allclose(base, model(x * 2, t, k, y, w))
    null = model(x, t, k, torch.full_like(y, 10), w)
    assert null.shape == base.shape, "the null class (index num_classes) is a valid label"


def test_guidance_input_starts_as_a_no_op_and_is_optional():
    model = _perturb_output_layers(_tiny_dit(guidance_embedding=True))
    with torch.no_grad():
        model.conditioning.guidance.mlp[2].weight.zero_()
    x, t, k, y = _inputs()
    assert torch.equal(model(x, t, k, y), model(x, t, k, y, torch.full((4,), 2.0)))
    with pytest.raises(ValueError, match="without a guidance input"):
        _tiny_dit()(x, t, k, y, torch.zeros(4))


def test_flow_matching_network_ignores_the_level():
    model = _perturb_output_layers(_tiny_dit(level_embedding=False))
    x, t, k, y = _inputs()
    assert torch.equal(model(x, t, k, y), model(x, t, torch.zeros_like(k), y))
    assert model.conditioning.level is None


def test_attention_scale_switch_against_hand_written_attention():
    release = _perturb_output_layers(_tiny_dit(attention_scale="head_dim"))
    standard = _tiny_dit(attention_scale="sqrt_head_dim")
    standard.load_state_dict(release.state_dict())
    x, t, k, y = _inputs()
    assert not torch.allclose(release(x, t, k, y), standard(x, t, k, y))
    attn = release.blocks[0].attn
    h = torch.randn(2, 16, 32)
    q, key, v = attn.qkv(h).reshape(2, 16, 3, 2, 16).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ key.transpose(-1, -2) / 16, dim=-1)  # 1/head_dim, head_dim = 16
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 16, 32))
    assert torch.allclose(attn(h), expected, atol=1e-5)


def test_block_modulation_init_switch():
    zero = _tiny_dit(block_modulation_init="zero")
    xavier = _tiny_dit(block_modulation_init="xavier")
    assert all(torch.all(b.modulation[1].weight == 0) for b in zero.blocks)
    assert all(b.modulation[1].weight.abs().sum() > 0 for b in xavier.blocks)


def test_positional_and_sinusoidal_features():
    table = sincos_2d(4, 32)
    assert table.shape == (16, 32) and table.abs().max() <= 1
    assert len({tuple(row.tolist()) for row in table}) == 16, "every position is distinct"
    features = sinusoidal_features(torch.tensor([0.0, 0.5, 7.0]), 256)
    assert features.shape == (3, 256)
    assert torch.allclose(features[0, :128], torch.ones(128)) and torch.allclose(features[0, 128:], torch.zeros(128))


def test_outputs_do_not_depend_on_the_rest_of_the_batch():
    model = _perturb_output_layers(_tiny_dit())
    x, t, k, y = _inputs()
    assert torch.allclose(model(x, t, k, y)[:1], model(x[:1], t[:1], k[:1], y[:1]), atol=1e-6)


def test_bf16_autocast_forward():
    model = _perturb_output_layers(_tiny_dit())
    x, t, k, y = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, k, y)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.allclose(out.float(), model(x, t, k, y), atol=0.05)


def test_preset_parameter_counts_match_the_papers():
    def preset(name):  # presets are applied by the config, once
        return ModelConfig(preset=name).network_kwargs(level_embedding=True)

    with torch.device("meta"):
        base = build_model("dit", sample_shape=(4, 32, 32), num_classes=1000, **preset("DiT-B/2"))
        xl = build_model("dit", sample_shape=(4, 32, 32), num_classes=1000, **preset("DiT-XL/2"))
    assert 125e6 < count_parameters(base) < 140e6, count_parameters(base)  # "about 130M"
    assert 670e6 < count_parameters(xl) < 685e6, count_parameters(xl)  # "about 675M"
    assert DIT_PRESETS["SiT-XL/2"] == DIT_PRESETS["DiT-XL/2"]


def test_build_model_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown model arch 'unet'"):
        build_model("unet", sample_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ValueError, match="square"):
        build_model("dit", sample_shape=(1, 8, 6), num_classes=10)
    with pytest.raises(ValueError, match="does not take"):
        build_model("mlp", sample_shape=(2,), num_classes=1, num_heads=3)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        DiT(input_size=8, in_channels=1, num_classes=10, patch_size=3)
    with pytest.raises(ValueError, match="num_heads"):
        DiT(input_size=8, in_channels=1, num_classes=10, hidden_size=30, num_heads=4)


def test_mlp_backbone_shapes_and_conditioning():
    torch.manual_seed(0)
    model = MLPBackbone(dim=2, num_classes=1, hidden_size=32, depth=2)
    x = torch.randn(5, 2)
    t, k, y = torch.rand(5), torch.randint(0, 8, (5,)), torch.zeros(5, dtype=torch.long)
    assert torch.all(model(x, t, k, y) == 0)
    _perturb_output_layers(model)
    out = model(x, t, k, y)
    assert out.shape == (5, 2)
    assert not torch.allclose(out, model(x, t, (k + 1) % 8, y))


@pytest.mark.parametrize("kind", ["dit", "mlp"])
def test_a_tiny_model_fits_a_fixed_batch(kind):
    torch.manual_seed(0)
    if kind == "dit":
        model = _tiny_dit()
        x, t, k, y = _inputs(batch=8)
    else:
        model = MLPBackbone(dim=2, num_classes=10, hidden_size=64, depth=2)
        x, t, k, y = _inputs(batch=8, shape=(2,))
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = (model(x, t, k, y) - target).pow(2).mean()
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 10
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
