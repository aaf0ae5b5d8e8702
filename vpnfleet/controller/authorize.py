"""The OAuth authorization page: a logged-in user approves an app (a CSRF-protected form)."""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from flask import Blueprint, abort, current_app, render_template, request

from vpnfleet.controller.forms import ActionForm
from vpnfleet.controller.security_headers import allow_form_redirect_to
from vpnfleet.controller.state import controller
from vpnfleet.controller.web_session import login_required, signed_in_user

blueprint = Blueprint("authorize", __name__)


@blueprint.get("/oauth/authorize")
@blueprint.post("/oauth/authorize")
@login_required
def authorize():
    server = current_app.extensions["vpnfleet_oauth_server"]
    user = signed_in_user()
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        if error.redirect_uri:
            # The app and its redirect URI are known: tell the app, as OAuth asks.
            return server.handle_error_response(request, error)
        # Never redirect to an unchecked URI: show the reason here instead.
        abort(400, f"{error.error}: {error.description or 'invalid authorization request'}")
    form = ActionForm()
    allow_form_redirect_to(grant.request.payload.redirect_uri or grant.client.get_default_redirect_uri())
    if request.method == "GET":
        registration = controller().settings.oauth_client(grant.client.get_client_id())
        return render_template(
            "authorize.html",
            app_name=registration.name if registration else grant.client.get_client_id(),
            form=form,
            user=user,
            action=request.full_path,
        )
    if not form.validate_on_submit():
        abort(400, "the approval form was not valid")
    approved = request.form.get("decision") == "approve"
    return server.create_authorization_response(grant_user=user if approved else None, grant=grant)
