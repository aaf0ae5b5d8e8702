"""Seed the lab's OpenID Connect provider (Canaille) with users, groups and relying parties.

Run with the provider's own Python (its virtual environment) and CANAILLE_CONFIG set:
``python oidc_provider_seed.py SEED.json``. SEED.json holds ``users`` (user_name, password,
formatted_name), ``groups`` (display_name, members: user names) and ``clients`` (client_id,
client_secret, redirect_uris). Entries are made or brought in line; the last line printed is
JSON ``{"changed": BOOL}``, so that a second run with the same seed reports no change.
"""

import json
import sys

from canaille import create_app
from canaille.app import models
from canaille.backends import Backend


def _one(model, **filters):
    found = Backend.instance.query(model, **filters)
    return found[0] if found else None


def _apply(instance, wanted: dict) -> bool:
    changed = False
    for attribute, value in wanted.items():
        if getattr(instance, attribute) != value:
            setattr(instance, attribute, value)
            changed = True
    return changed


def seed(spec: dict) -> bool:
    changed = False
    users = {}
    for entry in spec.get("users", []):
        user = _one(models.User, user_name=entry["user_name"])
        if user is None:
            user = models.User(user_name=entry["user_name"], family_name=entry["user_name"])
            user.password = entry["password"]
            Backend.instance.save(user)
            changed = True
        elif not Backend.instance.check_user_password(user, entry["password"])[0]:
            Backend.instance.set_user_password(user, entry["password"])
            changed = True
        if _apply(user, {"formatted_name": entry.get("formatted_name", entry["user_name"])}):
            Backend.instance.save(user)
            changed = True
        users[entry["user_name"]] = user
    for entry in spec.get("groups", []):
        members = [users[name] for name in entry["members"]]
        group = _one(models.Group, display_name=entry["display_name"])
        if group is None:
            Backend.instance.save(models.Group(display_name=entry["display_name"], members=members))
            changed = True
        elif sorted(member.id for member in group.members) != sorted(member.id for member in members):
            group.members = members
            Backend.instance.save(group)
            changed = True
    for entry in spec.get("clients", []):
        wanted = {
            "client_secret": entry["client_secret"],
            "redirect_uris": entry["redirect_uris"],
            "client_name": entry.get("client_name", entry["client_id"]),
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "scope": ["openid", "profile", "groups"],
            "token_endpoint_auth_method": "client_secret_basic",
        }
        client = _one(models.Client, client_id=entry["client_id"])
        if client is None:
            client = models.Client(client_id=entry["client_id"], **wanted)
            Backend.instance.save(client)
            changed = True
        elif _apply(client, wanted):
            Backend.instance.save(client)
            changed = True
        if client.audience != [client]:
            # The ID token is for the relying party itself.
            client.audience = [client]
            Backend.instance.save(client)
            changed = True
    return changed


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    app = create_app()
    with app.app_context(), Backend.instance.session():
        changed = seed(spec)
    print(json.dumps({"changed": changed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
