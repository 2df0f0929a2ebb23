"""The part of CEL that the vendored CRDs' x-kubernetes-validations rules use on our objects, evaluated offline.

JSON Schema cannot read these rules, and the API server (which evaluates them with the real CEL) is not here. This
reads the subset they are written in: literals, `self` and macro variables, field selection, `has()`, `!`, `&&`,
`||`, `? :`, comparisons, `in`, `+`, `size()`, `.all()`, `.exists()`, `.contains()`, `.startsWith()`,
`.endsWith()`. Anything else raises CelUnsupported, so a rule outside the subset fails a test rather than passing
unread. As CEL does, `&&` and `||` absorb an error on one side when the other side decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Scope = Mapping[str, Any]
Node = Callable[[Scope], Any]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<ident>[A-Za-z_]\w*)
      | (?P<op>\|\||&&|==|!=|<=|>=|[<>!?:.,()\[\]+-])
    )""",
    re.VERBOSE,
)


class CelUnsupported(ValueError):
    """A rule uses CEL this evaluator does not read."""


class CelError(ValueError):
    """Evaluating a rule failed (a missing field, a wrong type): the API server refuses the object then too."""


def evaluate(rule: str, self_value: Any) -> bool:
    """The rule's verdict on `self`; CelError when it cannot be evaluated (a refusal), CelUnsupported for CEL
    outside the subset."""
    result = _Parser(rule).parse()({"self": self_value})
    if not isinstance(result, bool):
        raise CelError(f"{rule!r} is not a boolean: {result!r}")
    return result


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if not text[position:].strip():
            break
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            raise CelUnsupported(f"cannot read {text[position:]!r}")
        tokens.append((match.lastgroup, match[match.lastgroup]))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0

    def parse(self) -> Node:
        node = self._conditional()
        if self.position != len(self.tokens):
            raise CelUnsupported(f"{self.text!r}: unexpected {self.tokens[self.position][1]!r}")
        return node

    def _peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise CelUnsupported(f"{self.text!r}: ends early")
        token = self.tokens[self.position]
        if expected is not None and token[1] != expected:
            raise CelUnsupported(f"{self.text!r}: expected {expected!r}, got {token[1]!r}")
        self.position += 1
        return token

    def _conditional(self) -> Node:
        condition = self._or()
        if self._peek() != "?":
            return condition
        self._take("?")
        then = self._conditional()
        self._take(":")
        otherwise = self._conditional()
        return lambda scope: then(scope) if _boolean(condition(scope)) else otherwise(scope)

    def _or(self) -> Node:
        node = self._and()
        while self._peek() == "||":
            self._take()
            node = _logical(node, self._and(), decisive=True)
        return node

    def _and(self) -> Node:
        node = self._relation()
        while self._peek() == "&&":
            self._take()
            node = _logical(node, self._relation(), decisive=False)
        return node

    def _relation(self) -> Node:
        left = self._sum()
        operator = self._peek()
        comparisons: dict[str, Callable[[Any, Any], bool]] = {
            "==": lambda a, b: bool(a == b),
            "!=": lambda a, b: bool(a != b),
            "<": lambda a, b: bool(a < b),
            "<=": lambda a, b: bool(a <= b),
            ">": lambda a, b: bool(a > b),
            ">=": lambda a, b: bool(a >= b),
            "in": lambda a, b: a in b,
        }
        if operator not in comparisons:
            return left
        self._take()
        right = self._sum()
        compare = comparisons[operator]

        def node(scope: Scope) -> bool:
            try:
                return compare(left(scope), right(scope))
            except TypeError as exc:
                raise CelError(str(exc)) from None

        return node

    def _sum(self) -> Node:
        node = self._unary()
        while self._peek() in ("+", "-"):
            operator = self._take()[1]
            left, right = node, self._unary()
            node = _arithmetic(left, right, operator)
        return node

    def _unary(self) -> Node:
        if self._peek() == "!":
            self._take()
            operand = self._unary()
            return lambda scope: not _boolean(operand(scope))
        if self._peek() == "-":
            self._take()
            negated = self._unary()
            return lambda scope: -negated(scope)
        return self._member()

    def _member(self) -> Node:
        node = self._primary()
        while self._peek() in (".", "["):
            if self._take()[1] == "[":
                index = self._conditional()
                self._take("]")
                node = _index(node, index)
                continue
            name = self._take()[1]
            if self._peek() != "(":
                node = _select(node, name)
                continue
            self._take("(")
            if name in ("all", "exists"):
                variable = self._take()[1]
                self._take(",")
                body = self._conditional()
                self._take(")")
                node = _quantifier(node, variable, body, every=name == "all")
                continue
            arguments = self._arguments()
            node = _method(node, name, arguments, self.text)
        return node

    def _arguments(self) -> list[Node]:
        arguments: list[Node] = []
        while self._peek() != ")":
            arguments.append(self._conditional())
            if self._peek() == ",":
                self._take()
        self._take(")")
        return arguments

    def _primary(self) -> Node:
        kind, value = self._take()
        if kind == "number":
            number = int(value)
            return lambda scope: number
        if kind == "string":
            text = value[1:-1].encode().decode("unicode_escape")
            return lambda scope: text
        if value == "(":
            node = self._conditional()
            self._take(")")
            return node
        if value == "[":
            items = []
            while self._peek() != "]":
                items.append(self._conditional())
                if self._peek() == ",":
                    self._take()
            self._take("]")
            return lambda scope: [item(scope) for item in items]
        if kind != "ident":
            raise CelUnsupported(f"{self.text!r}: unexpected {value!r}")
        if value in ("true", "false"):
            literal = value == "true"
            return lambda scope: literal
        if value == "has":
            self._take("(")
            argument = self._member()
            self._take(")")
            presence = getattr(argument, "presence", None)
            if presence is None:
                raise CelUnsupported(f"{self.text!r}: has() of something other than a field")
            return presence
        if value == "size" and self._peek() == "(":
            self._take("(")
            (argument,) = self._arguments()
            return lambda scope: _size(argument(scope))
        if self._peek() == "(":
            raise CelUnsupported(f"{self.text!r}: function {value}()")
        return lambda scope: _variable(scope, value)


