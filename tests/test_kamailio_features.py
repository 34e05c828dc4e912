"""One rendered edge for every supported Kamailio: what each version gets, and what `provision
render` and `doctor` say about it (provisioning/kamailio_features.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.edge import EXAMPLE_CONFIG
from provisioning.cli import app
from provisioning.doctor import Level, kamailio_findings
from provisioning.kamailio_features import FeatureError, features_for, parse_version
from siteconfig.model import SiteConfig


def example(**auth: object) -> SiteConfig:
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    raw.setdefault("auth", {}).update(auth)
    return SiteConfig.model_validate(raw)


def test_versions_are_read_and_the_oldest_is_56() -> None:
    assert parse_version("5.6") == (5, 6, 0)
    assert parse_version(" 6.0.1 ") == (6, 0, 1)
    for bad in ("6", "six", "6.0.1.2", ""):
        with pytest.raises(FeatureError):
            parse_version(bad)
    with pytest.raises(FeatureError, match=r"needs 5\.6 or later"):
        features_for((5, 5, 0))


def test_each_version_gets_what_it_has() -> None:
    old, six, new = features_for((5, 6, 3)), features_for((6, 0, 1)), features_for((6, 1, 4))
    assert not (old.www_challenge or old.tcp_hardening or old.tls_faces_internet or old.prom_help)
    assert six.www_challenge and six.tcp_hardening and six.tls_faces_internet
    assert not six.prom_help  # xhttp_prom's help field came with 6.1.0
    assert new.prom_help
    assert len(old.lacks()) == 4 and six.lacks() == [] == new.lacks()
    assert any("HAProxy" in line for line in old.lacks())


def test_render_says_which_kamailio_and_what_it_lacks(tmp_path: Path) -> None:
    run = CliRunner().invoke(app, ["render", "-c", str(EXAMPLE_CONFIG), "-o", str(tmp_path / "a"),
                                   "--kamailio-version", "5.6"])
    assert run.exit_code == 0, run.output
    assert "for Kamailio 5.6.0 (named)" in run.stdout
    assert "no 401 challenges" in run.stdout and "HAProxy" in run.stdout
    assert f"haproxy -c -f {(tmp_path / 'a' / 'haproxy' / 'haproxy.cfg').resolve()}" in run.stdout
    run = CliRunner().invoke(app, ["render", "-c", str(EXAMPLE_CONFIG), "-o", str(tmp_path / "b"),
                                   "--kamailio-version", "6.1.4"])
    assert run.exit_code == 0, run.output
    assert "for Kamailio 6.1.4 (named)" in run.stdout and "lacks" not in run.stdout
    assert "no 401" not in run.stdout and "haproxy -c" not in run.stdout


def test_render_refuses_a_bad_version_and_401_on_56(tmp_path: Path) -> None:
    run = CliRunner().invoke(app, ["render", "-c", str(EXAMPLE_CONFIG), "-o", str(tmp_path / "a"),
                                   "--kamailio-version", "latest"])
    assert run.exit_code == 2 and "not a Kamailio version" in run.stderr
    assert not (tmp_path / "a").exists()
    config = tmp_path / "site.toml"
    config.write_text(EXAMPLE_CONFIG.read_text(encoding="utf-8").replace(
        "challenge_code = 407", "challenge_code = 401", 1), encoding="utf-8")
    run = CliRunner().invoke(app, ["render", "-c", str(config), "-o", str(tmp_path / "b"),
                                   "--kamailio-version", "5.6.3"])
    assert run.exit_code == 1 and "needs Kamailio 6.0" in run.stderr
    assert not (tmp_path / "b" / "kamailio" / "kamailio.cfg").exists()


def test_doctor_names_the_kamailio_and_fails_what_it_cannot_do() -> None:
    (found,) = kamailio_findings(example(), features_for((5, 6, 3)), "/usr/sbin/kamailio")
    assert found.level is Level.PASS and found.subject == "Kamailio 5.6.3 at /usr/sbin/kamailio"
    assert "HAProxy" in found.cause
    (found,) = kamailio_findings(example(challenge_code=401), features_for((5, 6, 3)))
    assert found.level is Level.FAIL and "401" in found.cause
    (found,) = kamailio_findings(example(challenge_code=401), features_for((6, 1, 4)))
    assert found.level is Level.PASS and found.cause == "has every feature the edge uses"
    (found,) = kamailio_findings(example(), None)
    assert found.level is Level.WARN
