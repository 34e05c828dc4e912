"""[security.admission]: validation, the rendered nftables ruleset (`nft -c`, loaded twice in a
namespace of its own), `provision meta-ranges refresh` and doctor's check of the loaded rules."""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioning.cli import app
from provisioning.doctor import Level, admission_findings
from provisioning.render_nftables import nftables_ruleset, render_nftables
from siteconfig.meta_ranges import RangesError, parse_ranges, shipped_ranges
from siteconfig.model import ConfigError, SiteConfig, parse_config
from tests.security.netns_topology import unavailable_reason

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site.toml"
RADB = """route:          31.13.24.0/21
descr:          Facebook
origin:         AS32934

route6:         2a03:2880::/32
origin:         AS32934
"""


HEADER = "[security.admission]"


def example_with(extra: str, text: str | None = None) -> str:
    """The example config with `extra` ("[security.admission]\\nkey = value...") merged into its
    own [security.admission] table."""
    text = EXAMPLE.read_text() if text is None else text
    assert extra == "" or extra.startswith(HEADER + "\n"), extra
    start = text.index(HEADER)
    line_end = text.index("\n", start) + 1
    return text[:line_end] + extra.removeprefix(HEADER + "\n") + "\n" + text[line_end:]


def site(extra: str = "", folder: Path | None = None) -> SiteConfig:
    return parse_config(example_with(extra), (folder or EXAMPLE.parent) / "site.toml")


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        site(extra)
    return caught.value.problems


def test_shipped_ranges_are_meta_published_prefixes() -> None:
    networks = {str(n) for n in shipped_ranges()}
    assert {"31.13.24.0/21", "57.144.0.0/14", "157.240.0.0/16", "173.252.64.0/18",
            "2a03:2880::/32"} <= networks
    cfg = site()
    assert cfg.security.admission.other_budget(cfg.security.connections.tls_max_connections) == 409 - 256


def test_ranges_documents() -> None:
    assert [str(n) for n in parse_ranges(RADB)] == ["31.13.24.0/21", "2a03:2880::/32"]
    ripestat = '{"data": {"prefixes": [{"prefix": "157.240.0.0/16"}, {"prefix": "2a03:2881::/32"}]}}'
    assert [str(n) for n in parse_ranges(ripestat)] == ["157.240.0.0/16", "2a03:2881::/32"]
    assert [str(n) for n in parse_ranges("# c\n1.2.3.0/24  # x\n\n")] == ["1.2.3.0/24"]
    with pytest.raises(RangesError, match=r"line 2: '1\.2\.3\.4/33'"):
        parse_ranges("1.2.3.0/24\n1.2.3.4/33\n")
    with pytest.raises(RangesError, match="wider than /8"):
        parse_ranges("0.0.0.0/0\n")


def test_validation_names_the_key(tmp_path: Path) -> None:
    assert problems('[security.admission]\nmeta_ranges = ["10.0.0.0/33"]')[0].startswith(
        "security.admission.meta_ranges: [0]: '10.0.0.0/33' is not an IPv4 or IPv6 CIDR")
    assert problems("[security.admission]\nmeta_ranges = []")[0].startswith(
        "security.admission.meta_ranges: is empty")
    assert "set meta_ranges or meta_ranges_file, not both" in problems(
        '[security.admission]\nmeta_ranges = ["10.0.0.0/8"]\nmeta_ranges_file = "x.txt"')[0]
    assert problems("[security.admission]\nper_source_connections = 0")[0].startswith(
        "security.admission.per_source_connections:")
    assert "more than connections.max_connections 409" in problems(
        "[security.admission]\nmeta_connections = 300\nother_connections = 200")[0]
    missing = problems('[security.admission]\nmeta_ranges_file = "/nonexistent/meta.txt"')
    assert missing[0].startswith("security.admission.meta_ranges_file: cannot read /nonexistent/meta.txt")
    (tmp_path / "meta.txt").write_text("10.9.0.0/16\n")
    cfg = site('[security.admission]\nmeta_ranges_file = "meta.txt"', folder=tmp_path)
    assert cfg.security.admission.meta_ranges_file == tmp_path / "meta.txt"
    assert [str(n) for n in cfg.security.admission.networks()] == ["10.9.0.0/16"]


def test_ruleset_text(tmp_path: Path) -> None:
    text = nftables_ruleset(site(), tmp_path / "wa-sip.nft")
    assert "\ntable inet wa_sip {}\ndelete table inet wa_sip\n\ntable inet wa_sip {\n" in text
    assert "table ip " not in text and "flush ruleset" not in text  # no other table touched
    assert "tcp dport 5061 ct state new jump admission" in text
    assert "ct count over 256 counter drop" in text and "ct count over 153 counter drop" in text
    assert "limit rate over 4/second burst 8 packets" in text
    assert "ip6 saddr and ffff:ffff:ffff:ffff:: ct count over 8" in text
    meta_only = nftables_ruleset(site("[security.admission]\nmeta_only = true"), tmp_path / "x.nft")
    assert 'counter drop comment "not meta"' in meta_only and "conns_v4" not in meta_only
    assert render_nftables(site("[security.admission]\nenabled = false"), tmp_path) is None


@pytest.fixture
def namespace() -> Iterator[str]:
    if (reason := unavailable_reason()) is not None:
        pytest.skip(reason)
    name = "wsadm-render-check"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def nft(namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", namespace, "nft", *args], capture_output=True,
                          text=True, timeout=20, check=False)


