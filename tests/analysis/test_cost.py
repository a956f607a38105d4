import pytest
import torch
from torch import nn

from lazydet.analysis.cost import count_parameters, format_cost_table, measure_cost


class _Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 3), nn.Linear(3, 2)])

    def forward(self, x):
        return self.layers[1](self.layers[0](x))


def test_conv_and_linear_flops_match_hand_counts():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 10 * 12, 5))
    model[0].bias.requires_grad_(False)
    x = torch.rand(2, 3, 10, 12)
    rows = {r.name: r for r in measure_cost(model, lambda m: m(x))}
    # conv: 2 FLOPs per multiply-add, out N*Cout*H*W positions, Cin*k*k each (bias not counted)
    assert rows["0"].flops == 2 * (2 * 8 * 10 * 12) * (3 * 3 * 3)
    # linear: 2 * N * in * out
    assert rows["2"].flops == 2 * 2 * (8 * 10 * 12) * 5
    assert rows[""].flops == rows["0"].flops + rows["2"].flops
    assert rows["0"].trainable == 8 * 3 * 3 * 3 and rows["0"].frozen == 8
    assert rows[""].parameters == 8 * 27 + 8 + 960 * 5 + 5
    # a ModuleList is never called: its children's FLOPs stand for it
    listed_rows = {r.name: r for r in measure_cost(_Holder(), lambda m: m(torch.rand(5, 4)))}
    assert listed_rows["layers"].flops == 2 * 5 * 4 * 3 + 2 * 5 * 3 * 2
    table = format_cost_table(list(rows.values()))
    assert "Conv2d" in table and "Linear" in table


def test_resnet50_published_parameter_count():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet50(weights=None)
    trainable, frozen = count_parameters(model)
    assert trainable + frozen == 25_557_032  # torchvision's published count for ResNet-50
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    trainable2, frozen2 = count_parameters(model)
    assert frozen2 == sum(p.numel() for p in model.layer1.parameters())
    assert trainable2 + frozen2 == 25_557_032
