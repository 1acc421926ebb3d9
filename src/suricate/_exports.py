"""Public homes: each public name has one, the module that exports it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["fix_module_metadata"]


def fix_module_metadata(
    module_name: str, names: Iterable[str], namespace: Mapping[str, object]
) -> None:
    """Give each class and function exported by ``module_name`` that module
    as its ``__module__``, so that reprs, docs and tracebacks name its public
    home (``suricate.Input``), not the private module that defines it."""
    for name in names:
        obj = namespace[name]
        module = getattr(obj, "__module__", None)
        if not (isinstance(module, str) and module.startswith("suricate.")):
            continue
        if isinstance(obj, type) or callable(obj):
            try:
                obj.__module__ = module_name
            except (AttributeError, TypeError):  # pragma: no cover - a builtin
                pass
