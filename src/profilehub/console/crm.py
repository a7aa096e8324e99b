"""CRM people and companies as the console lists them: the CRM dialect's own reads and paging."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from profilehub.crm import companies, people
from profilehub.errors import BadRequest

PAGE_SIZE = 25
MAX_SEARCH = 200
# As the CRM API's ``page`` (``le=1_000_000``): a larger number is no page and, past 64 bits, not
# even a number the database takes (it was a 500).
MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class Listing:
    items: list[dict[str, Any]]
    pagination: dict[str, Any]

    @property
    def past_the_end(self) -> int | None:
        """The last page when the page asked for is past it (an old link, a list that shrank)."""
        last = max(1, int(self.pagination["totalPages"]))
        return last if int(self.pagination["currentPage"]) > last else None


def _checked(page: int, search: str) -> tuple[int, str | None]:
    if page < 1:
        raise BadRequest("pages start at 1", field="page")
    if page > MAX_PAGE:
        raise BadRequest(f"pages go up to {MAX_PAGE} at most", field="page")
    if len(search) > MAX_SEARCH:
        raise BadRequest(f"at most {MAX_SEARCH} characters", field="q")
    return page, search.strip() or None


def people_page(conn: Connection, org_id: int, page: int, search: str) -> Listing:
    page, term = _checked(page, search)
    items, found = people.list_people(conn, org_id, page=page, count=PAGE_SIZE, search=term)
    return Listing(items, found.pagination())


def companies_page(conn: Connection, org_id: int, page: int, search: str) -> Listing:
    page, term = _checked(page, search)
    items, found = companies.list_companies(conn, org_id, page=page, count=PAGE_SIZE, search=term)
    return Listing(items, found.pagination())


def company_people_page(conn: Connection, org_id: int, company_id: str, page: int) -> Listing:
    """The people linked to the company by ``companyId``, wherever their email is: a search by the
    company's domain would miss them (and, for a company without a domain, list everyone)."""
    page, _ = _checked(page, "")
    items, found = people.list_company_people(conn, org_id, company_id, page=page, count=PAGE_SIZE)
    return Listing(items, found.pagination())


def canonical_id(record_id: str) -> str:
    """A record id as the CRM keeps it (a lowercase UUID): a person's ``companyId`` is read as any
    UUID, capitals or not, so the console's addresses are too. Anything else is left as it is,
    to be no company."""
    try:
        return str(uuid.UUID(record_id))
    except ValueError:
        return record_id


def person(conn: Connection, org_id: int, person_id: str) -> dict[str, Any]:
    return people.get_person(conn, org_id, person_id)


def company(conn: Connection, org_id: int, company_id: str) -> dict[str, Any]:
    return companies.get_company(conn, org_id, company_id)
