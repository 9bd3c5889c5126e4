"""Fields and validation shared by every method's config dataclass."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

CONFIG_REGISTRY: dict[str, type[AdapterConfig]] = {}


def check(ok: bool, name: str, value: Any, fix: str) -> None:
    """Raise a ValueError naming the field, the value and how to fix it."""
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: {fix}")


def type_fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is of the field type ``annotation`` (int, float, str, None, list[...] and
    unions of them). A bool is no number (``r=True`` is a typo, not rank 1); an int is a float; a
    float must be finite (an infinite alpha or threshold only turns the run into NaNs later)."""
    if annotation is Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(type_fits(value, arg) for arg in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, (list, tuple)) and all(type_fits(v, item) for v in value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, annotation)


def type_name(annotation: Any) -> str:
    names = {int: "an integer", float: "a finite number", str: "a string", type(None): "None"}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        item = type_name(typing.get_args(annotation)[0]).removeprefix("a ").removeprefix("an ")
        return f"a list of {item}s"
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


@dataclass
class AdapterConfig:
    """Base of the method configs: which Linear modules to adapt and what else to train."""

    method: ClassVar[str] = ""

    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Linear modules to adapt: a list of name suffixes (['query', 'value']) or one regex "
            "matched against the full module name, as in PEFT."
        },
    )
    r: int = field(default=1, metadata={"help": "Rank of the trainable factors."})
    lora_alpha: float = field(
        default=4.0, metadata={"help": "Scale numerator: the update is alpha / r * B A."}
    )
    lora_dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the adapter input (0 enables the fused fast path)."}
    )
    modules_to_save: list[str] | None = field(
        default=None,
        metadata={"help": "Modules trained in full and saved with the adapter, e.g. ['classifier']."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the adapter's initialisation and random resets."})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.method:
            CONFIG_REGISTRY[cls.method] = cls

    def __post_init__(self) -> None:
        # Types first, so the range checks below (and a subclass's) never meet a string or a bool:
        # a config read from YAML or JSON gets "r='8' is invalid", not a TypeError from '>='.
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            check(type_fits(value, hints[f.name]), f.name, value, f"expected {type_name(hints[f.name])}")
        check(
            self.target_modules is not None and len(self.target_modules) > 0,
            "target_modules",
            self.target_modules,
            "name the Linear modules to adapt, e.g. ['query', 'key', 'value'] or a regex string",
        )
        if isinstance(self.target_modules, str):
            try:
                re.compile(self.target_modules)
            except re.error as err:
                raise ValueError(
                    f"target_modules={self.target_modules!r} is not a valid regex: {err}"
                ) from None
        else:
            self.target_modules = list(self.target_modules)
        check(isinstance(self.r, int) and self.r >= 1, "r", self.r, "use an integer >= 1")
        check(self.lora_alpha > 0, "lora_alpha", self.lora_alpha, "use a positive number")
        check(0.0 <= self.lora_dropout < 1.0, "lora_dropout", self.lora_dropout, "use a value in [0, 1)")
        if self.modules_to_save is not None:
            self.modules_to_save = list(self.modules_to_save)

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> AdapterConfig:
        """Rebuild a config saved by ``to_dict``; unknown methods or fields raise a ValueError."""
        data = dict(data)
        method = data.pop("method", None)
        if method not in CONFIG_REGISTRY:
            raise ValueError(f"method={method!r} is unknown: expected one of {sorted(CONFIG_REGISTRY)}")
        cls = CONFIG_REGISTRY[method]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{method} config has unknown field(s) {unknown}")
        return cls(**data)

    def layer_class(self) -> type:
        raise NotImplementedError


def matches(name: str, patterns: list[str] | str) -> bool:
    """PEFT's rule: a regex string must match the whole name; a list matches by name suffix."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)
