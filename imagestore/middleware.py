"""Who may do what at the image store: the coordinator's token for everything, the scrapers' `metrics_token` for
/metrics and /health alone, a read ticket for one image's data and nothing else, an upload ticket for sending
one image's data (see tickets.py). Refused tickets are counted by reason (tally.py); errors leave in the shared
envelope (agentkit.web)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from agentkit import bearer
from agentkit.web import error_middleware
from imagestore.appkeys import CALLER, SETTINGS, TALLY, TICKET_KEY
from imagestore.errors import TicketRefused, Unauthorized
from imagestore.tickets import BadTicket, Op, verify

DATA_ROUTE, UPLOAD_ROUTE, HEALTH_ROUTE, METRICS_ROUTE = "data", "upload", "health", "metrics"
TICKET_OPS: dict[str, Op] = {DATA_ROUTE: "read", UPLOAD_ROUTE: "put"}
SCRAPED = frozenset({HEALTH_ROUTE, METRICS_ROUTE})  # what the scrapers' metrics_token opens
errors = error_middleware("imagestore")


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`request[CALLER]` is `coordinator`, `scraper`, or the ticket's subject on the data and upload routes."""
    header, route = request.headers.get("Authorization", ""), request.match_info.route.name or ""
    s = request.app[SETTINGS]
    if bearer.matches(header, s.token.get_secret_value()):
        request[CALLER] = "coordinator"
        return await handler(request)
    if route in SCRAPED and s.metrics_token is not None and bearer.matches(header, s.metrics_token.get_secret_value()):
        request[CALLER] = "scraper"
        return await handler(request)
    credential = bearer.from_header(header) or request.query.get("ticket", "")
    err: TicketRefused | Unauthorized = Unauthorized()
    if credential and (op := TICKET_OPS.get(route)):
        try:
            ticket = verify(request.app[TICKET_KEY], credential, request.match_info["image_id"], op=op)
        except BadTicket as e:
            request.app[TALLY].refused[op, e.reason] += 1
            err = TicketRefused(reason=str(e))
        else:
            request[CALLER] = ticket.subject
            return await handler(request)
    return web.json_response(err.body(), status=err.status, headers={"WWW-Authenticate": "Bearer"})
