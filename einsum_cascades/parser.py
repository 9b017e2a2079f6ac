"""The tokens and the recursive-descent parser of one Einsum line (`RM[m1+1,p] = max(RM[m1,p],
LM[m1,p]) where ...`), a filter condition or a size expression, into einsum_cascades/expr.py's
syntax tree; every error names file:line:column and what was expected."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from einsim.einsum_cascades.expr import (
    COMPARISONS, FUNCTIONS, REDUCTIONS, SIZE_ONLY_FUNCTIONS, Access, Binary, Call, Compare, Condition, Expr, Index,
    Logical, Name, Not, Number, Unary,
)
from einsim.errors import SpecError

# --- tokens ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op><=|>=|==|!=|[-+*/()\[\],=<>]))"
)


@dataclass(frozen=True)
class Token:
    kind: str  # number, name, op, end
    text: str
    column: int  # 0-based within the parsed text


class Location:
    """Where parsed text sits in its file: `file:line:column` for error messages."""

    def __init__(self, source: str = "<string>", line: int = 1, column: int = 1):
        self.source, self.line, self.column = source, line, column

    def at(self, offset: int) -> str:
        return f"{self.source}:{self.line}:{self.column + offset}"


def tokenize(text: str, where: Location) -> list[Token]:
    tokens, position = [], 0
    stripped = text.rstrip()
    while position < len(stripped):
        match = _TOKEN.match(stripped, position)
        if not match or match.end() == position:
            column = position + len(stripped[position:]) - len(stripped[position:].lstrip())
            raise SpecError(f"{where.at(column)}: unexpected character {stripped[column]!r} in {text.strip()!r}")
        kind = match.lastgroup
        tokens.append(Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    tokens.append(Token("end", "", len(stripped)))
    return tokens


# --- parser ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedEinsum:
    output: Access
    reduce_op: str | None
    reduce_vars: tuple[str, ...] | None  # as written in `max(m)`, None when implicit
    expression: Expr
    condition: "Condition | None"  # after `where`
    condition_column: int = 0  # where the condition's text starts in the line


# Words with a meaning of their own: never names of symbols or tensors.
KEYWORDS = ("and", "or", "not", "where", "inf")


class Parser:
    """Recursive descent over one line; every error names file:line:column and what was expected."""

    def __init__(self, text: str, where: Location):
        self.text, self.where = text, where
        self.tokens = tokenize(text, where)
        self.position = 0

    # helpers
    @property
    def token(self) -> Token:
        return self.tokens[self.position]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.position + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.token
        self.position = min(self.position + 1, len(self.tokens) - 1)
        return token

    def at_word(self, word: str) -> bool:
        return self.token.kind == "name" and self.token.text == word

    def fail(self, expected: str, token: Token | None = None) -> SpecError:
        token = token or self.token
        got = "end of line" if token.kind == "end" else repr(token.text)
        error = SpecError(f"{self.where.at(token.column)}: expected {expected}, got {got} in {self.text.strip()!r}")
        error.position = next((i for i, t in enumerate(self.tokens) if t is token), self.position)
        return error

    def expect(self, text: str, expected: str | None = None) -> Token:
        if self.token.text != text or self.token.kind not in ("op", "name"):
            raise self.fail(expected or repr(text))
        return self.advance()

    # grammar
    def einsum(self) -> ParsedEinsum:
        output = self.access(lhs=True)
        self.expect("=", "'=' after the output tensor")
        reduce_op, reduce_vars = None, None
        if self.at_reduction():
            reduce_op = self.advance().text
            self.advance()  # (
            names = [self.advance().text]
            while self.token.text == ",":
                self.advance()
                names.append(self.advance().text)
            self.advance()  # )
            reduce_vars = tuple(names)
        expression = self.expression()
        condition, column = None, 0
        if self.at_word("where"):
            self.advance()
            column = self.token.column
            condition = self.condition()
        if self.token.kind != "end":
            raise self.fail("an operator (+ - * /), 'where' or the end of the Einsum")
        return ParsedEinsum(output, reduce_op, reduce_vars, expression, condition, column)

    def at_reduction(self) -> bool:
        """`max(m) X[...]`: a reduction prefix; `max(a, b)` alone is the two-argument map."""
        if not (self.token.kind == "name" and self.token.text in REDUCTIONS and self.peek().text == "("):
            return False
        ahead = 2
        while True:
            if self.peek(ahead).kind != "name" or not self.peek(ahead).text.islower():
                return False
            following = self.peek(ahead + 1).text
            if following == ")":
                nxt = self.peek(ahead + 2)
                return nxt.kind in ("name", "number") or nxt.text in ("(", "-")
            if following != ",":
                return False
            ahead += 2

    def access(self, lhs: bool = False) -> Access:
        token = self.token
        if token.kind != "name":
            raise self.fail("a tensor name such as QK[m,p]")
        self.advance()
        self.expect("[", f"'[' and the indices of {token.text}")
        indices: list[Index] = []
        if self.token.text != "]":
            indices.append(self.index())
            while self.token.text == ",":
                self.advance()
                indices.append(self.index())
        self.expect("]", "',' or ']' closing the indices")
        return Access(token.text, tuple(indices), token.column)

    def index(self) -> Index:
        token = self.token
        if token.kind == "number" and token.text.isdigit():
            self.advance()
            return Index("const", value=int(token.text))
        if token.kind != "name":
            raise self.fail("an index: a lower-case variable (m, m1+1), a rank name for the final state (M1) or an integer")
        self.advance()
        if token.text[0].isupper():
            return Index("final", token.text)
        offset = 0
        if self.token.text in ("+", "-"):
            sign = 1 if self.advance().text == "+" else -1
            if self.token.kind != "number" or not self.token.text.isdigit():
                raise self.fail("an integer offset such as the 1 in m1+1")
            offset = sign * int(self.advance().text)
        return Index("var", token.text, offset)

    def expression(self) -> Expr:
        left = self.term()
        while self.token.text in ("+", "-") and self.token.kind == "op":
            op = self.advance().text
            left = Binary(op, left, self.term())
        return left

    def term(self) -> Expr:
        left = self.unary()
        while self.token.text in ("*", "/") and self.token.kind == "op":
            op = self.advance().text
            left = Binary(op, left, self.unary())
        return left

    def unary(self) -> Expr:
        if self.token.text == "-" and self.token.kind == "op":
            self.advance()
            operand = self.unary()
            if isinstance(operand, Number):
                return Number(-operand.value)
            return Unary("-", operand)
        return self.primary()

    def primary(self) -> Expr:
        token = self.token
        if token.kind == "number":
            self.advance()
            return Number(float(token.text))
        if token.text == "(":
            self.advance()
            inner = self.expression()
            self.expect(")", "')' closing the parenthesis")
            return inner
        if token.kind == "name":
            if token.text == "inf":
                self.advance()
                return Number(math.inf)
            following = self.peek().text
            if following == "[":
                return self.access()
            if following == "(":
                if token.text not in FUNCTIONS:
                    raise self.fail(f"a function ({', '.join(sorted(set(FUNCTIONS) - set(SIZE_ONLY_FUNCTIONS)))})")
                self.advance()
                self.advance()
                args = [self.condition() if token.text == "where" else self.expression()]
                while self.token.text == ",":
                    self.advance()
                    args.append(self.expression())
                self.expect(")", f"',' or ')' closing {token.text}(")
                if len(args) != FUNCTIONS[token.text]:
                    raise SpecError(
                        f"{self.where.at(token.column)}: {token.text} takes {FUNCTIONS[token.text]} "
                        f"argument(s), got {len(args)} in {self.text.strip()!r}"
                    )
                return Call(token.text, tuple(args), token.column)
            if token.text in KEYWORDS:
                raise self.fail("a tensor access, a number, a function call or '('")
            self.advance()
            return Name(token.text, token.column)
        raise self.fail("a tensor access, a number, a function call or '('")

    def condition(self):
        """condition = conjunction {"or" conjunction}; `and` binds tighter than `or`."""
        operands = [self.conjunction()]
        while self.at_word("or"):
            self.advance()
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else Logical("or", tuple(operands))

    def conjunction(self):
        operands = [self.negation()]
        while self.at_word("and"):
            self.advance()
            operands.append(self.negation())
        return operands[0] if len(operands) == 1 else Logical("and", tuple(operands))

    def negation(self):
        if self.at_word("not"):
            self.advance()
            return Not(self.negation())
        if self.token.text == "(" and self.token.kind == "op":
            # `(m < 4 or m > 8)` groups conditions, `(m + 1) < p` groups arithmetic: try the
            # first, fall back to the second, and report the attempt that read further
            start = self.position
            try:
                self.advance()
                inner = self.condition()
                self.expect(")", "')' closing the parenthesis")
                if self.token.text not in COMPARISONS and self.token.text not in ("+", "-", "*", "/"):
                    return inner
                raise self.fail("'and', 'or', ')' or the end of the condition")
            except SpecError as grouped:
                self.position = start
                try:
                    return self.comparison()
                except SpecError as compared:
                    raise max((grouped, compared), key=lambda e: getattr(e, "position", 0)) from None
        return self.comparison()

    def comparison(self) -> Compare:
        left = self.expression()
        if self.token.text not in COMPARISONS:
            raise self.fail("a comparison (<=, <, >=, >, ==, !=)")
        op = self.advance().text
        return Compare(op, left, self.expression())

    def whole_condition(self):
        found = self.condition()
        if self.token.kind != "end":
            raise self.fail("'and', 'or' or the end of the filter")
        return found

    def size_expression(self) -> Expr:
        expr = self.expression()
        if self.token.kind != "end":
            raise self.fail("an operator or the end of the size expression")
        return expr


def parse_einsum_text(text: str, where: Location | None = None) -> ParsedEinsum:
    return Parser(text, where or Location()).einsum()


def parse_condition(text: str, where: Location | None = None) -> "Condition":
    """A filter: comparisons joined by and / or / not, with parentheses."""
    return Parser(text, where or Location()).whole_condition()


def parse_size(text: str, where: Location | None = None) -> Expr:
    return Parser(text, where or Location()).size_expression()
