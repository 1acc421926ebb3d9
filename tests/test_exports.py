"""Every public name has one public home, and says so.

The public modules each list their names in ``__all__``; a name is exported
by exactly one of them (its home), and its ``__module__`` names that home,
whatever private module defines it.
"""

from __future__ import annotations

import importlib
import types

import pytest

PUBLIC_MODULES = [
    "suricate",
    "suricate.actors",
    "suricate.store",
    "suricate.supervision",
    "suricate.testing",
    "suricate.aio",
    "suricate.blocking",
]


def _module(name: str) -> types.ModuleType:
    return importlib.import_module(name)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_a_public_module_lists_existing_public_names_once(name: str) -> None:
    module = _module(name)
    exported = module.__all__
    assert len(set(exported)) == len(exported), name
    for attr in exported:
        assert not attr.startswith("_"), (name, attr)
        assert hasattr(module, attr), (name, attr)


def test_each_public_object_has_exactly_one_public_home() -> None:
    homes: dict[int, list[str]] = {}
    for name in PUBLIC_MODULES:
        module = _module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if isinstance(obj, (type, types.FunctionType)):
                homes.setdefault(id(obj), []).append(f"{name}.{attr}")
    shared = [where for where in homes.values() if len(where) > 1]
    assert shared == []


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_a_public_class_or_function_names_its_home_as_its_module(name: str) -> None:
    module = _module(name)
    for attr in module.__all__:
        obj = getattr(module, attr)
        if isinstance(obj, (type, types.FunctionType)) and obj.__module__.startswith("suricate"):
            assert obj.__module__ == name, (attr, obj.__module__)


def test_no_public_module_exports_a_private_helper_of_another() -> None:
    # Private modules are never part of the public surface.
    for name in PUBLIC_MODULES:
        assert not any(part.startswith("_") for part in name.split(".")), name
