"""L(...) nodes: import paths, value conversion, and checks made when a config is written."""

from __future__ import annotations

import enum
import functools

import pytest
import torch
from torch import nn

from lazydet.config import MISSING, Config, ConfigError, L, import_path, instantiate, locate, ref
from lazydet.config.signature import MISSING_VALUE


class Color(enum.Enum):
    RED = 1


def module_level_fn(x: int = 1, *, scale: float = 2.0) -> float:
    return x * scale


def test_target_is_the_shortest_import_path_string():
    node = L(torch.optim.SGD)(params=[], lr=0.1)
    assert node._target_ == "torch.optim.SGD"  # defined in torch.optim.sgd
    assert locate(node._target_) is torch.optim.SGD
    assert import_path(nn.Conv2d) == "torch.nn.Conv2d"
    assert import_path(torch.float16) == "torch.float16"
    assert import_path(Color.RED).endswith("test_lazy.Color.RED")
    assert locate(import_path(Color.RED)) is Color.RED
    assert (
        import_path(int) == "builtins.int"
        and locate("builtins.int") is int
        and locate("int") is int
    )


def test_a_target_in_a_package_python_cannot_import_says_how_to_make_it_importable():
    with pytest.raises(ConfigError, match=r"no module 'my_project_xyz'.*PYTHONPATH"):
        locate("my_project_xyz.heads.MaskHead")


def test_positional_arguments_and_nesting_are_kept():
    node = L(nn.Sequential)(L(nn.Linear)(4, 8), L(nn.ReLU)())
    assert node._args_[0]._args_ == [4, 8]
    model = instantiate(node)
    assert isinstance(model[0], nn.Linear) and model[0].in_features == 4
    assert isinstance(model[1], nn.ReLU)


def test_non_primitive_values_instantiate_back_to_the_same_object():
    node = L(dict)(
        dtype=torch.bfloat16,
        cls=nn.GELU,
        fn=module_level_fn,
        color=Color.RED,
        part=functools.partial(module_level_fn, scale=3.0),
    )
    built = instantiate(node)
    assert built["dtype"] is torch.bfloat16
    assert built["cls"] is nn.GELU
    assert built["fn"] is module_level_fn
    assert built["color"] is Color.RED
    assert isinstance(built["part"], functools.partial)
    assert built["part"].func is module_level_fn and built["part"](2) == 6.0


def test_lambda_and_local_function_are_refused_with_advice():
    with pytest.raises(ConfigError, match="lambda.*module level"):
        L(dict)(fn=lambda x: x)

    def local_fn():
        return 1

    with pytest.raises(ConfigError, match="local function.*local_fn.*module level"):
        L(dict)(fn=local_fn)


def test_instances_are_refused_with_advice():
    with pytest.raises(ConfigError, match=r"Linear instance.*L\(Linear\)"):
        L(nn.Sequential)(nn.Linear(2, 2))


def test_unknown_argument_fails_when_written_with_suggestion():
    with pytest.raises(ConfigError) as info:
        L(nn.Conv2d)(in_channels=3, out_channels=8, kernel_sze=3)
    message = str(info.value)
    assert "torch.nn.Conv2d has no argument 'kernel_sze'" in message
    assert "Did you mean 'kernel_size'?" in message


def test_unknown_argument_fails_when_set_later():
    cfg = Config(head=L(nn.Linear)(in_features=4, out_features=2))
    with pytest.raises(
        ConfigError, match="has no argument 'out_featurs'. Did you mean .*'out_features'"
    ):
        cfg.head.out_featurs = 3
    cfg.head.bias = False  # a valid argument the node did not set: allowed in Python
    assert instantiate(cfg.head).bias is None


def test_wrong_primitive_type_fails():
    with pytest.raises(ConfigError, match="argument 'in_features' of torch.nn.Linear got 'four'"):
        L(nn.Linear)(in_features="four", out_features=2)
    node = L(nn.Linear)(in_features=4, out_features=2)
    with pytest.raises(ConfigError, match="expected bool"):
        node.bias = "yes"
    with pytest.raises(ConfigError, match="expected int, got float"):
        node.in_features = 2.5
    node.in_features = 8  # fine
    L(torch.optim.SGD)(params=[], lr=1)  # an int where a float is annotated is fine


