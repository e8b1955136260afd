"""Corporate networks, end to end through the CLI: a real proxy (tinyproxy), private CAs.

The sandbox sits behind a TLS front whose certificate comes from a CA made by ``trustme`` (so
no system trusts it: ``ca_bundle`` must). The proxy is a real tinyproxy with Basic auth, started
per test (:mod:`tests.realproxy`); its own log shows what went through it.
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import trustme

from bulk_sender.sandbox.server import Sandbox
from tests import realproxy
from tests.conftest import API_KEY, CliRunner, Run, read_results, write_config, write_csv
from tests.rawhttp import free_port
from tests.realproxy import PROXY_PASSWORD, ThreadedTlsFront, TinyProxy, start_tinyproxy

pytestmark = pytest.mark.timeout(60)

NUMBERS: Final = [f"+9198765{i:05d}" for i in range(6)]
PROXY_VARIABLES: Final = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
)


@pytest.fixture(autouse=True)
def clean_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variable from the machine running the tests leaks into them."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def tinyproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyProxy]:
    """A real tinyproxy on 127.0.0.1 with Basic auth, its files in a directory of its own."""
    with start_tinyproxy(tmp_path_factory.mktemp("proxy")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def company_ca() -> trustme.CA:
    """A CA that no system trusts, as a company's own (or a TLS-inspecting proxy's) would be."""
    return trustme.CA()


@pytest.fixture
def front(sandbox: Sandbox, company_ca: trustme.CA) -> Iterator[ThreadedTlsFront]:
    """The sandbox behind HTTPS, with a certificate for 127.0.0.1 from ``company_ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    company_ca.issue_cert("127.0.0.1").configure_cert(context)
    port = int(sandbox.url.rsplit(":", 1)[1])
    with ThreadedTlsFront(port, context) as tls_front:
        yield tls_front


@pytest.fixture
def ca_pem(tmp_path: Path, company_ca: trustme.CA) -> Path:
    """The company CA's certificate as a PEM file, for ``[kaleyra] ca_bundle``."""
    path = tmp_path / "company-ca.pem"
    company_ca.cert_pem.write_to_path(str(path))
    return path


def send(
    cli: CliRunner, directory: Path, base_url: str, **kaleyra: object
) -> tuple[Run, list[dict[str, str]]]:
    """Send NUMBERS from ``directory`` (created) with -v and a JSON summary; results too."""
    directory.mkdir(exist_ok=True)
    config = write_config(
        directory / "config.toml", base_url, kaleyra=kaleyra, sending={"max_attempts": 2}
    )
    campaign = write_csv(directory / "c.csv", ["to"], [[n] for n in NUMBERS])
    out = directory / "r.csv"
    run = cli(
        "send", campaign, "--config", config, "--out", out, "-v",
        "--summary-json", directory / "summary.json",
    )  # fmt: skip
    return run, read_results(out)


def stop_line(run: Run) -> str:
    """The one line that says why the run stopped."""
    (line,) = [text for text in run.out.splitlines() if text.startswith("Stopped")]
    return line


def assert_secret_nowhere(
    secret: str, run: Run, directory: Path, *, but: tuple[str, ...] = ()
) -> None:
    """``secret`` is in neither stdout nor stderr, nor in any file under ``directory`` (the
    results, failed export, journal, lock, summary...) except those named in ``but``."""
    assert secret not in run.out
    assert secret not in run.err
    written = [path for path in directory.rglob("*") if path.is_file() and path.name not in but]
    assert len(written) >= 5
    for path in written:
        assert secret.encode() not in path.read_bytes(), path


# --------------------------------------------------------------------------- through the proxy


def test_requests_go_through_the_proxy(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tinyproxy: TinyProxy,
    front: ThreadedTlsFront, sandbox: Sandbox, ca_pem: Path,
) -> None:  # fmt: skip
    """HTTPS_PROXY with credentials: every request goes through tinyproxy's CONNECT tunnel (its
    log says so), every row is sent, and the password is nowhere in the output or files."""
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url())
    run, rows = send(cli, tmp_path / "run", front.url, ca_bundle=str(ca_pem))
    assert run.code == 0, run.out + run.err
    assert {row["status"] for row in rows} == {"sent"}
    assert sorted(record.to for record in sandbox.accepted()) == sorted(NUMBERS)
    tunnels = tinyproxy.tunnels()
    assert tunnels and set(tunnels) == {f"127.0.0.1:{front.port}"}
    assert f"proxy={tinyproxy.address}" in run.err  # the run says which proxy it uses
    assert_secret_nowhere(PROXY_PASSWORD, run, tmp_path / "run")
    assert_secret_nowhere(API_KEY, run, tmp_path / "run")


