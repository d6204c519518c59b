"""The console's forms (POST) and its login: sign in and out, pause/resume/cancel a run,
complete a task. Every post carries the session's CSRF token (`auth.Sessions.form`) and answers
with a 303 to the page it came from, so a reload never posts twice.

Run controls and task completion take the same paths as the CLI and the JSON API: a `control`
signal to the run's account workflow (`ingest.control_run`), and `repo.complete_task` plus a
`task.completed` event (`ingest.send_event`).
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import quote

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from temporalio.service import RPCError

from touchpoint.console.auth import FormError, safe_next
from touchpoint.console.core import Console, see_other
from touchpoint.dsl.runtime import EventIn
from touchpoint.ingest import control_run, send_event
from touchpoint.store import repo
from workflows.messages import RunControl

ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ACTIONS = ("pause", "resume", "cancel")


def add_actions(router: APIRouter, console: Console) -> None:
    """Register the login page and the form posts on the console's router."""
    sessions = console.sessions

    @router.get("/login")
    def login_page(request: Request, next: str = "/console") -> Response:
        visit = sessions.read(request)
        fresh = visit is None
        if visit is None:
            visit = sessions.new(auth=not sessions.required)
        return console.page(request, visit, "login.html", fresh=fresh, next=safe_next(next), error="", by=visit.by or "")

    @router.post("/login")
    async def login(request: Request) -> Response:
        visit = sessions.read(request)
        try:
            fields = await sessions.form(request, visit)
        except FormError as exc:
            return refused(console, request, exc)
        assert visit is not None
        by = fields.get("by", "").strip()
        target = safe_next(fields.get("next"))
        error = ""
        if sessions.required and not sessions.check_token(fields.get("token", "")):
            error = "That is not the API token (TOUCHPOINT_API_TOKEN of this server)."
            status = 401
        elif (by or sessions.required) and (len(by) > 254 or not ADDRESS.match(by)):
            error = "Give your email address: decisions you take here are signed with it."
            status = 422
        if error:
            return console.page(request, visit, "login.html", status=status, next=target, error=error, by=by)
        response = see_other(target)
        sessions.write(response, sessions.new(auth=True, by=by or None))
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        visit = sessions.read(request)
        try:
            await sessions.form(request, visit)
        except FormError as exc:
            return refused(console, request, exc)
        response = see_other("/console/login")
        sessions.clear(response)
        return response

    @router.post("/runs/{run_id}/control")
    async def control(request: Request, run_id: str) -> Response:
        visit = sessions.viewer(request)
        try:
            fields = await sessions.form(request, visit)
        except FormError as exc:
            return refused(console, request, exc)
        assert visit is not None
        action = fields.get("action", "")
        if action not in ACTIONS:
            return console.problem(request, visit, 422, "Unknown action", f"A run can be paused, resumed or cancelled, not {action!r}.")
        with console.db() as s:
            run = repo.get_run(s, run_id)
            found = None if run is None else (run.account_id, run.status)
        if found is None:
            return console.problem(request, visit, 404, "No such run", f"No run {run_id!r} is in the store.")
        account_id, status = found
        if account_id is None:
            return console.problem(request, visit, 409, "Not an account's run", "A schedule playbook's run has no account to pause it in.")
        if status == "ended":
            return console.problem(request, visit, 409, "The run has ended", f"Run {run_id} has ended: there is nothing to {action}.")
        reason = f"paused in the console by {visit.by}" if visit.by else "paused in the console"
        try:
            await control_run(console.client, account_id, RunControl(action=action, run_id=run_id, reason=reason))  # type: ignore[arg-type]
        except RPCError as exc:
            return console.problem(request, visit, 503, "Temporal did not take it", f"The {action} was not sent ({exc.message}); try again.")
        return see_other(f"/console/accounts/{quote(account_id, safe='')}?done={action}#run-{quote(run_id, safe='')}")

    @router.post("/tasks/{task_id}/complete")
    async def complete(request: Request, task_id: str) -> Response:
        visit = sessions.viewer(request)
        try:
            fields = await sessions.form(request, visit)
        except FormError as exc:
            return refused(console, request, exc)
        assert visit is not None
        with console.db.begin() as s:
            task = repo.complete_task(s, task_id, dt.datetime.now(dt.UTC))
            found = None if task is None else (task.account_id, task.playbook_id, task.step)
        if found is None:
            return console.problem(request, visit, 404, "No such task", f"No task {task_id!r} is in the store.")
        account_id, playbook, step = found
        event = EventIn(type="task.completed", data={"task_id": task_id, "playbook": playbook, "step": step})
        try:
            await send_event(console.client, console.settings.task_queue, console.db, account_id, event)
        except RPCError as exc:
            return console.problem(request, visit, 503, "Temporal did not take it", f"The task is marked done, but its run was not told ({exc.message}); complete it again.")
        target = safe_next(fields.get("next") or "/console/tasks")
        return see_other(target + ("&" if "?" in target else "?") + "done=complete")


def refused(console: Console, request: Request, exc: FormError) -> Response:
    """The page a refused form post gets (403, 413, ...), saying why."""
    visit = console.sessions.read(request) or console.sessions.new(auth=False)
    return console.problem(request, visit, exc.status, "Refused", str(exc))
