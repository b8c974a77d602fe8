"""Import every module of a package so their registration decorators run.

Adding a metric, model adapter or data source is therefore one new file in its package.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache


@cache
def import_submodules(package: str, skip: tuple[str, ...] = ("base",)) -> tuple[str, ...]:
    pkg = importlib.import_module(package)
    names = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name in skip:
            continue
        importlib.import_module(f"{package}.{info.name}")
        names.append(info.name)
    return tuple(names)
