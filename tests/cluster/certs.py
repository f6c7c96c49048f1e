"""Certificates for the cluster's TLS Redis (and sentinels), made with openssl."""
import os
import subprocess
from pathlib import Path


def _sh(*argv):
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True)


def make_certs(folder, server_ips):
    """A CA, a server certificate for server_ips (IP SANs) and a client certificate, made with
    openssl in folder -> {"ca", "server_cert", "server_key", "client_cert", "client_key",
    "other_ca"} (other_ca: a CA that signed nothing here, for refusal tests)."""
    f = Path(folder)
    f.mkdir(parents=True, exist_ok=True)
    p = {k: str(f / n) for k, n in [("ca", "ca.crt"), ("ca_key", "ca.key"), ("server_cert", "server.crt"),
                                    ("server_key", "server.key"), ("client_cert", "client.crt"),
                                    ("client_key", "client.key"), ("other_ca", "other-ca.crt"),
                                    ("other_ca_key", "other-ca.key")]}
    for cert, key, cn in ((p["ca"], p["ca_key"], "digits test CA"), (p["other_ca"], p["other_ca_key"], "other CA")):
        _sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
            "-days", "2", "-subj", f"/CN={cn}")
    san = ",".join(f"IP:{ip}" for ip in server_ips) + ",DNS:localhost"
    for kind, cn, ext in (("server", "redis", f"subjectAltName={san}"), ("client", "digits-client", None)):
        csr = str(f / f"{kind}.csr")
        _sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", p[f"{kind}_key"], "-out", csr,
            "-subj", f"/CN={cn}")
        extfile = f / f"{kind}.ext"
        extfile.write_text((ext or "basicConstraints=CA:FALSE") + "\n")
        _sh("openssl", "x509", "-req", "-in", csr, "-CA", p["ca"], "-CAkey", p["ca_key"], "-CAcreateserial",
            "-out", p[f"{kind}_cert"], "-days", "2", "-extfile", str(extfile))
    for key in ("server_key", "client_key", "ca_key", "other_ca_key"):
        os.chmod(p[key], 0o644)  # readable by the test's processes (temporary test keys)
    return p
