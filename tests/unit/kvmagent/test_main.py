"""The composition root builds the app without connecting anything (nothing connects at import or build)."""

from __future__ import annotations

from kvmagent.main import build_app, versions
from kvmagent.settings import KvmAgentSettings


def test_the_app_serves_the_api_and_starts_the_pipeline_with_it():
    app = build_app(KvmAgentSettings(coordinator_url="http://127.0.0.1:8740", host_uuid="h1",
                                     host_token="host-token-1234"))
    assert {r.resource.canonical for r in app.router.routes()} == {"/health", "/metrics", "/v1/state",
                                                                    "/v1/consoles/{vm}/{kind}",
                                                                    "/v1/migration/volumes/{uuid}/manifest",
                                                                    "/v1/migration/volumes/{uuid}/files/{file}"}
    assert len(app.cleanup_ctx) == 1


def test_versions_name_libvirt_and_python():
    v = versions()
    assert set(v) == {"libvirt", "python"} and v["libvirt"].count(".") == 2


def test_without_network_services_the_taps_are_still_filtered_before_any_vm_starts():
    """`network_services = false` leaves DHCP/DNS/metadata/EIP out of the process, never the anti-spoofing:
    the VMs component runs after it (and so waits for a pass of it that succeeded)."""
    from types import SimpleNamespace

    from kvmagent.components import AntispoofComponent
    from kvmagent.main import vm_components

    for services in (True, False):
        settings = KvmAgentSettings(coordinator_url="http://127.0.0.1:8740", host_uuid="h1",
                                    host_token="host-token-1234", network_services=services)
        vms = SimpleNamespace(observer=SimpleNamespace())  # what the EIPs hook into
        components = {c.name: c for c in vm_components(build_app(settings), settings, vms,  # type: ignore[arg-type]
                                                        None, lambda name: None)}  # type: ignore[arg-type]
        assert isinstance(components["antispoof"], AntispoofComponent) and components["antispoof"].fails_closed
        assert "antispoof" in components["vms"].after
        assert ("flatnet" in components) is services and ("eip" in components) is services
