"""The partner API's contract: pydantic models (``models``) and the OpenAPI document generated
from them (``openapi``). The handlers live in ``server/web/views/api_v1.py``; they validate
their input with the same models, so the document states what the server enforces."""
