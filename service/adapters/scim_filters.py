"""SCIM filters (RFC 7644 §3.4.2.2) translated to SQL.

scim2-models parses the filter; this module walks its tree into one SQLAlchemy expression over
the columns an attribute map names, so the database does the filtering and the indexes serve
it. Nothing is evaluated in memory. An attribute without a mapping is refused, never dropped:
``FilterRefused`` says why, and the SCIM layer answers it as ``invalidFilter``. Every comparison
is two-valued (an absent attribute matches nothing but ``ne`` and ``not``), so ``not`` means
what it says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from scim2_models import ScimFilter
from scim2_models.path import (
    AttrPath,
    CompareOperator,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
)
from sqlalchemy.sql.elements import ColumnElement

from service.domain.text import unstorable_text

Clause = ColumnElement[bool]
MAX_FILTER_LENGTH = 4000
ORDERING = {CompareOperator.gt, CompareOperator.ge, CompareOperator.lt, CompareOperator.le}
SUBSTRING = {CompareOperator.co, CompareOperator.sw, CompareOperator.ew}


class FilterRefused(Exception):
    """A filter adminlink cannot apply: it does not parse, or names what cannot be filtered on."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def invalid(detail: str) -> FilterRefused:
    return FilterRefused(detail)


@dataclass(frozen=True)
class Scalar:
    """One filterable SCIM attribute and the SQL that holds its value."""

    column: ColumnElement[Any]
    kind: str = "string"  # string | boolean | datetime
    case_exact: bool = False
    nullable: bool = True
    present: Clause | None = None  # when the attribute counts as present, if not "IS NOT NULL"

    def presence(self) -> Clause:
        if self.present is not None:
            return self.present
        return self.column.is_not(None) if self.nullable else sa.true()

    def sort_key(self) -> ColumnElement[Any]:
        """A never-null key, so paging by key is exact."""
        if self.kind != "string":
            return self.column
        column = self.column if self.case_exact else sa.func.lower(self.column)
        return sa.func.coalesce(column, "") if self.nullable else column


@dataclass(frozen=True)
class MultiValued:
    """A multi-valued attribute kept in rows of another table: a test on it is an EXISTS."""

    exists: Callable[[Clause], Clause]
    sub_attributes: dict[str, Scalar]
    default: str = "value"


@dataclass(frozen=True)
class AttributeMap:
    """The filterable attributes of one resource type, by lower-case path ("name.givenname")."""

    schema: str
    scalars: dict[str, Scalar]
    multi_valued: dict[str, MultiValued] = field(default_factory=dict)
    # Multi-valued attributes adminlink holds one value of (a user's email): a test on them is a
    # test on that value.
    single_entry: frozenset[str] = frozenset()


