"""Derived points: a small, safe arithmetic over a device's own points, as profile data.

A radar gauge reports the distance to the water; the level is the mounting
height minus it: ``level: {expr: "install_height - distance"}``. Expressions
take numbers, the names of the device's points (and of earlier or later
derived points: the order is worked out, a cycle refused) and of per-device
parameters declared in the profile, ``+ - * /``, unary minus, parentheses
and ``abs``, ``min``, ``max``. They are parsed once with :mod:`ast` into a
tree of closures (nothing is ever ``eval``-ed) and evaluated on numpy
arrays: one value per poll of every device of a profile at once.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

Array = npt.NDArray[np.float64]
Evaluator = Callable[[Mapping[str, Array]], Array]

_BINARY: dict[type[ast.operator], Callable[[Array, Array], Array]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
}
_FUNCTIONS: dict[str, Callable[..., Array]] = {
    "abs": lambda x: np.abs(x),
    "min": lambda *xs: np.minimum.reduce(np.broadcast_arrays(*xs)),
    "max": lambda *xs: np.maximum.reduce(np.broadcast_arrays(*xs)),
}
MAX_LENGTH = 200


@dataclass(frozen=True)
class Expression:
    """A parsed expression: the names it reads, and how to evaluate it."""

    text: str
    names: frozenset[str]
    evaluate: Evaluator


def parse_expression(text: str) -> Expression:
    """Parse ``text``; ValueError saying what is not allowed."""
    if len(text) > MAX_LENGTH:
        raise ValueError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an expression: {exc.msg}") from None
    names: set[str] = set()
    evaluate = _compile(tree.body, names)
    return Expression(text, frozenset(names), evaluate)


def _compile(node: ast.expr, names: set[str]) -> Evaluator:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise ValueError(f"{node.value!r} is not a number")
        value = float(node.value)
        return lambda _v: np.asarray(value)
    if isinstance(node, ast.Name):
        name = node.id
        names.add(name)
        return lambda v: v[name]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _compile(node.operand, names)
        if isinstance(node.op, ast.UAdd):
            return inner
        return lambda v: np.negative(inner(v))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op = _BINARY[type(node.op)]
        left, right = _compile(node.left, names), _compile(node.right, names)
        return lambda v: op(left(v), right(v))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ValueError(f"only the functions {', '.join(sorted(_FUNCTIONS))} may be called")
        if node.keywords or not node.args or (node.func.id == "abs" and len(node.args) != 1):
            raise ValueError(f"{node.func.id}() takes values, abs() exactly one, no keywords")
        fn = _FUNCTIONS[node.func.id]
        args = [_compile(a, names) for a in node.args]
        return lambda v: fn(*(a(v) for a in args))
    raise ValueError(f"{ast.unparse(node)!r} is not allowed (numbers, names, + - * /, abs/min/max)")


class DerivedPointSpec(BaseModel):
    """A point computed from the device's own points in the same poll."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    expr: str = Field(min_length=1)
    unit: str = ""
    description: str = ""

    @field_validator("expr")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_expression(value)
        return value

    @property
    def expression(self) -> Expression:
        """The parsed expression."""
        return parse_expression(self.expr)


def order_derived(
    derived: list[DerivedPointSpec], points: set[str], params: set[str]
) -> list[DerivedPointSpec]:
    """The derived points in an order where each comes after those it reads.

    ValueError naming the point for an unknown name, a clash or a cycle.
    """
    by_name = {d.name: d for d in derived}
    for i, d in enumerate(derived):
        if d.name in points or d.name in params:
            raise ValueError(f"derived[{i}] {d.name!r} is already a point or parameter")
        if [x.name for x in derived].count(d.name) > 1:
            raise ValueError(f"derived[{i}] {d.name!r} is defined twice")
        unknown = d.expression.names - points - params - set(by_name)
        if unknown:
            raise ValueError(f"derived[{i}] {d.name!r} reads unknown {', '.join(sorted(unknown))}")
    ordered: list[DerivedPointSpec] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ValueError(f"derived {name!r} depends on itself: {' -> '.join([*path, name])}")
        state[name] = 1
        for dep in sorted(by_name[name].expression.names & set(by_name)):
            visit(dep, [*path, name])
        state[name] = 2
        ordered.append(by_name[name])

    for d in derived:
        visit(d.name, [])
    return ordered


def check_derived(
    derived: list[DerivedPointSpec], points: list[str], params: Mapping[str, float | None]
) -> None:
    """Profile validation: names known, none twice, no cycle (ValueError otherwise)."""
    order_derived(derived, set(points), set(params))
