"""docs/rules.md is what a user reads about the rules: its permission table must be the policy
table (service/policy.py), and the README and docs must stand on their own in a clone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service import policy
from service.domain.model import Role
from service.policy import Action

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "rules.md"
RANK = list(Role)  # Read Only < Help Desk < Manager < Administrator < Administrator with Billing
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def roles_in(cell: str) -> frozenset[Role]:
    """A cell of the doc's table: "<role> and up", "<role> only", or roles separated by commas."""
    if cell.endswith(" and up"):
        return frozenset(RANK[RANK.index(Role(cell.removesuffix(" and up"))):])
    if cell.endswith(" only"):
        return frozenset({Role(cell.removesuffix(" only"))})
    return frozenset(Role(name) for name in cell.split(", "))


def documented_permissions() -> dict[str, tuple[frozenset[Role], frozenset[Role]]]:
    text = RULES.read_text()
    table = text[text.index("<!-- permissions:start -->"):text.index("<!-- permissions:end -->")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented: dict[str, tuple[frozenset[Role], frozenset[Role]]] = {}
    for row in rows:
        action, _where, on_plain, on_admin = (cell.strip() for cell in row.strip("|").split(" | "))
        name = action.strip("`")
        assert name not in documented, f"{name} is documented twice"
        documented[name] = (roles_in(on_plain), roles_in(on_admin))
    return documented


def test_the_doc_lists_every_action_of_the_policy_table() -> None:
    assert sorted(documented_permissions()) == sorted(action.value for action in Action)


@pytest.mark.parametrize("action", list(Action), ids=lambda action: action.value)
def test_each_row_of_the_doc_is_the_policy_table(action: Action) -> None:
    cell = policy.PERMISSIONS[action]
    assert documented_permissions()[action.value] == (cell.on_plain_user, cell.on_admin_role_user)


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_the_docs_point_only_inside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        resolved = (doc.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{target} leaves the repository"
        assert resolved.exists(), f"{target} does not exist"
