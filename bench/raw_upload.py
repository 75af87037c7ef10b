"""Baseline for the vault's uploads: the smallest aiohttp server that streams a multipart
``blob`` part to a file (temporary file in the same folder, fsync, rename) and streams it back.

No authentication, no validation, no quota, no database, no rate limit: what is left of
``POST /coffre/api/documents`` and ``GET …/blob`` when everything the vault adds is taken away.
Run as its own process: ``python -m bench.raw_upload --port 9000``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

from aiohttp import BodyPartReader, web

from bench.baseline import healthz, serve

CHUNK = 64 * 1024
ROOT_KEY: web.AppKey[Path] = web.AppKey("root", Path)


async def upload(request: web.Request) -> web.Response:
    """Stream the ``blob`` part of a multipart body to a file; its name and size."""
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name != "blob":
            await part.release()
            continue
        name = secrets.token_hex(16)
        final = request.app[ROOT_KEY] / name
        temp = final.with_suffix(".tmp")
        size = 0
        with temp.open("xb") as handle:
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        temp.rename(final)
        return web.json_response({"name": name, "size": size}, status=201)
    raise web.HTTPBadRequest(text="no blob part")


async def blob(request: web.Request) -> web.StreamResponse:
    """A stored file, streamed."""
    path = request.app[ROOT_KEY] / request.match_info["name"]
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = path.stat().st_size
    await response.prepare(request)
    with path.open("rb") as handle:
        while chunk := handle.read(256 * 1024):
            await response.write(chunk)
    await response.write_eof()
    return response


def create_app() -> web.Application:
    """The baseline upload application (files under a fresh temporary folder)."""
    app = web.Application()
    app[ROOT_KEY] = Path(tempfile.mkdtemp(prefix="vp-raw-upload-"))

    async def remove_files(app: web.Application) -> None:
        shutil.rmtree(app[ROOT_KEY], ignore_errors=True)

    app.on_cleanup.append(remove_files)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/upload", upload)
    app.router.add_get("/blob/{name:[0-9a-f]{32}}", blob)
    return app


def main() -> None:
    """``python -m bench.raw_upload --port N``."""
    serve(create_app, __doc__)


if __name__ == "__main__":
    main()
