"""Registries that map a dataset name to its records and to its metadata.

``DatasetCatalog`` maps a name to a zero-argument function returning ``list[dict]`` (one dict per
image, see ``docs/data.md`` for the keys). The function runs only when the data is needed, so
registering a dataset is free and a missing dataset fails only when someone asks for it.

``MetadataCatalog`` maps a name to a :class:`Metadata` object: class names, keypoint names and
flip map, OKS sigmas, evaluator type, the dataset-id to contiguous-id mapping.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = [
    "DatasetCatalog",
    "Metadata",
    "MetadataCatalog",
    "dataset_name",
    "flip_indices_from_metadata",
    "keypoint_flip_indices",
]


def _unknown_name_error(kind: str, name: str, available: list[str]) -> KeyError:
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(sorted(available)) or "(none)"
    return KeyError(
        f"{kind} {name!r} is not registered.{hint} Registered: {listing}. "
        "Register a COCO-format dataset with lazydet.data.register_coco(name, json_file, image_root)."
    )


def dataset_name(value: Any) -> str:
    """The dataset name that ``value`` stands for: a name, or a config node that registers a
    dataset and returns its name (``L(register_coco)(name=..., json_file=..., image_root=...)``,
    which is then built, registering the dataset, as a config's loader would build it).

    Both catalogs take either, so code that reads ``cfg.dataset.test`` from a config works
    whichever way the config names its dataset.
    """
    if isinstance(value, str):
        if "${" in value:
            raise ValueError(
                f"dataset name {value!r} is an unresolved ${{...}} interpolation; resolve the "
                "config first (lazydet.config.resolve(cfg), or read a built config's value)"
            )
        return value
    if isinstance(value, Mapping) and "_target_" in value:
        from lazydet.config import instantiate  # a config node: build it as its loader would

        name = instantiate(value)
        if not isinstance(name, str):
            raise TypeError(
                f"the config node {value['_target_']} given as a dataset name returned a "
                f"{type(name).__name__}; it must return the dataset's name (register_coco does)"
            )
        return name
    raise TypeError(
        "a dataset name must be a string, or a config node returning one such as "
        f"L(register_coco)(...); got {type(value).__name__} {value!r}"
    )


class _DatasetCatalog:
    """Name -> function returning the dataset's list of per-image dicts."""

    def __init__(self) -> None:
        self._loaders: dict[str, Callable[[], list[dict]]] = {}

    def register(self, name: str, loader: Callable[[], list[dict]]) -> None:
        """Register ``loader`` under ``name``.

        Registering the same (equal) loader twice is a no-op, so a config that registers its
        dataset can be loaded more than once; registering a *different* loader under a taken name
        is an error, because silently replacing a dataset hides mistakes.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"dataset name must be a non-empty string, got {name!r}")
        if not callable(loader):
            raise TypeError(f"loader for dataset {name!r} must be callable, got {type(loader)}")
        existing = self._loaders.get(name)
        if existing is not None and existing != loader:
            raise ValueError(
                f"dataset {name!r} is already registered with a different loader ({existing!r}); "
                f"pick another name or call DatasetCatalog.remove({name!r}) first."
            )
        self._loaders[name] = loader

    def get(self, name: Any) -> list[dict]:
        """Call the loader registered under ``name`` and return its list of dicts.

        ``name`` may also be a config node that registers the dataset (see :func:`dataset_name`).
        """
        name = dataset_name(name)
        if name not in self._loaders:
            raise _unknown_name_error("dataset", name, list(self._loaders))
        records = self._loaders[name]()
        if not isinstance(records, list):
            raise TypeError(
                f"loader of dataset {name!r} returned {type(records).__name__}; it must return "
                "a list of dicts"
            )
        return records

    def loader(self, name: str) -> Callable[[], list[dict]]:
        """The registered function itself (without calling it)."""
        name = dataset_name(name)
        if name not in self._loaders:
            raise _unknown_name_error("dataset", name, list(self._loaders))
        return self._loaders[name]

    def remove(self, name: str) -> None:
        self._loaders.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._loaders)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class Metadata:
    """Attributes describing one dataset (``thing_classes``, ``keypoint_names``, ...).

    Attributes are set once: setting an attribute again to a *different* value raises, because
    two parts of the code disagreeing about, say, class order is a bug that must not be silent.
    Reading an attribute that was never set raises an ``AttributeError`` listing what is set.
    """

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_values", {})

    def __getattr__(self, key: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if key in values:
            return values[key]
        raise AttributeError(
            f"metadata of dataset {self.name!r} has no {key!r}; it has: {sorted(values) or 'nothing'}"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        values = self._values
        if key in values and values[key] != value:
            raise ValueError(
                f"metadata {key!r} of dataset {self.name!r} is already {values[key]!r}; "
                f"refusing to change it to {value!r}"
            )
        values[key] = value

    def set(self, **kwargs: Any) -> Metadata:
        for key, value in kwargs.items():
            setattr(self, key, value)
        return self

    def replace(self, **kwargs: Any) -> Metadata:
        """Overwrite attributes on purpose (e.g. a cache path that depends on an env var)."""
        self._values.update(kwargs)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Metadata(name={self.name!r}, {self._values!r})"


class _MetadataCatalog:
    """Name -> :class:`Metadata`. ``get`` creates an empty entry on first use."""

    def __init__(self) -> None:
        self._entries: dict[str, Metadata] = {}

    def get(self, name: Any) -> Metadata:
        """The metadata of ``name`` (or of the dataset a config node registers, see
        :func:`dataset_name`), created empty on first use."""
        name = dataset_name(name)
        if name not in self._entries:
            self._entries[name] = Metadata(name)
        return self._entries[name]

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()


def keypoint_flip_indices(
    keypoint_names: list[str], keypoint_flip_map: list[tuple[str, str]] | tuple
) -> list[int]:
    """Permutation ``p`` such that after a mirror, keypoint ``i`` takes the values of ``p[i]``.

    ``keypoint_flip_map`` lists pairs of names that swap under a horizontal flip
    (e.g. ``("left_eye", "right_eye")``); names not in any pair map to themselves.
    """
    index = {name: i for i, name in enumerate(keypoint_names)}
    permutation = list(range(len(keypoint_names)))
    for pair in keypoint_flip_map:
        if len(pair) != 2:
            raise ValueError(f"keypoint_flip_map entries must be pairs of names, got {pair!r}")
        a, b = pair
        for n in (a, b):
            if n not in index:
                raise ValueError(
                    f"keypoint_flip_map names {n!r}, which is not in keypoint_names {keypoint_names}"
                )
        permutation[index[a]], permutation[index[b]] = index[b], index[a]
    return permutation


def flip_indices_from_metadata(dataset_name: str) -> list[int]:
    """:func:`keypoint_flip_indices` from a dataset's ``keypoint_names`` and ``keypoint_flip_map``
    metadata (a config can pass this to ``DatasetMapper(keypoint_flip_indices=...)``)."""
    meta = MetadataCatalog.get(dataset_name)
    return keypoint_flip_indices(meta.keypoint_names, meta.keypoint_flip_map)
