"""Stage settings in TOML: read a file, write one back (settings round-trip), find the
shipped defaults.

A config file has one table per stage: ``[prune]``, ``[quantize]``, ``[encode]``. The shipped
defaults for each zoo architecture are ``dc_engine/configs/<architecture>.toml`` (package data,
so they are installed with the package).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from ._files import regular_file
from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def load_toml(path) -> dict:
    """Parse a TOML file; a missing file or a syntax error is a ConfigError naming the file."""
    path = regular_file(path, "config file", "Pass the path of a TOML file (--config).",
                        error=ConfigError, missing=ConfigError, directory=ConfigError)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: not UTF-8 text ({e})") from None
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


def has_shipped_config(architecture: str) -> bool:
    """Whether a zoo architecture has a shipped config (``dc_engine/configs/ARCH.toml``)."""
    return (CONFIG_DIR / f"{architecture}.toml").is_file()


PRESETS = ("paper", "max")
"""Shipped presets: ``"paper"`` (``ARCH.toml``, Deep Compression's settings, the default) and
``"max"`` (``ARCH.max.toml``, the smallest file at the paper's error; README "Beyond the
paper")."""


def default_config_path(architecture: str, preset: str = "paper") -> Path:
    """The shipped config of a zoo architecture for ``preset`` (:data:`PRESETS`);
    ConfigError if there is none."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; presets: {list(PRESETS)}")
    p = CONFIG_DIR / (f"{architecture}.toml" if preset == "paper"
                      else f"{architecture}.{preset}.toml")
    if not p.exists():
        shipped = sorted(q.stem for q in CONFIG_DIR.glob("*.toml"))
        kind = "" if preset == "paper" else f"{preset} "
        raise ConfigError(f"no shipped {kind}config for architecture {architecture!r} "
                          f"(shipped: {shipped}); pass --config FILE.toml")
    return p


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"}


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):  # includes numpy.float64; repr() of that is not TOML
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or
                                                   ord(c) == 0x7F else c) for c in v) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    ok = k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k)
    return k if ok else _scalar(k)


def dump_toml(data: dict) -> str:
    """TOML text for nested dicts of scalars and lists (what our configs hold).

    ``None`` values are left out (TOML has no null).
    """
    lines: list[str] = []

    def table(d: dict, prefix: list[str]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and v is not None}
        subs = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix and (scalars or not subs):
            lines.append("[" + ".".join(_key(p) for p in prefix) + "]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_scalar(v)}")
        if scalars:
            lines.append("")
        for k, v in subs.items():
            table(v, prefix + [k])

    table(data, [])
    return "\n".join(lines).rstrip() + "\n"


def build_settings(cls, table: dict, what: str):
    """``cls(**table)`` for a settings dataclass; ValueError naming unknown keys (``what``:
    e.g. "pruning", for the message)."""
    known = set(cls.__dataclass_fields__)
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return cls(**table)


__all__ = ["load_toml", "dump_toml", "default_config_path", "build_settings", "CONFIG_DIR",
           "PRESETS"]
