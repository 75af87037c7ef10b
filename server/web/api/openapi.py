"""API operations: what each route takes and answers, its input checked against the models, and
the OpenAPI 3.1 document generated from the route table and the models' JSON Schemas.

A handler declares its ``Operation`` (input model and where it comes from, output model, the
refusals it may answer, who may call it); ``describe`` attaches it to the handler, and
``document`` walks a route table, so every described route is documented and nothing else is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from server.errors import DomainError
from server.i18n import _
from server.web.api.models import Error, error_text

InT = TypeVar("InT", bound=BaseModel)
Security = Literal["bearer", "coordinatorSession"]
InputIn = Literal["none", "query", "path", "body"]
REF_TEMPLATE = "#/components/schemas/{model}"
_ATTRIBUTE = "api_operation"


@dataclass(frozen=True)
class Operation(Generic[InT]):
    """One API operation: input and output models, refusals it may answer, who may call it."""

    operation_id: str
    summary: str
    input: type[InT]
    input_in: InputIn
    output: type[BaseModel]
    status: int = 200
    errors: Mapping[int, str] = field(default_factory=dict)
    security: Security = "bearer"
    scope: str | None = None
    description: str | None = None


def describe(handler: object, operation: Operation[Any]) -> None:
    """Attach its operation to a handler (read back by ``operation_of``)."""
    setattr(handler, _ATTRIBUTE, operation)


def operation_of(handler: object) -> Operation[Any] | None:
    """The operation a handler was described with, if any."""
    found = getattr(handler, _ATTRIBUTE, None)
    return found if isinstance(found, Operation) else None


# -- Input ----------------------------------------------------------------------------------------


def parse_json(model: type[InT], raw: bytes) -> InT:
    """A JSON body as `model` (strict: JSON types as the schema says), or a 400 DomainError."""
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise refusal(model, exc) from None


def parse_mapping(model: type[InT], data: Mapping[str, str]) -> InT:
    """Query or path parameters (text) as `model`, or a 400 DomainError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise refusal(model, exc) from None


def refusal(model: type[BaseModel], exc: ValidationError) -> DomainError:
    """A pydantic validation error as a DomainError naming the first wrong field, with a French
    message per wrong field."""
    texts: dict[str, tuple[str, str]] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = error["loc"]
        if error["type"] == "json_invalid":
            return DomainError("invalid_json", _("Le corps de la requête doit être du JSON."))
        if not loc and error["type"] in ("model_type", "model_attributes_type"):
            return DomainError("invalid_json", _("Le corps de la requête doit être un objet JSON."))
        name = str(loc[0]) if loc else ""
        texts.setdefault(
            name,
            error_text(model, name, error["type"])
            or (f"invalid_{name}", _("Valeur invalide pour %(f)s.") % {"f": name}),
        )
    # A refusal of the whole object (a rule across fields) is shown beside one of them.
    body_field: str | None = getattr(model, "body_field", None)
    fields = {(name or body_field or ""): text for name, text in texts.items()}
    name, (code, message) = next(iter(fields.items()))
    return DomainError(
        code, message, name or None, errors={f: m for f, (_c, m) in fields.items() if f}
    )


# -- Document -------------------------------------------------------------------------------------


def document(
    *,
    info: Mapping[str, Any],
    base_url: str,
    routes: Iterable[web.AbstractRouteDef],
    security_schemes: Mapping[str, Any],
    auth_errors: Mapping[Security, Mapping[int, str]],
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the described routes of a table; every schema comes from a
    model's ``model_json_schema`` and sits under ``components/schemas``."""
    operations: list[tuple[str, str, Operation[Any]]] = []
    for route in routes:
        if isinstance(route, web.RouteDef) and (operation := operation_of(route.handler)):
            path = web.DynamicResource(route.path).canonical  # drops the {id:pattern} patterns
            operations.append((path, route.method.lower(), operation))
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(Error, "serialization"): None}
    for _path, _method, operation in operations:
        if operation.input_in != "none":
            wanted[operation.input, "validation"] = None
        wanted[operation.output, "serialization"] = None
    refs, definitions = models_json_schema(list(wanted), ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = definitions.get("$defs", {})
    parameter_models: set[str] = set()
    paths: dict[str, dict[str, Any]] = {}
    for path, method, operation in operations:
        entry: dict[str, Any] = {"operationId": operation.operation_id}
        entry["summary"] = operation.summary + (
            f" (scope {operation.scope})" if operation.scope else ""
        )
        if operation.description:
            entry["description"] = operation.description
        if operation.security != "bearer":
            entry["security"] = [{operation.security: []}]
        input_ref = refs.get((operation.input, "validation"))
        if operation.input_in in ("query", "path") and input_ref is not None:
            name = input_ref["$ref"].rsplit("/", 1)[1]
            parameter_models.add(name)
            entry["parameters"] = _parameters(schemas[name], operation.input_in)
        elif operation.input_in == "body" and input_ref is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": input_ref}},
            }
        entry["responses"] = _responses(
            operation, refs, {**auth_errors[operation.security], **operation.errors}
        )
        paths.setdefault(path, {})[method] = entry
    for name in parameter_models:  # their fields became parameters
        del schemas[name]
    return {
        "openapi": "3.1.0",
        "info": dict(info),
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"securitySchemes": dict(security_schemes), "schemas": schemas},
    }


def _parameters(schema: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        parameter: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": {k: v for k, v in prop.items() if k not in ("title", "description")},
        }
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def _responses(
    operation: Operation[Any],
    refs: Mapping[tuple[Any, JsonSchemaMode], Any],
    errors: Mapping[int, str],
) -> dict[str, Any]:
    output_doc = (operation.output.__doc__ or operation.summary).strip().splitlines()[0]
    responses: dict[str, Any] = {
        str(operation.status): {
            "description": output_doc,
            "content": {"application/json": {"schema": refs[operation.output, "serialization"]}},
        }
    }
    error_schema = {"application/json": {"schema": refs[Error, "serialization"]}}
    for status, text in sorted(errors.items()):
        response: dict[str, Any] = {"description": text, "content": error_schema}
        if status == 429:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait",
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        responses[str(status)] = response
    return responses
