"""nova.conf read as nova-api reads it: [cinder], [oslo_policy], [oslo_middleware], [api]."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import member_headers
from voltrace import nova_conf
from voltrace.cinder_sim import CinderSimulator
from voltrace.client import NovaClient
from voltrace.server import EmbeddedServer, ServeConfig, build_service


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "nova.conf"
    path.write_text(text)
    return str(path)


def test_novas_defaults_when_the_file_says_nothing(tmp_path: Path) -> None:
    """An empty nova.conf means nova's defaults: the catalog, 3 retries, no timeout."""
    conf = nova_conf.load(write(tmp_path, "[DEFAULT]\n"))
    assert conf.cinder.endpoint_template is None  # volumev3 from X-Service-Catalog
    assert conf.cinder.catalog_info == "volumev3::publicURL"
    assert conf.cinder.http_retries == 3
    assert conf.cinder.timeout is None
    assert conf.max_request_body_size == 114688
    assert conf.enable_proxy_headers_parsing is False
    assert conf.policy_file is None


def test_cinder_and_tls_options_are_read_from_their_sections(tmp_path: Path) -> None:
    """[cinder] carries nova's own options and keystoneauth's session options."""
    conf = nova_conf.load(
        write(
            tmp_path,
            (
                "[cinder]\nendpoint_template = http://cinder:8776/v3/%(project_id)s\n"
                "http_retries = 1\ntimeout = 30\ncafile = /etc/ssl/ca.pem\n"
                "os_region_name = RegionTwo\n"
                "[oslo_policy]\npolicy_file = nova-policy.yaml\n"
                "[oslo_middleware]\nmax_request_body_size = 2048\n"
                "[database]\nconnection = mysql+pymysql://nova:secret@db/nova\n"
            ),
        )
    )
    assert conf.cinder.endpoint_template == "http://cinder:8776/v3/%(project_id)s"
    assert (conf.cinder.http_retries, conf.cinder.timeout) == (1, 30.0)
    assert conf.cinder.cafile == "/etc/ssl/ca.pem"
    assert conf.cinder.os_region_name == "RegionTwo"
    assert conf.policy_file == str(tmp_path / "nova-policy.yaml")
    assert conf.max_request_body_size == 2048


def test_invalid_values_are_refused_with_the_option_named(tmp_path: Path) -> None:
    """oslo.config's own validation: http_retries has a minimum of 0."""
    with pytest.raises(nova_conf.NovaConfError, match="http_retries"):
        nova_conf.load(write(tmp_path, "[cinder]\nhttp_retries = -1\n"))


def test_a_server_built_from_nova_conf_talks_to_its_cinder(tmp_path: Path) -> None:
    """The endpoint_template from nova.conf is where the create goes."""
    with CinderSimulator(deterministic=True) as sim:
        conf = nova_conf.load(
            write(
                tmp_path,
                (f"[cinder]\nendpoint_template = {sim.endpoint_template}\nhttp_retries = 0\n"),
            )
        )
        config = ServeConfig(cinder=conf.cinder, policy_file=conf.policy_file)
        with EmbeddedServer(build_service(config)) as server:
            client = NovaClient(server.url)
            answer = client.create_volume({"size": 1}, headers=member_headers())
            client.close()
        assert answer.status == 200, answer.body
        assert [r.method for r in sim.recorded] == ["POST", "GET"]
