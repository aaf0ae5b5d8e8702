"""Stands in for the get-pip script that ansible-test downloads into its cache.

ansible-test makes its sanity virtual environments without pip and fetches a bootstrap
script from its own file server, which a machine that reaches only the package registries
cannot. This does the same job with what Python ships: ensurepip, then pip from the
package index for the exact versions ansible-test asks for. ansible-test runs it as
__main__ with pip's install options and the pinned packages as arguments.
"""

import ensurepip
import os
import subprocess
import sys

# Options of the get-pip script itself, not of `pip install`.
GET_PIP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}

if __name__ == "__main__":
    # ensurepip hides the machine's pip configuration (index, certificates) from itself by
    # changing os.environ; the pip run after it must see that configuration again.
    environment = dict(os.environ)
    ensurepip.bootstrap()
    arguments = [argument for argument in sys.argv[1:] if argument not in GET_PIP_ONLY_OPTIONS]
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *arguments], env=environment))
