"""A method's command-line options, derived from its adapter config dataclass (one source of truth).

A recipe names the config fields that are its hyperparameters; each option takes the field's type,
default and help text from the config, so a field exists in one place. Where the recipe departs from
the config on purpose (a default scaled to CPU budgets, a flag's historical name), an
:class:`Override` in the recipe's table says what differs and why, and the flag's help shows it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


class _ConfigDefault:
    def __repr__(self) -> str:
        return "the config's default"


CONFIG_DEFAULT: Any = _ConfigDefault()


@dataclass(frozen=True)
class Override:
    """How a recipe's option differs from its config field, and why (one line)."""

    reason: str
    default: Any = CONFIG_DEFAULT  # the option's default
    name: str | None = None  # the flag's (and config.json key's) name when it differs from the field
    type: Any = None  # the option's type when the flag carries the value differently (e.g. text)
    help: str | None = None  # the option's help when its meaning in a run differs from the config's


class MethodOptions:
    """Base of the derived options: maps them back to the config's fields and validates them there."""

    config_class: ClassVar[type]
    overrides: ClassVar[dict[str, Override]] = {}

    def __post_init__(self) -> None:
        # The config's own validation, before any model is loaded (names the field and the fix).
        names = {f.name for f in dataclasses.fields(self.config_class)}
        where = {"target_modules": ["check"]} if "target_modules" in names else {}
        self.config_class(**where, **self.config_values())

    def config_values(self) -> dict[str, Any]:
        """The derived options under their config names; None leaves the config's default (or the
        recipe's, e.g. the warmup from the run's warmup_ratio)."""
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "config_field" in f.metadata and value is not None:
                values[f.metadata["config_field"]] = value
        return values


def derive_options(
    config_class: type, names: tuple[str, ...], overrides: dict[str, Override] | None = None
) -> Callable[[type], type]:
    """Class decorator: adds one dataclass field per config field in ``names`` (first, in that order)
    to a :class:`MethodOptions` subclass, whose own annotated fields (recipe-only options) follow."""
    overrides = overrides or {}
    unknown = set(overrides) - set(names)
    assert not unknown, f"overrides of fields not derived: {sorted(unknown)}"

    def decorate(cls: type) -> type:
        hints = typing.get_type_hints(config_class)
        fields = {f.name: f for f in dataclasses.fields(config_class)}
        annotations: dict[str, Any] = {}
        for name in names:
            source, change = fields[name], overrides.get(name, Override(""))
            option = change.name or name
            default = source.default if change.default is CONFIG_DEFAULT else change.default
            text = change.help or source.metadata["help"]
            if change.default is not CONFIG_DEFAULT:
                text += f" Differs from {config_class.__name__}'s {source.default!r}: {change.reason}."
            annotations[option] = change.type or hints[name]
            setattr(cls, option, field(default=default, metadata={"help": text, "config_field": name}))
        cls.__annotations__ = annotations | cls.__dict__.get("__annotations__", {})
        cls.config_class = config_class
        cls.overrides = overrides
        return dataclass(cls)

    return decorate
