"""``instantiate`` does work linear in the number of nodes, whatever the config's shape.

Counted, not timed: the parent lookup (``lazy._parent`` and the scan it makes, ``lazy._holds``)
is what made building quadratic (issue #20: each node walked up to the root, scanning every
value of each parent on the way). A build of 2N nodes must cost less than 3x one of N.
"""

import collections

import pytest

from lazydet.config import L, instantiate, lazy


def wide_args(n):
    return L(collections.ChainMap)(*[L(dict)(index=i) for i in range(n)])


def wide_kwargs(n):
    return L(dict)(**{f"k{i}": L(dict)(index=i) for i in range(n)})


def deep_args(n):
    node = L(dict)(index=0)
    for _ in range(n):
        node = L(collections.ChainMap)(node)
    return node


def deep_kwargs(n):
    node = L(dict)(index=0)
    for i in range(n):
        node = L(dict)(index=i, child=node)
    return node


def parent_lookups(monkeypatch, cfg) -> int:
    calls = collections.Counter()
    for name in ("_parent", "_holds"):
        original = getattr(lazy, name)

        def counted(*args, _original=original, _name=name):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(lazy, name, counted)
    instantiate(cfg)
    monkeypatch.undo()
    return sum(calls.values())


@pytest.mark.parametrize("shape", [wide_args, wide_kwargs, deep_args, deep_kwargs])
def test_parent_lookups_grow_at_most_linearly(monkeypatch, shape):
    small = parent_lookups(monkeypatch, shape(100))
    large = parent_lookups(monkeypatch, shape(200))
    assert large < 3 * max(small, 1), (small, large)
    # Building needs the whole config only at the top, not once per node.
    assert large < 200, large


def test_a_node_of_another_config_still_resolves_against_its_own():
    # The shortcut (a child pointing at the node being walked shares its owner) must not hide a
    # node placed from elsewhere: its ${...} resolve against the config it belongs to.
    other = L(dict)(size="${sizes.small}")
    outer = {"sizes": {"small": 3}, "model": other}
    home = L(dict)(sizes={"small": 7}, model=other)  # adopts `other`: ${} now resolve in home
    assert instantiate(outer)["model"] == {"size": 7}
    assert instantiate(home)["model"] == {"size": 7}