def parse(text: str) -> FilterNode:
    if len(text) > MAX_FILTER_LENGTH:
        raise invalid(f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    if "\x00" in text:
        raise invalid("the filter contains a NUL character")
    try:
        tree = ScimFilter(text).ast
    except (ValidationError, ValueError) as exc:
        raise invalid(f"the filter cannot be parsed: {exc}") from exc
    # A string's escapes are decoded by the parser: "\u0000" or "\ud800" in the text becomes a NUL or
    # a lone surrogate only now, and neither can be sent to the database.
    if any(unstorable_text(value) for value in _literals(tree)):
        raise invalid("a string in the filter contains a NUL character or an unpaired surrogate")
    return tree


def _literals(node: FilterNode) -> Iterator[Any]:
    """The values every comparison of the filter compares with."""
    if isinstance(node, LogicalExpr):
        for term in node.terms:
            yield from _literals(term)
    elif isinstance(node, Not):
        yield from _literals(node.expr)
    elif isinstance(node, ValuePath):
        yield from _literals(node.val_filter)
    elif isinstance(node, Comparison):
        yield node.value


class Translator:
    def __init__(self, attributes: AttributeMap, dialect: str) -> None:
        self.attributes = attributes
        self.dialect = dialect

    # --- names -------------------------------------------------------------------------------

    def _key(self, path: AttrPath, prefix: str = "") -> str:
        if path.uri is not None and path.uri.lower() != self.attributes.schema.lower():
            raise invalid(f"{path} is not an attribute adminlink can filter on")
        key = path.attr.lower() if not path.sub_attr else f"{path.attr}.{path.sub_attr}".lower()
        return f"{prefix}{key}"

    def scalar(self, path: AttrPath, prefix: str = "") -> Scalar:
        key = self._key(path, prefix)
        if key in self.attributes.single_entry:
            key = f"{key}.value"
        found = self.attributes.scalars.get(key)
        if found is None:
            raise invalid(f"{path} is not an attribute adminlink can filter on")
        return found

    # --- the tree ----------------------------------------------------------------------------

    def where(self, node: FilterNode, prefix: str = "") -> Clause:
        if isinstance(node, LogicalExpr):
            terms = [self.where(term, prefix) for term in node.terms]
            return sa.and_(*terms) if node.op == LogicalOperator.and_ else sa.or_(*terms)
        if isinstance(node, Not):
            return sa.not_(self.where(node.expr, prefix))
        if isinstance(node, ValuePath):
            return self._value_path(node, prefix)
        if isinstance(node, Present):
            multi = self._multi(node.attr_path, prefix)
            if multi is not None:
                return multi[0].exists(sa.true() if multi[1] is None else multi[1].presence())
            return self.scalar(node.attr_path, prefix).presence()
        if isinstance(node, Comparison):
            multi = self._multi(node.attr_path, prefix)
            if multi is not None:
                attribute, sub = multi
                target = sub or attribute.sub_attributes[attribute.default]
                return attribute.exists(self.compare(target, node.op, node.value))
            return self.compare(self.scalar(node.attr_path, prefix), node.op, node.value)
        raise invalid(f"unsupported filter expression: {node}")

    def _multi(self, path: AttrPath, prefix: str) -> tuple[MultiValued, Scalar | None] | None:
        if prefix:
            return None
        attribute = self.attributes.multi_valued.get(path.attr.lower())
        if attribute is None or (path.uri is not None and path.uri.lower() != self.attributes.schema.lower()):
            return None
        if path.sub_attr is None:
            return attribute, None
        sub = attribute.sub_attributes.get(path.sub_attr.lower())
        if sub is None:
            raise invalid(f"{path} is not an attribute adminlink can filter on")
        return attribute, sub

    def _value_path(self, node: ValuePath, prefix: str) -> Clause:
        if prefix:
            raise invalid("value paths cannot be nested")
        name = self._key(node.attr_path)
        if node.attr_path.sub_attr is not None:
            raise invalid(f"{node.attr_path}: a value path selects values of a multi-valued attribute")
        if name in self.attributes.single_entry:
            return self.where(node.val_filter, prefix=f"{name}.")
        attribute = self.attributes.multi_valued.get(name)
        if attribute is None:
            raise invalid(f"{node.attr_path} is not a multi-valued attribute adminlink can filter on")
        inner = _SubTranslator(attribute, self.dialect)
        return attribute.exists(inner.where(node.val_filter))

    # --- comparisons -------------------------------------------------------------------------

    def compare(self, attribute: Scalar, op: CompareOperator, value: Any) -> Clause:
        if value is None:
            if op == CompareOperator.eq:
                return sa.not_(attribute.presence())
            if op == CompareOperator.ne:
                return attribute.presence()
            raise invalid(f"{op.value} cannot compare with null")
        if attribute.kind == "boolean":
            return self._boolean(attribute, op, value)
        if attribute.kind == "datetime":
            return self._guard(attribute, self._datetime(attribute, op, value), op)
        return self._guard(attribute, self._string(attribute, op, value), op)

    def _guard(self, attribute: Scalar, test: Clause, op: CompareOperator) -> Clause:
        """An absent value matches no comparison, and ``ne`` matches it: never SQL's NULL."""
        if not attribute.nullable:
            return test
        if op == CompareOperator.ne:
            return sa.or_(attribute.column.is_(None), test)
        return sa.and_(attribute.column.is_not(None), test)

    def _boolean(self, attribute: Scalar, op: CompareOperator, value: Any) -> Clause:
        if not isinstance(value, bool):
            raise invalid("a boolean attribute compares with true or false")
        if op not in (CompareOperator.eq, CompareOperator.ne):
            raise invalid(f"{op.value} does not apply to a boolean attribute")
        holds = attribute.column if value else sa.not_(attribute.column)
        return holds if op == CompareOperator.eq else sa.not_(holds)

    def _datetime(self, attribute: Scalar, op: CompareOperator, value: Any) -> Clause:
        if op in SUBSTRING:
            raise invalid(f"{op.value} does not apply to a dateTime attribute")
        moment = _datetime_value(value)
        column = attribute.column
        bound = sa.bindparam(None, moment, type_=column.type)
        return _ordered(column, op, bound)

    def _string(self, attribute: Scalar, op: CompareOperator, value: Any) -> Clause:
        if not isinstance(value, str):
            raise invalid("a string attribute compares with a string")
        column = attribute.column
        if not attribute.case_exact:
            column, value = sa.func.lower(column), value.lower()
        if op in SUBSTRING:
            if attribute.case_exact:
                return self._exact_substring(column, op, value)
            if op == CompareOperator.co:
                return column.contains(value, autoescape=True)
            if op == CompareOperator.sw:
                return column.startswith(value, autoescape=True)
            return column.endswith(value, autoescape=True)
        return _ordered(column, op, sa.literal(value))

    def _exact_substring(self, column: ColumnElement[Any], op: CompareOperator, value: str) -> Clause:
        """Case-exact co / sw / ew without LIKE, which SQLite matches case-insensitively."""
        size = len(value)
        if op == CompareOperator.sw:
            return sa.func.substr(column, 1, size) == value
        if op == CompareOperator.ew:
            return sa.and_(sa.func.length(column) >= size,
                           sa.func.substr(column, sa.func.length(column) - size + 1) == value)
        position = sa.func.instr(column, value) if self.dialect == "sqlite" else sa.func.strpos(column, value)
        return position > 0


class _SubTranslator(Translator):
    """Inside a value path: names are the sub-attributes of one multi-valued attribute."""

    def __init__(self, attribute: MultiValued, dialect: str) -> None:
        super().__init__(AttributeMap(schema="", scalars=attribute.sub_attributes), dialect)

    def _key(self, path: AttrPath, prefix: str = "") -> str:
        if path.uri is not None or path.sub_attr is not None:
            raise invalid(f"{path} is not a sub-attribute adminlink can filter on")
        return path.attr.lower()

    def _value_path(self, node: ValuePath, prefix: str) -> Clause:
        raise invalid("value paths cannot be nested")


def _ordered(column: ColumnElement[Any], op: CompareOperator, value: Any) -> Clause:
    comparisons: dict[CompareOperator, Callable[[], Clause]] = {
        CompareOperator.eq: lambda: column == value,
        CompareOperator.ne: lambda: column != value,
        CompareOperator.gt: lambda: column > value,
        CompareOperator.ge: lambda: column >= value,
        CompareOperator.lt: lambda: column < value,
        CompareOperator.le: lambda: column <= value,
    }
    if op not in comparisons:
        raise invalid(f"{op.value} does not apply here")
    return comparisons[op]()


def _datetime_value(value: Any) -> datetime:
    if not isinstance(value, str):
        raise invalid("a dateTime attribute compares with an xsd:dateTime string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise invalid(f"{value!r} is not an xsd:dateTime") from exc


def translate(text: str, attributes: AttributeMap, dialect: str) -> Clause:
    return Translator(attributes, dialect).where(parse(text))
