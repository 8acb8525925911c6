"""Mounting the console on the API app: its routers, its static files, and how it answers a
missing session (sign in) and a form without its CSRF token (403)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from api.console import auth_views, rollout_views, server_views, service_views, tenant_views
from api.console.web import CONSOLE, CsrfRefused, SignInRequired, render, sign_in_url

STATIC_PATH = f"{CONSOLE}/static"


def _is_fragment(request: Request) -> bool:
    return request.headers.get("x-console-fragment") == "1"


def install_console(app: FastAPI) -> None:
    """Serve the console under /console on `app`."""
    app.mount(
        STATIC_PATH,
        StaticFiles(directory=str(files("api.console") / "static")),
        name="console-static",
    )
    app.include_router(auth_views.router)
    app.include_router(tenant_views.router)
    app.include_router(rollout_views.router)
    app.include_router(service_views.router)
    app.include_router(server_views.router)

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        if _is_fragment(request):
            return Response(status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Response(status_code=303, headers={"Location": sign_in_url(target)})

    async def csrf_refused(request: Request, exc: Exception) -> Response:
        return render(
            request,
            "error.html",
            None,
            status_code=403,
            heading="Request refused",
            message=(
                "This form did not come from a page of this console (its CSRF token is missing "
                "or wrong). Nothing was changed. Reload the page and try again."
            ),
            back=request.url.path,
        )

    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(CsrfRefused, csrf_refused)
