"""What every console page shares: the store, the sessions, the templates, the page frame."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from temporalio.client import Client

from touchpoint.config import Settings
from touchpoint.console.auth import Sessions, Visit
from touchpoint.console.views import environment
from touchpoint.dsl.schema import Playbook
from touchpoint.store.models import Deployment

SECURITY_HEADERS = {
    # No script may run on a console page, and nothing is loaded from anywhere but the console.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

NAV = (
    ("/console", "Overview"),
    ("/console/accounts", "Accounts"),
    ("/console/tasks", "Tasks"),
    ("/console/runs", "Runs"),
    ("/console/approvals", "Approvals"),
)


class Console:
    """The console of one API app: its store, Temporal client, sessions and templates."""

    def __init__(self, settings: Settings, client: Client, db: sessionmaker[Session]) -> None:
        self.settings = settings
        self.client = client
        self.db = db
        self.sessions = Sessions(settings)
        self.env = environment()
        self._playbooks: dict[tuple[str, str], Playbook] = {}

    def playbook(self, deployment: Deployment) -> Playbook:
        """The validated playbook of a deployed version (versions never change: kept by version)."""
        key = (deployment.name, deployment.version)
        found = self._playbooks.get(key)
        if found is None:
            found = self._playbooks[key] = Playbook.model_validate(deployment.content["playbook"])
        return found

    def enter(self, request: Request) -> tuple[Visit, bool] | RedirectResponse:
        """The visit a page is shown to, and whether its cookie is new; or the way to sign in."""
        visit = self.sessions.viewer(request)
        if visit is not None:
            return visit, False
        if self.sessions.required:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)
        return self.sessions.new(auth=True), True

    def page(
        self, request: Request, visit: Visit, template: str, *, status: int = 200, fresh: bool = False, csp: str | None = None, **context: Any
    ) -> HTMLResponse:
        """A page rendered in the console's frame (navigation, who is signed in, CSRF token);
        ``csp`` replaces the console's Content-Security-Policy for this page."""
        html = self.env.get_template(template).render(
            visit=visit,
            csrf=self.sessions.csrf(visit),
            nav=NAV,
            here=request.url.path,
            signed_in=self.sessions.required,
            **context,
        )
        headers = SECURITY_HEADERS if csp is None else {**SECURITY_HEADERS, "Content-Security-Policy": csp}
        response = HTMLResponse(html, status_code=status, headers=headers)
        if fresh:
            self.sessions.write(response, visit)
        return response

    def problem(self, request: Request, visit: Visit, status: int, title: str, message: str) -> HTMLResponse:
        """An error page with the reason and the way on."""
        return self.page(request, visit, "problem.html", status=status, title=title, message=message)


def see_other(url: str) -> RedirectResponse:
    """Where a form post goes next (303, so a reload does not post again)."""
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
