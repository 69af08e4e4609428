"""EMA arithmetic over a few steps, warm-up, and state round trip."""

import pytest
import torch

from ism.method.ema import EMA


def _scalar_model(value: float) -> torch.nn.Module:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_ema_follows_the_recursion_exactly():
    model = _scalar_model(1.0)
    ema = EMA(model, decay=0.5)
    assert ema.model.weight.item() == 1.0, "initialised to θ"
    for value, expected in [(2.0, 1.5), (4.0, 2.75), (0.0, 1.375)]:
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
        assert ema.model.weight.item() == pytest.approx(expected)
    assert ema.num_updates == 3


def test_warmup_decay_schedule():
    ema = EMA(_scalar_model(0.0), decay=0.999, warmup=True)
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(1) == pytest.approx(2 / 11)
    assert ema.decay_at(10_000) == 0.999, "capped at β"
    model = _scalar_model(0.0)
    ema = EMA(model, decay=0.999, warmup=True)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert ema.model.weight.item() == pytest.approx(0.9), "first update keeps 0.1 of the init"
    assert EMA(model, decay=0.999).decay_at(0) == 0.999


def test_ema_copy_is_frozen_and_independent_of_the_model():
    model = _scalar_model(1.0)
    ema = EMA(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.model.parameters())
    with torch.no_grad():
        model.weight.fill_(5.0)
    assert ema.model.weight.item() == 1.0


def test_state_round_trip():
    model = _scalar_model(3.0)
    ema = EMA(model, decay=0.9)
    ema.update(_scalar_model(4.0))
    restored = EMA(_scalar_model(0.0), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.model.weight.item() == ema.model.weight.item()
    assert restored.num_updates == 1


def test_rejects_decay_outside_unit_interval():
    with pytest.raises(ValueError, match="decay"):
        EMA(_scalar_model(0.0), decay=1.0)
