"""SCIM refusals raised while scim2-models parses a request are answered from adminlink's own
table: the package's classification of an error never sets our status or an unknown scimType."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from scim2_models import (
    Context,
    InvalidFilterException,
    NotImplementedException,
    SCIMException,
    UniquenessException,
    User,
)

from webhooks.scim import errors


def body_of(response: object) -> dict[str, object]:
    return json.loads(response.text)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("exc", "scim_type"), [
    (InvalidFilterException(detail="bad filter"), "invalidFilter"),
    # The package says 409 and 501 for these; a request it could not take is our 400.
    (UniquenessException(detail="taken"), "invalidValue"),
    (NotImplementedException(detail="no"), "invalidValue"),
])
def test_a_package_exception_is_a_400_with_a_scim_type_of_our_table(exc: SCIMException, scim_type: str) -> None:
    response = errors.from_scim_exception(exc)
    assert response.status == 400
    assert body_of(response) == {"schemas": [errors.ERROR_SCHEMA], "status": "400", "scimType": scim_type,
                                 "detail": exc.to_error().detail}


def test_a_model_validation_error_is_a_400_invalid_value() -> None:
    with pytest.raises(ValidationError) as caught:
        User.model_validate({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": 5},
                            scim_ctx=Context.RESOURCE_CREATION_REQUEST)
    response = errors.from_validation_error(caught.value)
    body = body_of(response)
    assert response.status == 400
    assert (body["status"], body["scimType"]) == ("400", "invalidValue")
    assert body["schemas"] == [errors.ERROR_SCHEMA] and body["detail"]


def test_an_error_body_without_scim_type_leaves_it_out() -> None:
    assert body_of(errors.error_response(404, "no such resource")) == {
        "schemas": [errors.ERROR_SCHEMA], "status": "404", "detail": "no such resource"}
