"""Admin pages: connections now, node health, users and their configs, the connection log."""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from vpnfleet.controller import connection_log, wireguard
from vpnfleet.controller.accounts import end_user_sessions
from vpnfleet.controller.configs import active_configs, disable_user, disconnect_user_everywhere
from vpnfleet.controller.connection_log import LogSearch, LogSearchError
from vpnfleet.controller.fleet import (
    DrainRefused,
    capacity_table,
    live_connections,
    node_rows,
    set_maintenance,
)
from vpnfleet.controller.forms import ActionForm, SearchLogForm
from vpnfleet.controller.models import User, VpnConfig, utcnow
from vpnfleet.controller.state import controller, db
from vpnfleet.controller.web_session import admin_required

blueprint = Blueprint("admin", __name__)


@blueprint.get("/")
@admin_required
def connections():
    view = live_connections(controller(), db())
    peers, peers_unreachable = wireguard.live_peers(controller(), db())
    down = {answer.node.name for answer in view.unreachable}
    capacity = capacity_table(controller().settings, view, peers, peers_unreachable)
    return render_template(
        "admin/connections.html",
        view=view,
        peers=peers,
        # A node that did not answer at all is named once, above.
        peers_unreachable=[answer for answer in peers_unreachable if answer.node.name not in down],
        action_form=ActionForm(),
        capacity=capacity,
    )


@blueprint.get("/nodes")
@admin_required
def nodes():
    settings = controller().settings
    return render_template(
        "admin/nodes.html",
        rows=node_rows(settings, controller().daemons.health.get()),
        now=utcnow(),
        action_form=ActionForm(),
        confirm=request.args.get("confirm"),
    )


@blueprint.post("/nodes/<name>/maintenance")
@admin_required
def node_maintenance(name: str):
    """Drain (on=yes) or undrain a node; the last node of a location needs force=yes."""
    _checked_action()
    on = request.form.get("on") == "yes"
    force = request.form.get("force") == "yes"
    if controller().settings.node(name) is None:
        abort(404, "no such node")
    try:
        change = set_maintenance(controller(), name, on, force)
    except DrainRefused as refusal:
        flash(str(refusal))
        # The page then offers the forced drain of this node.
        confirm = name if refusal.needs_force else None
        return redirect(url_for("admin.nodes", confirm=confirm))
    if change.warning:
        flash("Warning: " + change.warning + ".")
    if on:
        flash(f"{name} is in maintenance: no new config names it; {change.moved} client(s) told to move on.")
    else:
        flash(f"{name} takes new clients again.")
    return redirect(url_for("admin.nodes"))


@blueprint.get("/users")
@admin_required
def users():
    now = utcnow()
    all_users = list(db().scalars(select(User).order_by(User.username)))
    counts = {user.id: len(active_configs(db(), user, now)) for user in all_users}
    return render_template("admin/users.html", users=all_users, counts=counts)


def _user_or_404(user_id: int) -> User:
    user = db().get(User, user_id)
    if user is None:
        abort(404, "no such user")
    return user


@blueprint.get("/users/<db_id:user_id>")
@admin_required
def user_detail(user_id: int):
    user = _user_or_404(user_id)
    configs = list(
        db().scalars(
            select(VpnConfig).where(VpnConfig.user_id == user.id).order_by(VpnConfig.created_at.desc())
        )
    )
    return render_template(
        "admin/user.html", user=user, configs=configs, now=utcnow(), action_form=ActionForm()
    )


def _checked_action() -> None:
    if not ActionForm().validate_on_submit():
        abort(400, "the form was not valid")


def _report_unreachable(unreachable: list[str]) -> None:
    if unreachable:
        flash("Not reachable now: " + ", ".join(unreachable) + ".")


@blueprint.post("/users/<db_id:user_id>/disconnect")
@admin_required
def disconnect_user(user_id: int):
    _checked_action()
    user = _user_or_404(user_id)
    done = disconnect_user_everywhere(controller(), db(), user)
    _report_unreachable(done.unreachable)
    flash(f"Disconnected {user.username} on every node.")
    if done.wireguard_ended:
        flash(
            f"{done.wireguard_ended} WireGuard config(s) of {user.username} ended: a WireGuard "
            "client has no connection to drop, only its peer, so it needs a new config."
        )
    return redirect(
        request.referrer if _local(request.referrer) else url_for("admin.user_detail", user_id=user.id)
    )


@blueprint.post("/users/<db_id:user_id>/disable")
@admin_required
def disable(user_id: int):
    _checked_action()
    user = _user_or_404(user_id)
    _report_unreachable(disable_user(controller(), db(), user))
    flash(f"Disabled {user.username}: configs revoked, connections dropped.")
    return redirect(url_for("admin.user_detail", user_id=user.id))


@blueprint.post("/users/<db_id:user_id>/end-sessions")
@admin_required
def end_sessions(user_id: int):
    """Every portal login of the user ends (a stolen cookie, a shared computer)."""
    _checked_action()
    user = _user_or_404(user_id)
    ended = end_user_sessions(db(), user.id)
    db().commit()
    flash(f"Ended {ended} portal session(s) of {user.username}.")
    return redirect(url_for("admin.user_detail", user_id=user.id))


@blueprint.post("/users/<db_id:user_id>/enable")
@admin_required
def enable(user_id: int):
    _checked_action()
    user = _user_or_404(user_id)
    user.is_disabled = False
    db().commit()
    flash(f"Enabled {user.username}; they need to make new configs.")
    return redirect(url_for("admin.user_detail", user_id=user.id))


def _local(url: str | None) -> bool:
    return url is not None and url.startswith(request.host_url)


@blueprint.get("/log")
@admin_required
def log():
    """Who had an address at a time, all sessions of a user; as a page, or CSV with format=csv."""
    form = SearchLogForm(request.args)
    want_csv = request.args.get("format") == "csv"
    if request.args.get("format") not in (None, "", "csv", "html"):
        abort(400, "format must be html or csv")
    try:
        log_search = LogSearch.parse(form.user.data, form.address.data, form.at.data)
    except LogSearchError as problem:
        if want_csv:
            abort(400, str(problem))
        return render_template("admin/log.html", form=form, entries=[], error=str(problem), page_size=0), 400
    if want_csv:
        entries = connection_log.search(db(), log_search, connection_log.EXPORT_LIMIT)
        response = Response(connection_log.csv_text(entries), mimetype="text/csv")
        stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
        response.headers["Content-Disposition"] = f'attachment; filename="connection-log-{stamp}.csv"'
        if len(entries) == connection_log.EXPORT_LIMIT:
            response.headers["X-Vpnfleet-Truncated"] = f"only the newest {connection_log.EXPORT_LIMIT} rows"
        return response
    entries = connection_log.search(db(), log_search)
    return render_template(
        "admin/log.html",
        form=form,
        entries=entries,
        error=None,
        page_size=connection_log.PAGE_SIZE,
        csv_query={**request.args.to_dict(), "format": "csv"},
    )
