"""``streamcl learners``: list the registered learners and their options."""

from __future__ import annotations

import argparse
import inspect
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from learners import registry


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("learners", help="list learners and their options")
    parser.set_defaults(run=run)


def describe_options(
    model: type[BaseModel],
    prefix: str = "",
    defaults: BaseModel | None = None,
    fixed: dict[str, str] | None = None,
) -> list[str]:
    """One line per option, nested models as dotted names.

    ``defaults`` is the nested model's default instance in its parent (a learner may default its
    backbone to ``identity`` while ``BackboneConfig`` itself defaults to ``mlp``). ``fixed``:
    dotted options the learner sets itself whatever they say, with what it sets them to.
    """
    fixed = fixed or {}
    lines = []
    for name, field in model.model_fields.items():
        if f"{prefix}{name}" in fixed:
            lines.append(f"    {prefix}{name}: {fixed[f'{prefix}{name}']}")
            continue
        annotation = field.annotation
        default = (
            getattr(defaults, name)
            if defaults is not None
            else field.get_default(call_default_factory=True)
        )
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += describe_options(annotation, f"{prefix}{name}.", default, fixed)
            continue
        description = f"  {field.description}" if field.description else ""
        shown = "(required)" if field.is_required() else repr(default)
        lines.append(f"    {prefix}{name}: {_kind(annotation)} = {shown}{description}")
    return lines


def _kind(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return "|".join(str(choice) for choice in get_args(annotation))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def run(args: argparse.Namespace) -> int:
    for name in registry.names():
        cls = registry.get(name.split(":<")[0] + (":x" if ":<" in name else ""))
        summary = (inspect.getdoc(cls) or "").splitlines()[0] if cls.__doc__ else ""
        print(f"{name}  —  {summary}")
        fixed = (
            {"backbone.freeze": "always true  this learner learns no backbone weights"}
            if cls.frozen_backbone
            else None
        )
        for line in describe_options(cls.config_model, fixed=fixed):
            print(line)
        print()
    return 0