@pytest.mark.parametrize(("tls", "extra"), [
    ("0.0.0.0:5061", ""),
    ("0.0.0.0:5061", "[security.admission]\nmeta_only = true"),
    ("[::]:5062", '[security.admission]\nipv6_source_prefix = 128\nmeta_ranges = ["10.77.0.0/24"]'),
])
def test_rendered_ruleset_loads_idempotently(namespace: str, tmp_path: Path, tls: str, extra: str) -> None:
    text = EXAMPLE.read_text().replace('tls = "0.0.0.0:5061"', f'tls = "{tls}"', 1)
    cfg = parse_config(example_with(extra, text), EXAMPLE)
    ruleset = render_nftables(cfg, tmp_path)
    assert ruleset is not None
    check = nft(namespace, "-c", "-f", str(ruleset))
    assert check.returncode == 0, check.stderr
    for _ in range(2):  # loadable over itself
        loaded = nft(namespace, "-f", str(ruleset))
        assert loaded.returncode == 0, loaded.stderr
    assert nft(namespace, "list", "tables").stdout.split() == ["table", "inet", "wa_sip"]


def test_doctor_checks_the_loaded_rules(namespace: str, tmp_path: Path) -> None:
    inside = ("ip", "netns", "exec", namespace, "nft")
    cfg = site()
    absent = admission_findings(cfg, inside)
    assert [(f.check, f.level) for f in absent] == [("admission", Level.FAIL)]
    assert "not loaded" in absent[0].cause
    ruleset = render_nftables(cfg, tmp_path)
    assert ruleset is not None and nft(namespace, "-f", str(ruleset)).returncode == 0
    loaded = admission_findings(cfg, inside)
    assert {f.level for f in loaded} == {Level.PASS}, loaded
    changed = site('[security.admission]\nmeta_ranges = ["10.77.0.0/24", "2a03:2880::/32"]')
    stale = {f.cause for f in admission_findings(changed, inside) if f.level is Level.FAIL}
    assert any("missing 10.77.0.0/24" in cause for cause in stale), stale
    missing_nft = admission_findings(cfg, ("/nonexistent/nft",))
    assert missing_nft[0].level is Level.WARN and "not installed" in missing_nft[0].cause


# ---- provision meta-ranges refresh -------------------------------------------------------------


def refresh(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["meta-ranges", "refresh", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture
def site_with_file(tmp_path: Path) -> Path:
    (tmp_path / "meta.txt").write_text("31.13.24.0/21\n157.240.0.0/16\n")
    config = tmp_path / "site.toml"
    config.write_text(example_with('[security.admission]\nmeta_ranges_file = "meta.txt"'))
    return config


def test_refresh_from_a_file(site_with_file: Path, tmp_path: Path) -> None:
    source = tmp_path / "radb.txt"
    source.write_text(RADB + "route:          157.240.0.0/16\n")
    code, output = refresh("--config", str(site_with_file), "--from", str(source))
    assert code == 0, output
    assert "wrote 2 IPv4 and 1 IPv6 ranges" in output and "+ 2a03:2880::/32" in output
    written = (tmp_path / "meta.txt").read_text()
    assert f"# Source: {source}" in written
    assert [str(n) for n in parse_ranges(written)] == ["31.13.24.0/21", "157.240.0.0/16", "2a03:2880::/32"]
    assert (tmp_path / "meta.txt").stat().st_mode & 0o777 == 0o644


def test_refresh_from_a_url(site_with_file: Path, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "ranges.json").write_text('["31.13.24.0/21", "157.240.0.0/16", "57.144.0.0/14"]')
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        code, output = refresh("-c", str(site_with_file), "--from", f"{base}/ranges.json")
        assert code == 0 and "+ 57.144.0.0/14" in output, output
        before = (tmp_path / "meta.txt").read_text()
        code, output = refresh("-c", str(site_with_file), "--from", f"{base}/missing.txt")
        assert code == 1 and "answered HTTP 404" in output and "unchanged" in output
        assert (tmp_path / "meta.txt").read_text() == before
    finally:
        server.shutdown()
        server.server_close()


def test_refresh_refuses_bad_lists_and_writes_nothing(site_with_file: Path, tmp_path: Path) -> None:
    before = (tmp_path / "meta.txt").read_text()
    bad = tmp_path / "bad.txt"
    for content, message in (("31.13.24.0/21\nnot-a-cidr\n", "line 2: 'not-a-cidr'"),
                             ("# nothing\n", "lists no ranges"), ("{oops", "not valid JSON")):
        bad.write_text(content)
        code, output = refresh("-c", str(site_with_file), "--from", str(bad))
        assert code == 1 and message in output and "Traceback" not in output, output
    code, output = refresh("-c", str(site_with_file), "--from", str(tmp_path / "absent.txt"))
    assert code == 1 and "cannot read" in output
    (tmp_path / "many.txt").write_text("".join(f"10.{i}.0.0/16\n" for i in range(0, 40, 2)))
    refresh("-c", str(site_with_file), "--from", str(tmp_path / "many.txt"))
    shrunk = tmp_path / "one.txt"
    shrunk.write_text("10.0.0.0/16\n")
    code, output = refresh("-c", str(site_with_file), "--from", str(shrunk))
    assert code == 1 and "--allow-shrink" in output
    assert refresh("-c", str(site_with_file), "--from", str(shrunk), "--allow-shrink")[0] == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".meta.txt.")]  # no staging left
    assert before != (tmp_path / "meta.txt").read_text()


def test_refresh_needs_a_site_file(tmp_path: Path) -> None:
    code, output = refresh("-c", str(EXAMPLE), "--from", "x")
    assert code == 2 and "meta_ranges_file is not set" in output
    config = tmp_path / "site.toml"
    config.write_text(example_with('[security.admission]\nmeta_ranges = ["10.0.0.0/8"]'))
    code, output = refresh("-c", str(config), "--from", "x")
    assert code == 2 and "set inline" in output
