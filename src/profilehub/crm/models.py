"""Request and response shapes of the CRM dialect, as its vendor documents them (for OpenAPI).

Values are checked by the core, which names the field in its errors; these models pin the
top-level shape of requests and describe every answer.
"""

from __future__ import annotations

from typing import Any, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from profilehub.errors import Unprocessable, shape_errors

VENDOR_PERSON_EXAMPLE: dict[str, Any] = {
    "firstName": "Jane",
    "lastName": "Doe",
    "salutation": "<string>",
    "emails": ["jane.doe@acme.com"],
    "jobTitle": "<string>",
    "description": "<string>",
    "phoneNumber": "<string>",
    "primaryLocation": "<string>",
    "avatarUrl": "<string>",
    "companyId": "<string>",
    "socials": {
        "linkedin": "<string>",
        "twitter": "<string>",
        "facebook": "<string>",
        "instagram": "<string>",
    },
}


class Socials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    linkedin: str | None = None
    twitter: str | None = None
    facebook: str | None = None
    instagram: str | None = None


class PersonWrite(BaseModel):
    """A person body. Custom attributes go in `customAttributes` or at the top level by key."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                VENDOR_PERSON_EXAMPLE,
                {
                    "firstName": "Jane",
                    "lastName": "Doe",
                    "emails": ["jane.doe@acme.com"],
                    "jobTitle": "Head of Product",
                    "primaryLocation": "Berlin, Germany",
                    "socials": {"linkedin": "https://linkedin.com/in/janedoe"},
                },
            ]
        },
    )

    firstName: str | None = Field(default=None, description="Required if lastName is not provided.")
    lastName: str | None = Field(default=None, description="Required if firstName is not provided.")
    salutation: str | None = None
    emails: list[str] | None = Field(
        default=None, description="The first is the primary email. An email belongs to one person per org."
    )
    jobTitle: str | None = None
    description: str | None = None
    phoneNumber: str | None = Field(default=None, description="International format; stored as E.164.")
    primaryLocation: str | None = None
    avatarUrl: str | None = None
    companyId: str | None = Field(default=None, description="Id of a company of this org.")
    socials: Socials | None = None
    customAttributes: dict[str, Any] | None = Field(
        default=None, description="Values of the custom attributes of people, by key."
    )


@with_config(ConfigDict(extra="forbid"))
class _SocialsFields(TypedDict, total=False):
    linkedin: str | None
    twitter: str | None
    facebook: str | None
    instagram: str | None


@with_config(ConfigDict(extra="allow"))
class _PersonFields(TypedDict, total=False):
    """``PersonWrite``'s fields as a dict (tests/test_crm_fast_upsert.py keeps them the same)."""

    firstName: str | None
    lastName: str | None
    salutation: str | None
    emails: list[str] | None
    jobTitle: str | None
    description: str | None
    phoneNumber: str | None
    primaryLocation: str | None
    avatarUrl: str | None
    companyId: str | None
    socials: _SocialsFields | None
    customAttributes: dict[str, Any] | None


_PERSON_FIELDS = TypeAdapter(_PersonFields)


def read_person_json(body: bytes) -> dict[str, Any]:
    """``PersonWrite.model_validate_json(body).model_dump(exclude_unset=True)``: the same dict
    (the same fields in the same order) or a ``ValidationError``, read straight into a dict by
    pydantic's JSON parser instead of made into the model and dumped (the bench's body: 12 -> 2 µs
    at load 10). The fast route's (``crm/fast.py``); its errors are the route's to answer."""
    return cast(dict[str, Any], _PERSON_FIELDS.validate_json(body))


