"""Certificates and keys for the test registry and token server, made on the
fly with the ``openssl`` CLI, and RS256 signing in plain Python (no extra
package): a CA and a server certificate for 127.0.0.1/localhost/::1, client
certificates, and the RSA key and self-signed certificate a token server signs
its JWTs with (the registry trusts it through ``rootcertbundle``)."""

import base64
import hashlib
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "openssl"
DAYS = "3650"
SERVER_HOSTS = ("127.0.0.1", "localhost", "::1")

_CA_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = {cn}
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
"""


def _openssl(*args: str) -> bytes:
    proc = subprocess.run([OPENSSL, *args], capture_output=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def _ec_key_args() -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def make_ca(directory: Path, name: str = "ca", cn: str = "crid test CA", rsa: bool = False) -> CertPair:
    """A self-signed CA certificate (EC P-256, or RSA 2048 with ``rsa``)."""
    directory.mkdir(parents=True, exist_ok=True)
    cnf = directory / f"{name}.cnf"
    cnf.write_text(_CA_CONFIG.format(cn=cn))
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    key_args = ["-newkey", "rsa:2048", "-nodes"] if rsa else _ec_key_args()
    _openssl(
        "req",
        "-x509",
        "-config",
        str(cnf),
        "-extensions",
        "v3_ca",
        *key_args,
        "-keyout",
        str(pair.key),
        "-out",
        str(pair.cert),
        "-days",
        DAYS,
        "-set_serial",
        str(secrets.randbits(63)),
    )
    return pair


def _issue(directory: Path, name: str, ca: CertPair, cn: str, extensions: str) -> CertPair:
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("req", "-new", *_ec_key_args(), "-keyout", str(pair.key), "-out", str(csr), "-subj", f"/CN={cn}")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca.cert),
        "-CAkey",
        str(ca.key),
        "-set_serial",
        str(secrets.randbits(63)),
        "-days",
        DAYS,
        "-out",
        str(pair.cert),
        "-extfile",
        str(ext),
    )
    csr.unlink()
    return pair


def make_server_cert(
    directory: Path, ca: CertPair, hosts: tuple[str, ...] = SERVER_HOSTS, name: str = "server"
) -> CertPair:
    """A server certificate signed by ``ca`` whose SANs are ``hosts`` (IPs and DNS names)."""
    sans = []
    for host in hosts:
        is_ip = host.replace(".", "").isdigit() or ":" in host
        sans.append(f"IP:{host}" if is_ip else f"DNS:{host}")
    ext = (
        "basicConstraints = CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
        f"subjectAltName = {','.join(sans)}\n"
    )
    return _issue(directory, name, ca, hosts[0] if hosts else "localhost", ext)


def make_client_cert(directory: Path, ca: CertPair, cn: str = "crid-client", name: str = "client") -> CertPair:
    """A TLS client certificate signed by ``ca``."""
    ext = (
        "basicConstraints = CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = clientAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    return _issue(directory, name, ca, cn, ext)


# ---------------------------------------------------------------- DER / RSA


def _der_read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER TLV at ``pos``: (tag, value, position after it)."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    return tag, data[pos : pos + length], pos + length


def _der_children(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        tag, value, pos = _der_read(data, pos)
        out.append((tag, value))
    return out


_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


@dataclass(frozen=True)
class RsaKey:
    """An RSA private key, enough to sign RS256 (PKCS#1 v1.5 with SHA-256)."""

    n: int
    e: int
    d: int

    @classmethod
    def from_pem(cls, path: Path) -> "RsaKey":
        der = _openssl("pkey", "-in", str(path), "-outform", "DER")
        _, body, _ = _der_read(der, 0)
        children = _der_children(body)
        if len(children) >= 3 and children[1][0] == 0x30 and children[2][0] == 0x04:
            # PKCS#8 PrivateKeyInfo: version, algorithm, OCTET STRING(RSAPrivateKey)
            _, body, _ = _der_read(children[2][1], 0)
            children = _der_children(body)
        ints = [int.from_bytes(value, "big") for tag, value in children if tag == 0x02]
        # RSAPrivateKey: version, n, e, d, p, q, dp, dq, qinv
        return cls(n=ints[1], e=ints[2], d=ints[3])

    def sign_rs256(self, message: bytes) -> bytes:
        k = (self.n.bit_length() + 7) // 8
        t = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        return pow(int.from_bytes(em, "big"), self.d, self.n).to_bytes(k, "big")

    def verify_rs256(self, message: bytes, signature: bytes) -> bool:
        k = (self.n.bit_length() + 7) // 8
        t = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        return pow(int.from_bytes(signature, "big"), self.e, self.n).to_bytes(k, "big") == em


def public_key_der(path: Path) -> bytes:
    """DER SubjectPublicKeyInfo of a PEM private key or certificate."""
    text = path.read_text()
    if "CERTIFICATE" in text:
        pem = _openssl("x509", "-in", str(path), "-pubkey", "-noout")
        return _openssl_stdin(["pkey", "-pubin", "-outform", "DER"], pem)
    return _openssl("pkey", "-in", str(path), "-pubout", "-outform", "DER")


def _openssl_stdin(args: list[str], data: bytes) -> bytes:
    proc = subprocess.run([OPENSSL, *args], input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def cert_der(path: Path) -> bytes:
    """DER of a PEM certificate (what a JWT ``x5c`` entry carries, base64)."""
    return _openssl("x509", "-in", str(path), "-outform", "DER")


def libtrust_key_id(spki_der: bytes) -> str:
    """The key id docker/libtrust (and so distribution 2.8) gives a public key:
    base32 of the first 240 bits of sha256(DER SubjectPublicKeyInfo), in
    groups of four characters joined by ':'."""
    text = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


@dataclass(frozen=True)
class SigningKey:
    """The RSA key and self-signed certificate a token server signs with."""

    cert: Path
    key: Path
    rsa: RsaKey
    key_id: str
    cert_der: bytes


def make_signing_key(directory: Path, name: str = "token", cn: str = "crid token issuer") -> SigningKey:
    pair = make_ca(directory, name=name, cn=cn, rsa=True)
    return SigningKey(
        cert=pair.cert,
        key=pair.key,
        rsa=RsaKey.from_pem(pair.key),
        key_id=libtrust_key_id(public_key_der(pair.key)),
        cert_der=cert_der(pair.cert),
    )