def _variable(scope: Scope, name: str) -> Any:
    if name not in scope:
        raise CelUnsupported(f"unknown name {name}")
    return scope[name]


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise CelError(f"not a boolean: {value!r}")
    return value


def _logical(left: Node, right: Node, *, decisive: bool) -> Node:
    """`||` (decisive=True: a true side decides) or `&&` (a false side decides), absorbing errors as CEL does."""

    def node(scope: Scope) -> bool:
        try:
            first: bool | CelError = _boolean(left(scope))
        except CelError as exc:
            first = exc
        if first is decisive:
            return decisive
        second = _boolean(right(scope))
        if second is decisive:
            return decisive
        if isinstance(first, CelError):
            raise first
        return second

    return node


def _arithmetic(left: Node, right: Node, operator: str) -> Node:
    def node(scope: Scope) -> Any:
        a, b = left(scope), right(scope)
        if type(a) is not type(b) or isinstance(a, bool):
            raise CelError(f"{a!r} {operator} {b!r}")
        return a + b if operator == "+" else a - b

    return node


def _select(target: Node, name: str) -> Node:
    def node(scope: Scope) -> Any:
        value = target(scope)
        if not isinstance(value, Mapping) or name not in value:
            raise CelError(f"no such key: {name}")
        return value[name]

    def presence(scope: Scope) -> bool:
        value = target(scope)
        if not isinstance(value, Mapping):
            raise CelError(f"has() on {value!r}")
        return name in value

    node.presence = presence  # type: ignore[attr-defined]
    return node


def _index(target: Node, index: Node) -> Node:
    def node(scope: Scope) -> Any:
        value, key = target(scope), index(scope)
        try:
            return value[key]
        except (KeyError, IndexError, TypeError):
            raise CelError(f"no such index: {key!r}") from None

    return node


def _quantifier(target: Node, variable: str, body: Node, *, every: bool) -> Node:
    def node(scope: Scope) -> bool:
        values = target(scope)
        if not isinstance(values, list | Mapping):
            raise CelError(f"all()/exists() on {values!r}")
        verdicts = (_boolean(body({**scope, variable: item})) for item in values)
        return all(verdicts) if every else any(verdicts)

    return node


_STRING_METHODS: dict[str, Callable[[str, str], bool]] = {
    "contains": str.__contains__,
    "startsWith": str.startswith,
    "endsWith": str.endswith,
}


def _method(target: Node, name: str, arguments: list[Node], text: str) -> Node:
    if name == "size" and not arguments:
        return lambda scope: _size(target(scope))
    if name in _STRING_METHODS and len(arguments) == 1:
        method = _STRING_METHODS[name]
        (argument,) = arguments

        def node(scope: Scope) -> bool:
            value, other = target(scope), argument(scope)
            if not isinstance(value, str) or not isinstance(other, str):
                raise CelError(f"{name}() on {value!r}")
            return method(value, other)

        return node
    raise CelUnsupported(f"{text!r}: method {name}()")


def _size(value: Any) -> int:
    if not isinstance(value, str | list | Mapping):
        raise CelError(f"size() of {value!r}")
    return len(value)