def parse_person(raw: Any) -> dict[str, Any]:
    """The one reading of a person body's shape, for every entry point (``PUT``, ``POST`` and
    ``PATCH /people``, each record of ``/people/_bulk``, ``profilehub import people``): the body's
    fields as given (those left out stay out), or an ``Unprocessable`` naming each field of the
    wrong JSON type, as the dialect answers shape errors. The rules on the values (a name, valid
    emails, a company of the org, custom attributes) are the core's (``crm.people.read_person``).
    """
    if not isinstance(raw, dict):
        raise Unprocessable("must be a person body (a JSON object)", field="body")
    try:
        person = PersonWrite.model_validate(raw)
    except ValidationError as exc:
        errors = shape_errors(exc.errors(), PersonWrite.model_fields)
        first = next(iter(errors), "body")
        raise Unprocessable(
            "; ".join(f"{f}: {m}" for f, m in errors.items()), field=first, errors=errors
        ) from exc
    return person.model_dump(exclude_unset=True)


class CompanyRef(BaseModel):
    id: str
    name: str | None
    domain: str | None


class SocialsView(BaseModel):
    linkedin: str | None
    twitter: str | None
    facebook: str | None
    instagram: str | None


class Person(BaseModel):
    id: str
    firstName: str | None
    lastName: str | None
    salutation: str | None
    emails: list[str]
    jobTitle: str | None
    description: str | None
    phoneNumber: str | None
    primaryLocation: str | None
    avatarUrl: str | None
    company: CompanyRef | None
    socials: SocialsView
    customAttributes: dict[str, Any]
    createdAt: str = Field(description="ISO 8601, UTC (+00:00)")
    updatedAt: str = Field(description="ISO 8601, UTC (+00:00)")
    ucid: str | None = Field(
        description="The CDP profile the person is linked to in the org's home region; null when "
        "the person has no email or phone number, or its identifiers belong to another person's profile"
    )


class PersonAnswer(BaseModel):
    success: bool = True
    status: int = Field(description="201 created, 200 updated or read")
    person: Person


class Pagination(BaseModel):
    total: int = Field(description="Records matching, over all pages")
    count: int = Field(description="Items in this page")
    totalPages: int
    previousPage: str | None = Field(description="Path of the previous page; null on the first")
    currentPage: int
    nextPage: str | None = Field(description="Path of the next page; null on the last")


class PeoplePage(BaseModel):
    success: bool = True
    status: int = 200
    collection: list[Person]
    pagination: Pagination


class BulkPeopleWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Items are not validated here, so that one bad record is reported at its index while the
    # others are written; the schema still documents them as person bodies.
    people: list[Any] = Field(
        max_length=1000,
        description="Up to 1,000 person bodies (each as for PUT /v2/crm/people), written in order.",
        json_schema_extra={"items": {"$ref": "#/components/schemas/PersonWrite"}},
    )

    @model_validator(mode="before")
    @classmethod
    def _not_a_bare_array(cls, data: Any) -> Any:
        # The CDP dialect's _bulk takes a bare array; this one, as its vendor, an object.
        if isinstance(data, list):
            raise PydanticCustomError(
                "bare_array",
                'send {"people": [...]}: the records go in an object under "people", not a bare array',
            )
        return data


class BulkItem(BaseModel):
    index: int = Field(description="Position of the record in the request")
    success: bool
    status: int = Field(description="201 created, 200 updated, or the record's error status")
    person: Person | None = None
    matches: int | None = Field(default=None, description="Records that matched; the oldest was updated")
    message: str | None = None
    errors: dict[str, str] | None = None


class BulkAnswer(BaseModel):
    success: bool = Field(description="true when every record was written")
    status: int = 200
    results: list[BulkItem]


class CompanyWrite(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"name": "Acme Corp", "domain": "acme.com"}]},
    )

    name: str | None = Field(default=None, description="Required when a company is created.")
    domain: str | None = Field(
        default=None, description="Stored lowercase without scheme or www.; one company per domain."
    )
    description: str | None = None
    phoneNumber: str | None = None
    primaryLocation: str | None = None
    logoUrl: str | None = None
    socials: Socials | None = None
    customAttributes: dict[str, Any] | None = None


class Company(BaseModel):
    id: str
    name: str | None
    domain: str | None
    description: str | None
    phoneNumber: str | None
    primaryLocation: str | None
    logoUrl: str | None
    socials: SocialsView
    customAttributes: dict[str, Any]
    createdAt: str
    updatedAt: str


class CompanyAnswer(BaseModel):
    success: bool = True
    status: int
    company: Company


