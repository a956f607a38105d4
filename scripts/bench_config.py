"""Time lazydet's ``instantiate`` against ``hydra.utils.instantiate``, on configs of every shape.

    python scripts/bench_config.py [--nodes 1000] [--large 100000] [--repeats 20]

Shapes (``--nodes`` call nodes each; cheap targets, so the builders' own overhead is measured):

* ``tree``: ``L(dict)`` nodes with primitive and list arguments, four children each (a model);
* ``wide _args_``: one ``L(collections.ChainMap)(*nodes)``;
* ``wide kwargs``: one ``L(dict)(k0=node, k1=node, ...)``;
* ``deep _args_``: ``L(ChainMap)(L(ChainMap)(...))``, a chain through positional arguments;
* ``deep kwargs``: ``L(dict)(child=L(dict)(child=...))``;
* ``Sequential``: issue #20's ``L(torch.nn.Sequential)(*[L(torch.nn.Identity)()] * nodes)``;
* ``large``: ``--large`` nodes under 25,000-odd keys (``L(ChainMap)`` of three ``L(dict)``).

Both builders get the same config: lazydet its Config tree, Hydra the equivalent DictConfig, and
must return equal objects. Hydra needs a raised recursion limit for the deep chains (set here).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time


def make_config(num_nodes: int, fanout: int = 4):
    from lazydet.config import Config, L

    def node(index: int):
        return L(dict)(index=index, scale=1.5, name=f"n{index}", sizes=[1, 2, 3], flag=True)

    nodes = [node(i) for i in range(num_nodes)]
    # Link them into a tree: node i holds its children under child_k keys.
    for i, parent in enumerate(nodes):
        for k in range(fanout):
            child = i * fanout + k + 1
            if child < num_nodes:
                dict.__setitem__(parent, f"child_{k}", nodes[child])
    return Config(root=nodes[0])


def wide_args(num_nodes: int):
    from lazydet.config import L

    return L(collections.ChainMap)(*[L(dict)(index=i) for i in range(num_nodes - 1)])


def wide_kwargs(num_nodes: int):
    from lazydet.config import L

    return L(dict)(**{f"k{i}": L(dict)(index=i) for i in range(num_nodes - 1)})


def deep_args(num_nodes: int):
    from lazydet.config import L

    node = L(dict)(index=0)
    for _ in range(num_nodes - 1):
        node = L(collections.ChainMap)(node)
    return node


def deep_kwargs(num_nodes: int):
    from lazydet.config import L

    node = L(dict)(index=0)
    for i in range(num_nodes - 1):
        node = L(dict)(index=i + 1, child=node)
    return node


def sequential(num_nodes: int):
    import torch

    from lazydet.config import L

    return L(torch.nn.Sequential)(*[L(torch.nn.Identity)() for _ in range(num_nodes - 1)])


def large(num_nodes: int):
    from lazydet.config import L

    keys = (num_nodes - 1) // 4
    return L(dict)(
        **{
            f"k{i}": L(collections.ChainMap)(L(dict)(a=i), L(dict)(b=i), L(dict)(c=i))
            for i in range(keys)
        }
    )


def count_nodes(cfg) -> int:
    """Call nodes (mappings with a ``_target_``) in ``cfg``, without recursion."""
    count, stack = 0, [cfg]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            count += "_target_" in value
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return count


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm caches (imports, signatures)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def same(ours, theirs) -> bool:
    import torch

    if isinstance(ours, torch.nn.Module):  # modules compare by identity: compare their structure
        return repr(ours) == repr(theirs)
    return ours == theirs


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000, help="nodes of the large config")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    from hydra.utils import instantiate as hydra_instantiate
    from omegaconf import OmegaConf

    from lazydet.config import instantiate, to_container

    # Hydra recurses ~10 frames per level; lazydet raises the limit itself where a config needs it.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 30 * args.nodes))
    shapes = [
        ("tree", make_config, args.nodes),
        ("wide _args_", wide_args, args.nodes),
        ("wide kwargs", wide_kwargs, args.nodes),
        ("deep _args_", deep_args, args.nodes),
        ("deep kwargs", deep_kwargs, args.nodes),
        ("Sequential", sequential, args.nodes),
        ("large", large, args.large),
    ]
    rows = []
    for name, make, num_nodes in shapes:
        cfg = make(num_nodes)
        nodes = count_nodes(cfg)
        dict_config = OmegaConf.create(to_container(cfg))
        ours = instantiate(cfg)
        theirs = hydra_instantiate(dict_config, _convert_="all")
        assert same(ours, theirs), f"{name}: the two builders disagree"
        repeats = args.repeats if num_nodes <= 10 * args.nodes else 3
        lazydet_s = median_seconds(lambda cfg=cfg: instantiate(cfg), repeats)
        hydra_s = median_seconds(
            lambda dict_config=dict_config: hydra_instantiate(dict_config, _convert_="all"),
            max(3, repeats // 4) if num_nodes <= 10 * args.nodes else 1,
        )
        rows.append({"shape": name, "nodes": nodes, "lazydet_s": lazydet_s, "hydra_s": hydra_s})
        print(
            f"  {name:12s} {nodes:7d} nodes  lazydet {lazydet_s * 1e3:9.2f} ms  "
            f"hydra {hydra_s * 1e3:10.1f} ms",
            file=sys.stderr,
            flush=True,
        )

    print(f"\ninstantiate (median of {args.repeats} runs; large: of 3, Hydra's of 1)\n")
    print("| shape | nodes | lazydet.config.instantiate | hydra.utils.instantiate | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['shape']} | {row['nodes']:,} | {row['lazydet_s'] * 1e3:.1f} ms "
            f"| {row['hydra_s'] * 1e3:,.1f} ms | {row['hydra_s'] / row['lazydet_s']:.0f}x |"
        )
    return rows


if __name__ == "__main__":
    main()
