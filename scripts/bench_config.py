"""Time lazydet's ``instantiate`` against ``hydra.utils.instantiate`` on a 1000-node config.

    python scripts/bench_config.py [--nodes 1000] [--repeats 20]

The config is a tree of ``L(dict)`` nodes (cheap targets, so the builders' own overhead is what
is measured) with primitive arguments and lists, the shape of a model config. Both builders get
the same config: lazydet its Config tree, Hydra the equivalent DictConfig.
"""

from __future__ import annotations

import argparse
import statistics
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


def count_nodes(cfg) -> int:
    if isinstance(cfg, dict):
        return int("_target_" in cfg) + sum(count_nodes(v) for v in cfg.values())
    if isinstance(cfg, list):
        return sum(count_nodes(v) for v in cfg)
    return 0


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm caches (imports, signatures)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    from hydra.utils import instantiate as hydra_instantiate
    from omegaconf import OmegaConf

    from lazydet.config import instantiate, to_container

    cfg = make_config(args.nodes)
    dict_config = OmegaConf.create(to_container(cfg))
    assert count_nodes(cfg) == args.nodes
    ours = instantiate(cfg)
    theirs = hydra_instantiate(dict_config, _convert_="all")
    assert ours == theirs, "the two builders disagree"

    lazydet_s = median_seconds(lambda: instantiate(cfg), args.repeats)
    lazydet_dc_s = median_seconds(lambda: instantiate(dict_config), args.repeats)
    hydra_s = median_seconds(
        lambda: hydra_instantiate(dict_config, _convert_="all"), max(3, args.repeats // 4)
    )
    print(f"instantiate {args.nodes} nodes (median of {args.repeats} runs)")
    print(f"  lazydet.config.instantiate (Config tree)   {lazydet_s * 1e3:9.2f} ms")
    print(f"  lazydet.config.instantiate (DictConfig)    {lazydet_dc_s * 1e3:9.2f} ms")
    print(f"  hydra.utils.instantiate    (DictConfig)    {hydra_s * 1e3:9.2f} ms")
    print(
        f"  speed-up: {hydra_s / lazydet_s:.1f}x (Config), {hydra_s / lazydet_dc_s:.1f}x (DictConfig)"
    )
    return {"lazydet_s": lazydet_s, "lazydet_dictconfig_s": lazydet_dc_s, "hydra_s": hydra_s}


if __name__ == "__main__":
    main()
