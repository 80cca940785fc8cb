"""List requests (GET on a collection, POST /.search) and ListResponse bodies."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from scim2_models import Context, ListResponse, ResponseParameters, SearchRequest

from service.adapters.scim_directory import ListQuery
from webhooks.scim.errors import ScimError
from webhooks.scim.schema import DEFAULT_PAGE_SIZE, MAX_RESULTS

SEARCH_FIELDS = ("filter", "startIndex", "count", "sortBy", "sortOrder", "attributes", "excludedAttributes")

# A start past any directory answers an empty page; beyond 2**31 a database offset overflows.
MAX_START_INDEX = 2**31 - 1


def search_request(params: Mapping[str, Any]) -> tuple[ListQuery, ResponseParameters]:
    schemas = params.get("schemas", [])
    # Providers may leave schemas out, and a few name another message's URN: both are served. A
    # value that is not a list of URIs is malformed, not something to ignore.
    if not isinstance(schemas, list) or not all(isinstance(uri, str) for uri in schemas):
        raise ScimError(400, "schemas must be a list of schema URIs", "invalidSyntax")
    known = {k: v for k, v in params.items() if k in SEARCH_FIELDS}
    request: SearchRequest = SearchRequest.model_validate(known, scim_ctx=Context.SEARCH_REQUEST)
    if request.attributes and request.excluded_attributes:
        raise ScimError(400, "attributes and excludedAttributes cannot be given together", "invalidValue")
    count = DEFAULT_PAGE_SIZE if request.count is None else min(max(request.count, 0), MAX_RESULTS)
    query = ListQuery(
        filter=str(request.filter) if request.filter else None,
        start_index=min(max(request.start_index or 1, 1), MAX_START_INDEX),
        count=count,
        sort_by=str(request.sort_by) if request.sort_by else None,
        descending=request.sort_order is not None and request.sort_order.value == "descending",
    )
    parameters = ResponseParameters(attributes=request.attributes, excluded_attributes=request.excluded_attributes)
    return query, parameters


def response_parameters(params: Mapping[str, Any]) -> ResponseParameters:
    known = {k: v for k, v in params.items() if k in ("attributes", "excludedAttributes")}
    parameters: ResponseParameters = ResponseParameters.model_validate(known)
    if parameters.attributes and parameters.excluded_attributes:
        raise ScimError(400, "attributes and excludedAttributes cannot be given together", "invalidValue")
    return parameters


@cache
def _list_response(model: Any) -> Any:
    """ListResponse parametrized once per resource model (building the class is costly)."""
    return ListResponse[model]


def list_body(model: Any, total: int, query: ListQuery, resources: list[Any],
              parameters: ResponseParameters) -> dict[str, Any]:
    listed = _list_response(model)(
        total_results=total, start_index=query.start_index, items_per_page=len(resources),
        resources=resources or None,
    )
    body: dict[str, Any] = listed.model_dump(scim_ctx=Context.SEARCH_RESPONSE, response_parameters=parameters)
    # Integers, always present: some providers read these fields without checking for them.
    body["totalResults"], body["startIndex"], body["itemsPerPage"] = total, query.start_index, len(resources)
    body.setdefault("Resources", [])
    return body
