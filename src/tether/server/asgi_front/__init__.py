"""The ASGI front: tether inside another Python web application (docs/embedding.md).

Public as :mod:`tether.asgi`. It imports no web framework: an ASGI server (uvicorn, hypercorn)
runs it, and FastAPI or Starlette mount it under a path of their own.
"""
