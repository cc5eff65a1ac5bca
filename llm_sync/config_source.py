"""Reading configuration safely: YAML files, ``${ENV}`` interpolation, and
error messages that never quote the input.

A config holds keys, so its errors are built from field paths and our own
words only: never pydantic's text about the input, never a YAML error's
copy of the offending line, and a name the user wrote (an endpoint, a
misspelt field) only when it reads like a name — an indentation slip can
turn a key into a field name. Every error is raised outside the ``except``
clause that caught the original, so not even ``__context__`` keeps it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TypeVar

import yaml
from pydantic import ValidationError

from .errors import LLMConfigError

__all__ = ["interpolate", "read_yaml", "config_errors", "validation_message", "looks_like_name", "shown_name"]

ENDPOINT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
"""What an endpoint name may be (after lower-casing)."""

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(value: Any, path: str, env: Mapping[str, str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, recursively."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise LLMConfigError(
                f"{path or 'config'}: environment variable {name} is not set "
                f"(write ${{{name}:-}} to make it optional)"
            )

        return _ENV_PATTERN.sub(substitute, value)
    if isinstance(value, Mapping):
        return {k: interpolate(v, f"{path}.{shown_name(k)}" if path else shown_name(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


# Names a user writes that may be shown in a message. A key never looks
# like this: a misspelt field is lower-case words; an endpoint name is
# short, with few digits.
_FIELD_LIKE = re.compile(r"[a-z][a-z_]{0,39}")
_HIDDEN = "<a name not shown>"


def looks_like_name(name: str) -> bool:
    return (bool(ENDPOINT_NAME.match(name.lower())) and len(name) <= 40
            and sum(char.isdigit() for char in name) <= 4)


def shown_name(name: Any) -> str:
    return str(name) if looks_like_name(str(name)) else _HIDDEN


def _field_path(loc: Any) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{shown_name(part)}" if out else shown_name(part)
    return out or "config"


def validation_message(exc: ValidationError) -> str:
    """Field paths and messages only: never pydantic's ``input``, and an
    unknown field's name only when it reads like a field name (an
    indentation slip turns a key into a field name)."""
    lines = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = [part for part in err["loc"] if not str(part).startswith(("function-", "constrained-"))]
        message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "extra_forbidden":
            name = loc.pop() if loc else ""
            if isinstance(name, str) and _FIELD_LIKE.fullmatch(name):
                loc.append(name)
                message = "unknown field"
            else:
                message = ("an unknown field, whose name is not shown in case it is a key "
                           "(an indentation slip?)")
        lines.append(f"{_field_path(loc)}: {message}")
    return "invalid configuration: " + "; ".join(lines)


_T = TypeVar("_T")


def config_errors(build: Callable[[], _T]) -> _T:
    """``build()``, its ValidationError turned into an LLMConfigError raised
    outside the ``except`` clause, so not even ``__context__`` keeps it."""
    try:
        return build()
    except ValidationError as exc:
        error = LLMConfigError(validation_message(exc))
    raise error


# A quoted stretch of the input inside a YAML problem (an undefined alias,
# an unknown tag): it may be part of a key.
_QUOTED = re.compile(r"""(['"]).{2,}?\1""")


def read_yaml(path: Path) -> Mapping[str, Any]:
    """The file's top-level mapping. Errors say what and where, never quote
    the text (it may hold a key), and are raised outside the ``except``
    clause so the original is not even kept as ``__context__``."""
    error: Optional[LLMConfigError] = None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        error = LLMConfigError(f"cannot read config file {path}: {exc.strerror}")
    except UnicodeDecodeError as exc:
        error = LLMConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = _QUOTED.sub(r"\1...\1", str(getattr(exc, "problem", None) or "syntax error"))
        error = LLMConfigError(f"config file {path} is not valid YAML{where}: {problem}")
    except RecursionError:
        error = LLMConfigError(f"config file {path} is nested too deeply")
    if error is not None:
        raise error
    if not isinstance(data, Mapping):
        raise LLMConfigError(f"config file {path} must hold a mapping at the top level")
    return data
