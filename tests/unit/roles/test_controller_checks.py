"""The controller role's check of the signer's CRL bound, run as the role runs it: the bound
must hold the controller's CRL lifetime plus the minute its thisUpdate is backdated, or the signer
refuses every CRL (tests/services/controller/test_controller_signer.py shows that refusal)."""

import pytest
import yaml
from role_play import ANSIBLE_PLAYBOOK, REPO, run_play

CHECK = "Check that the signer's CRL bound holds the controller's CRL lifetime"

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK, reason="needs ansible-playbook")


@pytest.mark.parametrize(
    ("signer_bound", "crl_lifetime", "passes"),
    [
        ("365d", "1h", True),
        ("61m", "1h", True),
        ("60m", "1h", False),
        ("80s", "20s", True),
        ("1h", "1x", False),
    ],
)
def test_the_role_refuses_a_signer_bound_shorter_than_the_crl_lifetime_and_a_minute(
    tmp_path, signer_bound, crl_lifetime, passes
):
    tasks = yaml.safe_load((REPO / "roles/controller/tasks/validate.yml").read_text())
    check = next(task for task in tasks if task["name"] == CHECK)
    play = [
        {
            "name": "The role's check",
            "hosts": "controller",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [str(REPO / "roles/controller/vars/main.yml")],
            "vars": {
                "controller_signer_max_crl_lifetime": signer_bound,
                "controller_crl_lifetime": crl_lifetime,
            },
            "tasks": [check],
        }
    ]
    interpreter = {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    answer = run_play(tmp_path, yaml.safe_dump(play), inventory="controller,", variables=interpreter)
    output = answer.stdout + answer.stderr
    assert (answer.returncode == 0) == passes, output
    if not passes:
        assert "host controller: controller_signer_max_crl_lifetime" in output
