"""The WSGI entry point for gunicorn: `gunicorn vpnfleet.controller.wsgi:app`.

Loading this module is what starts the service, so here (and only here) the settings file named
by $VPNFLEET_CONTROLLER_SETTINGS is read at import.
"""

import os

from vpnfleet.controller.app import create_app
from vpnfleet.controller.cli import DEFAULT_SETTINGS, SETTINGS_ENVIRONMENT
from vpnfleet.controller.settings import load_settings

app = create_app(load_settings(os.environ.get(SETTINGS_ENVIRONMENT, DEFAULT_SETTINGS)))