class CompaniesPage(BaseModel):
    success: bool = True
    status: int = 200
    collection: list[Company]
    pagination: Pagination


# Strict: a flag sent as "yes" or 1, or an option id sent as true, is a 422 naming the field, as a
# checkbox value of a record is; lax parsing read "no" as false and "yes" as a permanent isUnique.
class ObjectCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"slug": "products", "singularName": "Product", "pluralName": "Products"}]
        },
    )

    slug: str = Field(
        description="3-60 characters: a-z, 0-9, '-' and '_'; immutable. people, companies reserved."
    )
    singularName: str = Field(max_length=255)
    pluralName: str = Field(max_length=255)
    isActive: bool = True


class AttributeOption(BaseModel):
    model_config = ConfigDict(strict=True)

    id: int | str | None = Field(default=None, description="Assigned when left out")
    value: str
    color: str | None = None


class AttributeCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"type": "text", "label": "SKU", "isUnique": True},
                {
                    "type": "select",
                    "label": "Customer Status",
                    "options": [{"value": "Lead"}, {"value": "Active"}],
                },
            ]
        },
    )

    type: str = Field(
        description="text, number, phone_number, date, datetime, checkbox, select, multiselect, rating, "
        "relation, status, user, currency; immutable"
    )
    label: str = Field(description="The key is its snake_case, with _2, _3... on collision")
    isRequired: bool = False
    isUnique: bool = Field(default=False, description="Only text, phone_number and number")
    isArchived: bool = False
    validation: list[str] | None = Field(default=None, description='text only: "email" and/or "url"')
    options: list[AttributeOption] | None = Field(default=None, description="select, multiselect, status")
    relationType: str | None = Field(
        default=None, description="one_to_one, one_to_many, many_to_one, many_to_many"
    )
    relatedObjectSlug: str | None = Field(default=None, description="relation: the object linked to")
    relatedObjectLabel: str | None = None
    currency: str | None = Field(default=None, description="currency: ISO 4217 code, e.g. EUR")
    currencyDisplay: str | None = Field(default=None, description="code, name or symbol")
    currencyDecimal: bool | None = None
    currencyGrouping: bool | None = None


class AttributeUpdate(BaseModel):
    model_config = ConfigDict(
        extra="allow", strict=True, json_schema_extra={"examples": [{"label": "Status", "isRequired": True}]}
    )

    label: str | None = None
    isRequired: bool | None = None
    isArchived: bool | None = None
    options: list[AttributeOption] | None = Field(default=None, description="Replaces the list")
    relatedObjectLabel: str | None = None
    currencyDisplay: str | None = None
    currencyDecimal: bool | None = None
    currencyGrouping: bool | None = None


class AttributeDef(BaseModel):
    model_config = ConfigDict(extra="allow")

    key: str
    label: str
    type: str
    isRequired: bool
    isStandard: bool
    isUnique: bool
    isArchived: bool
    options: list[AttributeOption] | None = None
    createdAt: str | None = None
    updatedAt: str | None = None


class AttributeAnswer(BaseModel):
    success: bool = True
    status: int
    attribute: AttributeDef


class ObjectDef(BaseModel):
    slug: str
    singularName: str
    pluralName: str
    isStandard: bool
    isActive: bool
    attributes: list[AttributeDef]
    createdAt: str | None
    updatedAt: str | None


class ObjectAnswer(BaseModel):
    success: bool = True
    status: int
    object: ObjectDef


class ObjectsAnswer(BaseModel):
    success: bool = True
    status: int = 200
    objects: list[ObjectDef]


class RecordView(BaseModel):
    id: str
    objectSlug: str
    attributes: dict[str, Any] = Field(description="Every attribute of the object by key, null where unset")
    createdAt: str
    updatedAt: str


class RecordAnswer(BaseModel):
    success: bool = True
    status: int
    record: RecordView


class RecordsPage(BaseModel):
    success: bool = True
    status: int = 200
    collection: list[RecordView]
    pagination: Pagination


class DeletedAnswer(BaseModel):
    success: bool = True
    status: int = 200
