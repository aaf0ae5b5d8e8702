# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The same words for check mode, diff mode and idempotence in every vpnfleet module."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    support: full
    description: In check mode the module computes C(changed) exactly as a real run would and writes nothing.
  diff_mode:
    support: full
    description: The diff shows file contents and certificate metadata (serials, fingerprints), never keys.
  idempotent:
    support: full
    description: A second run with the same arguments reports no change.
"""

    FACTS = r"""
options: {}
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode returns the same facts.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  idempotent:
    support: full
    description: The module never changes the host.
  facts:
    support: full
    description: Sets the fact C(vpnfleet_node).
"""
