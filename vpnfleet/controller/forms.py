"""The portal's forms; Flask-WTF adds and checks the CSRF token of each."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Regexp


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=255)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class CreateConfigForm(FlaskForm):
    profile_id = SelectField("Profile", validators=[DataRequired()], validate_choice=True)
    # "" is automatic: every location of the profile, the nodes in random order.
    location = SelectField("Location", default="", validate_choice=True)
    # "": OpenVPN where the profile offers it, else WireGuard (portal.py says why).
    protocol = SelectField(
        "Protocol",
        default="",
        choices=[("", "automatic"), ("openvpn", "OpenVPN"), ("wireguard", "WireGuard")],
        validate_choice=True,
    )
    display_name = StringField(
        "Name",
        validators=[
            DataRequired(),
            Length(max=64),
            Regexp(r"^[\w .,()@+-]+$", message="use letters, digits, spaces and . , ( ) @ + - only"),
        ],
    )


class ActionForm(FlaskForm):
    """A button that changes something: only its CSRF token is needed."""


class SearchLogForm(FlaskForm):
    class Meta:
        csrf = False  # a search changes nothing, and its URL can be shared

    user = StringField("User")
    address = StringField("VPN or real address")
    at = StringField("At (UTC, YYYY-MM-DD HH:MM)")