def test_reading_an_unset_argument_says_how_to_set_it():
    node = L(nn.Linear)(in_features=4, out_features=2)
    with pytest.raises(
        AttributeError, match=r"'bias' is an argument of torch.nn.Linear.*\+KEY.bias"
    ):
        _ = node.bias
    with pytest.raises(AttributeError, match="no key 'in_feature'. Did you mean .*'in_features'"):
        _ = node.in_feature


def test_missing_marker_is_stored_as_omegaconf_missing():
    node = L(nn.Sequential)(MISSING)
    assert node._args_ == [MISSING_VALUE]
    with pytest.raises(Exception, match=r"'_args_.0' is MISSING"):
        instantiate(node)


def test_ref_shares_one_object():
    from toy_modules import ConvBackbone, Holder

    cfg = Config(
        backbone=L(ConvBackbone)(channels=4),
        pair=L(Holder)(first=ref("backbone"), second=ref("backbone")),
    )
    built = instantiate(cfg)
    assert built["pair"].first is built["pair"].second is built["backbone"]


def test_ref_cycle_and_dangling_ref_fail_with_path():
    from toy_modules import Holder

    cycle = Config(a=L(Holder)(first=ref("a"), second=1))
    with pytest.raises(Exception, match="reference cycle"):
        instantiate(cycle)
    with pytest.raises(Exception, match=r"ref\('nope'\) names no key"):
        instantiate(Config(a=L(Holder)(first=ref("nope"), second=1)))


def test_instantiate_part_of_a_config_with_refs_from_outside():
    model = nn.Linear(2, 2)
    cfg = L(torch.optim.SGD)(params=L(nn.Module.parameters)(ref("model")), lr=0.1)
    with pytest.raises(Exception, match=r"ref\('model'\) names no key.*pass refs="):
        instantiate(cfg)
    optimizer = instantiate(cfg, refs={"model": model})
    assert optimizer.param_groups[0]["params"][0] is model.weight


def test_error_names_the_config_path_of_the_failing_node():
    from toy_modules import ToyClassifier

    cfg = Config(
        model=L(ToyClassifier)(backbone=L(nn.Conv2d)(in_channels=3, out_channels=4, kernel_size=-1))
    )
    with pytest.raises(Exception) as info:
        instantiate(cfg)
    assert "'model.backbone' (torch.nn.Conv2d) failed" in str(info.value)
    assert info.value.path == "model.backbone"
    assert isinstance(info.value.__cause__, (ValueError, RuntimeError))


def test_tuples_stay_tuples_where_annotated_even_after_yaml():
    from omegaconf import OmegaConf
    from toy_modules import MLPBackbone

    from lazydet.config import to_yaml

    cfg = Config(net=L(MLPBackbone)(hidden_sizes=(8, 8)))
    reloaded = OmegaConf.create(to_yaml(cfg))  # YAML has only lists
    net = instantiate(reloaded)["net"]  # MLPBackbone asserts it got a tuple
    assert len(net.mlp) == 3


def test_containers_become_plain_python():
    built = instantiate(Config(a=[1, Config(b=2)], c=(1, 2)))
    assert type(built) is dict and type(built["a"]) is list and type(built["a"][1]) is dict
    assert built["c"] == (1, 2)


def test_repr_is_readable_python():
    node = L(torch.optim.SGD)(params=ref("model"), lr=0.02)
    assert repr(node) == "L(torch.optim.SGD)(params=ref('model'), lr=0.02)"


def test_instantiate_agrees_with_hydra_instantiate_on_a_large_tree():
    # Hydra's own instantiate is the reference for what a config of plain targets builds.
    import importlib.util
    import sys
    from pathlib import Path

    from hydra.utils import instantiate as hydra_instantiate
    from omegaconf import OmegaConf

    from lazydet.config import to_container

    spec = importlib.util.spec_from_file_location(
        "bench_config", Path(__file__).resolve().parents[2] / "scripts" / "bench_config.py"
    )
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_config"] = bench
    spec.loader.exec_module(bench)
    cfg = bench.make_config(200)
    assert bench.count_nodes(cfg) == 200
    expected = hydra_instantiate(OmegaConf.create(to_container(cfg)), _convert_="all")
    assert instantiate(cfg) == expected
    assert instantiate(OmegaConf.create(to_container(cfg))) == expected


