"""A FastAPI application with its own login that embeds tether at ``/term``.

Run it::

    pip install fastapi 'uvicorn[standard]'
    TETHER_PROJECTS=default=$HOME uvicorn examples.fastapi_app:app

then open http://127.0.0.1:8000/ and log in with a demo account:

    alice / wonderland   (an operator)
    bob   / builder      (project ``default`` only)

The application keeps its own session cookie (``demo_session``, signed with an HMAC); tether
never sees a password. Its identity hook, :func:`identify`, maps the cookie's user to a tether
owner, so the page at ``/term/`` opens terminals with no second login. Programs log in with
``POST /login.json`` (``{"user": ..., "password": ...}``) and present the returned token as
``Authorization: Bearer …`` (``tether.client.connect(url, token=...)``).

tether's settings come from ``TETHER_*`` variables (``TETHER_PROJECTS``, ``TETHER_SHELL``, …);
``DEMO_SECRET`` fixes the cookie key (by default a random one per process).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tether.asgi import Identity, Scope, cookies_of, create_app, headers_of
from tether.server.config import build_settings, from_environment

COOKIE = "demo_session"
SECRET = os.environ.get("DEMO_SECRET", "").encode() or os.urandom(32)
USERS = {"alice": "wonderland", "bob": "builder"}
OWNERS = {
    "alice": Identity(owner="alice", operator=True),
    "bob": Identity(owner="bob", projects=frozenset({"default"})),
}


def sign(user: str) -> str:
    mac = hmac.new(SECRET, user.encode(), hashlib.sha256).hexdigest()
    return f"{user}.{mac}"


def user_of(token: str | None) -> str | None:
    """The user a session token names, if its signature holds."""
    user, _, mac = (token or "").rpartition(".")
    return user if user in USERS and hmac.compare_digest(sign(user), f"{user}.{mac}") else None


def identify(scope: Scope) -> Identity | None:
    """tether's identity hook: this application's login, cookie or bearer token, to an owner."""
    headers = headers_of(scope)
    scheme, _, bearer = headers.get("authorization", "").partition(" ")
    token = bearer if scheme.lower() == "bearer" else cookies_of(headers).get(COOKIE)
    user = user_of(token)
    return OWNERS[user] if user is not None else None


settings = build_settings(
    {"auth": "none", "projects": [f"default={Path.cwd()}"], "log_file": "-"},
    from_environment(os.environ),
)
terminals = create_app(settings, identify=identify)
# Starlette does not forward lifespan events to mounted applications: start and stop tether
# with this application's own lifespan.
app = FastAPI(lifespan=terminals.lifespan)
app.mount("/term", terminals)

_LOGIN = """<!doctype html><title>demo login</title>
<form method="post" action="/login"><p>{message}</p>
<label>user <input name="user" autocomplete="username"></label>
<label>password <input name="password" type="password"></label>
<button>log in</button></form>"""


@app.get("/", response_class=HTMLResponse)
def home(request: Request) -> str:
    user = user_of(request.cookies.get(COOKIE))
    if user is None:
        return _LOGIN.format(message="Log in to open your terminals.")
    return f'<p>Hello {user}. <a href="/term/">Your terminals</a> · <a href="/logout">log out</a>'


@app.post("/login")
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode())
    user, password = form.get("user", [""])[0], form.get("password", [""])[0]
    if not hmac.compare_digest(USERS.get(user, "\0"), password):
        return HTMLResponse(_LOGIN.format(message="Wrong user or password."), status_code=401)
    response = RedirectResponse("/term/", status_code=303)
    response.set_cookie(COOKIE, sign(user), httponly=True, samesite="strict")
    return response


@app.post("/login.json")
async def login_json(request: Request) -> Response:
    try:
        body = json.loads(await request.body())
        user, password = str(body["user"]), str(body["password"])
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "expected {user, password}"}, status_code=400)
    if not hmac.compare_digest(USERS.get(user, "\0"), password):
        return JSONResponse({"error": "wrong user or password"}, status_code=401)
    return JSONResponse({"token": sign(user)})


@app.get("/logout")
def logout() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE)
    return response
