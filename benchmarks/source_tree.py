"""Run the tool folders from a plain source checkout, where the project is not installed.

``pyproject.toml`` installs ``train/``, ``export/`` and ``benchmarks/`` under the names
``dstfuse_train``, ``dstfuse_export`` and ``dstfuse_bench`` (``[tool.setuptools.package-dir]``). In
a bare checkout (``PYTHONPATH=.``, as on the device machine) those names do not exist;
:func:`alias_tool_packages` registers them for the folders, reading the mapping from the same table,
so code that imports ``dstfuse_train.trainer`` runs unchanged. Where the names import already (an
installed or editable project) it does nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__all__ = ["REPO_ROOT", "tool_package_dirs", "alias_tool_packages"]

#: The checkout this file belongs to (``benchmarks/..``).
REPO_ROOT = Path(__file__).resolve().parents[1]


def tool_package_dirs(root: Path = REPO_ROOT) -> dict[str, Path]:
    """``{installed name: folder}`` from ``[tool.setuptools.package-dir]`` of ``root/pyproject.toml``."""
    import tomllib  # Python >= 3.11; only a source checkout needs it

    with open(root / "pyproject.toml", "rb") as fh:
        table = tomllib.load(fh)["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in table.items()}


def alias_tool_packages(root: Path = REPO_ROOT) -> list[str]:
    """Make each tool package importable under its installed name; return the names aliased here."""
    try:
        dirs = tool_package_dirs(root)
    except (OSError, ImportError, KeyError):  # an installed copy (no pyproject.toml beside it), or Python < 3.11
        return []
    aliased = []
    for name, folder in dirs.items():
        if _importable(name):
            continue
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
        if spec is None or spec.loader is None:  # pragma: no cover - only for a broken checkout
            raise ImportError(f"cannot alias {name} to {folder}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        aliased.append(name)
    return aliased


def _importable(name: str) -> bool:
    return name in sys.modules or importlib.util.find_spec(name) is not None