def test_in_place_or_is_checked_like_any_write():
    from lazydet.config import Config

    cfg = Config(optimizer=L(torch.optim.SGD)(params=[], lr=0.1))
    with pytest.raises(ConfigError, match="Did you mean 'lr'"):
        cfg.optimizer |= {"lrr": 1, "momentum": 0.9}
    assert "momentum" not in cfg.optimizer  # nothing of a refused update is kept
    cfg.optimizer |= {"momentum": 0.9}
    assert cfg.optimizer.momentum == 0.9
    merged = cfg.optimizer | {"lr": 0.2}
    assert merged.lr == 0.2 and cfg.optimizer.lr == 0.1
    with pytest.raises(ConfigError, match="got 'x'"):
        _ = cfg.optimizer | {"lr": "x"}


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("betas", (0.9,), "expected 2 items, got 1"),
        ("betas", (0.9, "x"), r"item 1 \('x'\): expected float"),
    ],
)
def test_element_types_of_annotated_containers_are_checked(key, value, reason):
    node = L(torch.optim.Adam)(params=[], lr=0.1)
    with pytest.raises(ConfigError, match=reason):
        node[key] = value
    node.betas = (0.8, 0.99)


def test_list_and_sequence_elements_are_checked():
    from collections.abc import Sequence

    from lazydet.config.signature import type_mismatch

    assert "item 1 ('a'): expected int" in type_mismatch([1, "a"], list[int])
    assert "item 0 ('1'): expected int" in type_mismatch(["1"], Sequence[int])
    assert type_mismatch([1, 2], tuple[int, ...]) is None
    assert type_mismatch([1, "${x}", {"_target_": "builtins.int"}], list[int]) is None


def test_the_set_it_hint_names_the_real_key_path():
    from lazydet.config import Config

    cfg = Config(train=dict(opt=L(torch.optim.SGD)(params=[], lr=0.1)))
    with pytest.raises(AttributeError, match=r"write \+train\.opt\.nesterov=VALUE"):
        _ = cfg.train.opt.nesterov


def test_self_containing_containers_are_refused_with_the_key():
    from lazydet.config import Config

    loop: dict = {"a": 1}
    loop["self"] = loop
    with pytest.raises(ConfigError, match=r"x.self: this dict contains itself"):
        L(dict)(x=loop)
    items: list = [1]
    items.append(items)
    with pytest.raises(ConfigError, match=r"contains itself"):
        Config(items=items)
    cfg = Config(a=dict(b=1))
    with pytest.raises(ConfigError, match=r"a.back: the value contains this very node"):
        cfg.a.back = cfg.a
    with pytest.raises(ConfigError, match=r"contains this very node"):
        cfg.a.back = cfg


def test_ref_cycles_are_one_message_not_a_recursion_error():
    from lazydet.config import Config, validate

    cfg = Config(a=ref("b"), b=ref("a"), c=L(dict)(x=ref("c")))
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert "a: ref('b') leads back to itself (a -> b -> a)" in str(info.value)
    assert "c.x: ref('c') leads back to itself" in str(info.value)
    with pytest.raises(Exception, match="reference cycle"):
        instantiate(cfg)


def test_validate_reports_required_arguments_no_one_sets():
    from lazydet.config import Config, validate

    cfg = Config(layer=L(torch.nn.Linear)(in_features=4))
    with pytest.raises(ConfigError, match=r"layer: torch.nn.Linear requires 'out_features'"):
        validate(cfg)
    cfg.layer._partial_ = True  # a factory gets the rest from its caller
    validate(cfg)
    validate(Config(layer=L(torch.nn.Linear)(4, 2)))  # positional arguments count


def test_builtin_functions_round_trip_by_import_path(tmp_path):
    from lazydet.config import load, save

    node = L(torch.zeros)(3)
    assert node._target_ == "torch.zeros"
    assert torch.equal(instantiate(node), torch.zeros(3))
    # A string path that is not the shortest one is kept as written.
    other = L("torch.optim.sgd.SGD")(params=[], lr=0.1)
    from lazydet.config import Config

    save(Config(a=node, b=other), tmp_path / "c.py")
    loaded = load(tmp_path / "c.py")
    assert loaded == Config(a=node, b=other)
