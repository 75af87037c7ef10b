"""The web layer: the aiohttp application, its routes, middlewares, request helpers and views."""