def test_no_proxy_bypasses_the_proxy(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tinyproxy: TinyProxy,
    front: ThreadedTlsFront, sandbox: Sandbox, ca_pem: Path,
) -> None:  # fmt: skip
    """With 127.0.0.1 in NO_PROXY the requests go straight to the server: tinyproxy sees none."""
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url())
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    run, rows = send(cli, tmp_path / "run", front.url, ca_bundle=str(ca_pem))
    assert run.code == 0, run.out + run.err
    assert {row["status"] for row in rows} == {"sent"}
    assert tinyproxy.tunnels() == []


def test_the_config_key_overrides_the_environment(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tinyproxy: TinyProxy,
    front: ThreadedTlsFront, ca_pem: Path,
) -> None:  # fmt: skip
    """[kaleyra] proxy wins over HTTPS_PROXY (here a dead port); proxy = "" goes direct even
    though HTTPS_PROXY names a working proxy."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
    run, _ = send(cli, tmp_path / "a", front.url, ca_bundle=str(ca_pem), proxy=tinyproxy.url())
    assert run.code == 0, run.out + run.err
    assert len(tinyproxy.tunnels()) >= 1
    assert_secret_nowhere(PROXY_PASSWORD, run, tmp_path / "a", but=("config.toml",))
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url())
    seen = len(tinyproxy.tunnels())
    run, _ = send(cli, tmp_path / "b", front.url, ca_bundle=str(ca_pem), proxy="")
    assert run.code == 0, run.out + run.err
    assert len(tinyproxy.tunnels()) == seen


def test_a_wrong_proxy_password_stops_the_run(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tinyproxy: TinyProxy,
    front: ThreadedTlsFront, sandbox: Sandbox, ca_pem: Path,
) -> None:  # fmt: skip
    """The proxy refuses the credentials: exit 3, one line naming the proxy (host and port) and
    its answer, every row not_sent (nothing reached Kaleyra), and no password anywhere."""
    wrong = "Wr0ng-pr0xy-Passw0rd"
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url(password=wrong))
    run, rows = send(cli, tmp_path / "run", front.url, ca_bundle=str(ca_pem))
    assert run.code == 3
    assert {row["status"] for row in rows} == {"not_sent"}
    assert sandbox.received == []
    line = stop_line(run)
    assert f"the proxy {tinyproxy.address} refused" in line
    assert "(PROXY_407)" in line or "(PROXY_401)" in line  # tinyproxy 1.11.1 answers 401
    assert "user and password" in line
    assert f"remaining {len(NUMBERS)} rows" in line
    for secret in (wrong, PROXY_PASSWORD):
        assert_secret_nowhere(secret, run, tmp_path / "run")


# --------------------------------------------------------------------------- private CAs


@pytest.mark.parametrize("route", ["direct", "proxy"])
def test_an_unknown_ca_stops_the_run_and_ca_bundle_lets_it_send(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
    front: ThreadedTlsFront, sandbox: Sandbox, ca_pem: Path, route: str,
) -> None:  # fmt: skip
    """A certificate from a CA the system does not trust: exit 3 at the first request, one line
    naming the failed check and ca_bundle, rows not_sent; the same command with ca_bundle set
    to that CA then sends every row once."""
    if route == "proxy":
        proxy: TinyProxy = request.getfixturevalue("tinyproxy")
        monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    run, rows = send(cli, tmp_path / "run", front.url)
    assert run.code == 3
    assert {row["status"] for row in rows} == {"not_sent"}
    assert sandbox.received == []
    line = stop_line(run)
    assert "(TLS_VERIFY)" in line
    assert f"the TLS certificate of 127.0.0.1:{front.port} could not be verified" in line
    assert "unable to get local issuer certificate" in line
    assert "[kaleyra] ca_bundle" in line
    run, rows = send(cli, tmp_path / "run", front.url, ca_bundle=str(ca_pem))
    assert run.code == 0, run.out + run.err
    assert {row["status"] for row in rows} == {"sent"}
    assert sorted(record.to for record in sandbox.accepted()) == sorted(NUMBERS)


def test_ssl_cert_file_is_honoured(
    tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch,
    front: ThreadedTlsFront, sandbox: Sandbox, ca_pem: Path,
) -> None:  # fmt: skip
    """SSL_CERT_FILE (OpenSSL's own variable) still decides the system's trust store."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_pem))
    run, rows = send(cli, tmp_path / "run", front.url)
    assert run.code == 0, run.out + run.err
    assert {row["status"] for row in rows} == {"sent"}


# --------------------------------------------------------------------------- the fixture itself


@pytest.mark.parametrize(("ci", "outcome"), [("true", "fail"), ("", "skip")])
def test_a_missing_tinyproxy_skips_except_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    """Without the binary the proxy tests skip with the reason, but under CI=true they fail."""
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if outcome == "fail" else pytest.skip.Exception
    with pytest.raises(expected, match="tinyproxy is not installed"):
        realproxy.tinyproxy_binary()
