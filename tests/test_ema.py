"""The moving average of the weights: its arithmetic, and that training validates, ships and resumes it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from captioner.errors import CheckpointError, ConfigError
from captioner.training.ema import WeightAverage
from captioner.training.loop import main as train_main
from conftest import train_config


def test_average_follows_the_weights_with_a_ramped_decay():
    net = nn.Linear(3, 2)
    net.bias.requires_grad_(False)  # only trained parameters are averaged
    avg = WeightAverage(net, decay=0.9)
    expected = net.weight.detach().clone()
    for step in range(1, 30):
        with torch.no_grad():
            net.weight.add_(1.0)
        avg.update()
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * net.weight.detach()
    torch.testing.assert_close(avg.shadow["weight"], expected)
    assert set(avg.shadow) == {"weight"}
    raw = net.weight.detach().clone()
    with avg.applied():
        torch.testing.assert_close(net.weight.detach(), expected)
    torch.testing.assert_close(net.weight.detach(), raw)  # the model's own weights come back


def test_state_round_trip_and_mismatch():
    a = WeightAverage(nn.Linear(3, 2), 0.99)
    a.update()
    b = WeightAverage(nn.Linear(3, 2), 0.99)
    b.load_state_dict(a.state_dict())
    assert b.updates == 1 and all(torch.equal(b.shadow[k], a.shadow[k]) for k in a.shadow)
    with pytest.raises(ValueError, match="does not match"):
        WeightAverage(nn.Linear(4, 2), 0.99).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(3, 2), 1.0)


def test_training_ships_the_average_and_resumes_it_exactly(shapes, tmp_path):
    kw = dict(ema_decay=0.9, epochs=2)
    train_main(train_config(shapes, tmp_path / "full", **kw))
    shipped = load_file(str(tmp_path / "full" / "last.safetensors"))
    raw = torch.load(tmp_path / "full" / "last.state.pt", weights_only=True)
    name = "decoder.l_o.weight"
    assert not torch.equal(shipped[name], raw["model"][name])
    torch.testing.assert_close(shipped[name], raw["average"][f"shadow.{name}"])

    calls = {"n": 0}

    def interrupt(step: int) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt

    assert train_main(train_config(shapes, tmp_path / "cut", **kw), on_step=interrupt)["interrupted"]
    train_main(train_config(shapes, tmp_path / "cut", **kw), resume=True)
    resumed = load_file(str(tmp_path / "cut" / "last.safetensors"))
    for k in shipped:
        torch.testing.assert_close(shipped[k], resumed[k], rtol=0, atol=0, msg=k)

    with pytest.raises(CheckpointError, match="no weight average"):  # resumed with the average, saved without
        train_main(train_config(shapes, tmp_path / "plain", epochs=1))
        train_main(train_config(shapes, tmp_path / "plain", epochs=2, ema_decay=0.9), resume=True)
    with pytest.raises(ConfigError, match="ema_decay"):
        train_main(train_config(shapes, tmp_path / "bad", ema_decay=1.5))
