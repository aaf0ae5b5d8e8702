"""A real OpenLDAP server (Debian's slapd) for the LDAP login tests: its own directory, a CA made
here for LDAPS and StartTLS, seeded with ldapadd, changed with ldapmodify as an admin would."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret-of-the-test-directory"  # noqa: S105 - a test directory's password
SERVICE_DN = f"cn=portal,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service secret of the test directory"  # noqa: S105
USER_PASSWORD = "directory password of a test user"  # noqa: S105

SLAPD = "/usr/sbin/slapd"


def available() -> bool:
    return Path(SLAPD).exists() and shutil.which("ldapadd") is not None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, as an institution's directory has."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test directory CA"))
        .issuer_name(_name("test directory CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("directory.test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths[2].chmod(0o600)
    return paths


SEED = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example institution

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: ou=services,{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: {SERVICE_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: portal
userPassword: {SERVICE_PASSWORD}
"""


def person(uid: str) -> str:
    return (
        f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
        f"cn: {uid.title()}\nsn: {uid.title()}\nuserPassword: {USER_PASSWORD}\n"
    )


def group(name: str, members: list[str]) -> str:
    lines = [f"dn: cn={name},ou=groups,{SUFFIX}", "objectClass: groupOfNames", f"cn: {name}"]
    # groupOfNames needs a member: the service account stands in for an empty group.
    lines += [f"member: uid={uid},ou=people,{SUFFIX}" for uid in members] or [f"member: {SERVICE_DN}"]
    return "\n".join(lines) + "\n"


@dataclass
class Slapd:
    directory: Path
    ldap_port: int
    ldaps_port: int
    ca_file: Path
    process: subprocess.Popen | None = None

    @property
    def ldap_uri(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def start(self) -> Slapd:
        cert, key = self.directory / "server.crt", self.directory / "server.key"
        (self.directory / "db").mkdir(exist_ok=True)
        conf = self.directory / "slapd.conf"
        conf.write_text(
            "\n".join(
                [
                    *(
                        f"include /etc/ldap/schema/{name}.schema"
                        for name in ("core", "cosine", "inetorgperson")
                    ),
                    "modulepath /usr/lib/ldap",
                    "moduleload back_mdb",
                    "moduleload memberof",
                    f"pidfile {self.directory / 'slapd.pid'}",
                    f"TLSCACertificateFile {self.ca_file}",
                    f"TLSCertificateFile {cert}",
                    f"TLSCertificateKeyFile {key}",
                    "database mdb",
                    f'suffix "{SUFFIX}"',
                    f'rootdn "{ROOT_DN}"',
                    f"rootpw {ROOT_PASSWORD}",
                    f"directory {self.directory / 'db'}",
                    "overlay memberof",
                    "access to attrs=userPassword by self read by anonymous auth by * none",
                    "access to * by * read",
                    "",
                ]
            )
        )
        self.process = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", str(conf), "-h", f"{self.ldap_uri}/ {self.ldaps_uri}/"],
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "slapd.log").open("w"),
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("slapd stopped: " + (self.directory / "slapd.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", self.ldaps_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("slapd did not listen within 15 s")

    def _tool(self, tool: str, ldif: str, *extra: str) -> None:
        subprocess.run(
            [tool, "-x", "-H", self.ldap_uri, "-D", ROOT_DN, "-w", ROOT_PASSWORD, *extra],
            input=ldif,
            text=True,
            check=True,
            capture_output=True,
        )

    def add(self, ldif: str) -> None:
        self._tool("ldapadd", ldif)

    def modify(self, ldif: str) -> None:
        self._tool("ldapmodify", ldif)

    def delete(self, dn: str) -> None:
        self._tool("ldapdelete", "", dn)

    def remove_member(self, group_name: str, uid: str) -> None:
        self.modify(
            f"dn: cn={group_name},ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\n"
            f"member: uid={uid},ou=people,{SUFFIX}\n"
        )

    def add_member(self, group_name: str, uid: str) -> None:
        self.modify(
            f"dn: cn={group_name},ou=groups,{SUFFIX}\nchangetype: modify\nadd: member\n"
            f"member: uid={uid},ou=people,{SUFFIX}\n"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def start_slapd(directory: Path) -> Slapd:
    ca_file, _, _ = make_tls(directory)
    server = Slapd(directory, _free_port(), _free_port(), ca_file).start()
    server.add(SEED)
    return server
