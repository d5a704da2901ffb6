# SPDX-License-Identifier: Apache-2.0
"""The CNI models as data (no root): registry spellings, well-formed chains, what each model may and may not
contain, unsupported paths, and the kernel-option check behind calico:ipip."""

from __future__ import annotations

import pytest

from cniprof import sysinfo
from cniprof.cni import registry
from cniprof.cni.model import EVENTS, PATHS, PLACES
from cniprof.cni.topology import ROLES
from cniprof.errors import EnvironmentProblem, UsageError
from cniprof.lab import kernel, realize
from cniprof.lab.recipes import RECIPES
from cniprof.probes.plan import DEFAULT_EVENTS

ALL = [(m.cni, m.mode) for m in registry.models()]


def test_supported_spellings() -> None:
    assert registry.supported() == [
        "flannel", "flannel:vxlan", "flannel:host-gw",
        "calico", "calico:ipip", "calico:bgp", "calico:vxlan",
        "cilium", "cilium:vxlan", "cilium:native",
        "bridge", "macvlan", "host",
    ]


@pytest.mark.parametrize(("spec", "expected"), [
    ("flannel", ("flannel", "vxlan")), ("calico", ("calico", "ipip")), ("Calico:BGP", ("calico", "bgp")),
    ("bridge", ("bridge", "bridge")), ("macvlan", ("macvlan", "bridge")), ("host", ("host", "network")),
    ("cilium", ("cilium", "vxlan")),
])
def test_defaults_are_the_real_cnis(spec: str, expected: tuple[str, str]) -> None:
    m = registry.parse(spec)
    assert (m.cni, m.mode) == expected


@pytest.mark.parametrize("spec", ["cilium:geneve", "flannel:ipip", "weave:vxlan"])
def test_unknown_spec_lists_what_is_supported(spec: str) -> None:
    with pytest.raises(UsageError, match="supported: flannel, flannel:vxlan"):
        registry.parse(spec)


def test_every_model_has_a_lab_recipe_and_back() -> None:
    """realize.parse_cni accepts the registry's models without loading the recipes: they must be the same."""
    assert set(RECIPES) == set(ALL) and len(RECIPES) == len(ALL)
    assert realize.supported() == [f"{cni}:{mode}" for cni, mode in RECIPES]
    for cni, mode in ALL:
        assert realize.parse_cni(f"{cni}:{mode}") == (cni, mode)


@pytest.mark.parametrize(("cni", "mode"), ALL)
def test_chains_are_well_formed(cni: str, mode: str) -> None:
    model = registry.parse(f"{cni}:{mode}")
    assert model.chains and len(set(model.paths)) == len(model.paths)
    for chain in model.chains:
        assert chain.path in PATHS
        assert bool(chain.reverse) == (chain.path == "pod-to-host")  # only pod-to-host is asymmetric
        for steps in (chain.steps, chain.reverse):
            if not steps:
                continue
            assert steps[0].hop_role == "" and steps[0].event == "queue"  # packets start where they are queued
            assert all(s.hop_role for s in steps[1:])
            for s in steps:
                assert s.place in PLACES and s.event in EVENTS
                assert s.device in ROLES or (s.device == "socket" and s.event == "copy")
            assert len(set(steps)) == len(steps)
        # the default probe events (no rx) keep the first and last points of the path
        lean = chain.restricted(set(DEFAULT_EVENTS) | {"copy"})
        assert lean.steps[0] == chain.steps[0] and lean.steps[-1].device == chain.steps[-1].device


def test_tunnels_only_where_the_model_has_one() -> None:
    for model in registry.models():
        cross = model.chain("cross-node") if "cross-node" in model.paths else None
        if cross is None:
            continue
        devices = {s.device for s in cross.steps}
        roles = " ".join(s.hop_role for s in cross.steps)
        if model.mode == "vxlan":
            assert "vxlan" in devices and "vxlan encap" in roles and "vxlan decap" in roles
        elif model.mode == "ipip":
            assert "tunnel" in devices and "ipip encap" in roles
        else:
            assert not devices & {"vxlan", "tunnel"} and "encap" not in roles, model.spec
    for model in registry.models():  # traffic that stays on one node never meets a tunnel
        for path in ("same-node", "pod-to-host"):
            if path in model.paths:
                devices = {s.device for s in (*model.chain(path).steps, *model.chain(path).reverse)}
                assert not devices & {"vxlan", "tunnel"}, model.spec
                assert "underlay" not in devices or model.cni == "macvlan", model.spec  # macvlan's parent


def test_calico_has_no_bridge_flannel_does() -> None:
    for mode in ("bgp", "vxlan", "ipip"):
        for chain in registry.parse(f"calico:{mode}").chains:
            assert "bridge" not in {s.device for s in (*chain.steps, *chain.reverse)}
    assert "bridge" in {s.device for s in registry.parse("flannel:host-gw").chain("cross-node").steps}


@pytest.mark.parametrize(("spec", "path", "why"), [
    ("bridge", "cross-node", "one node"),
    ("macvlan", "pod-to-host", "cannot reach their own node"),
    ("host", "same-node", "the nodes themselves"),
    ("host", "pod-to-host", "the nodes themselves"),
])
def test_missing_path_is_a_clear_usage_error(spec: str, path: str, why: str) -> None:
    model = registry.parse(spec)
    with pytest.raises(UsageError) as err:
        model.chain(path)
    msg = str(err.value)
    assert f"has no {path} path" in msg and f"supports: {', '.join(model.paths)}" in msg and why in msg


def test_default_path() -> None:
    assert registry.parse("bridge").default_path == "same-node"
    assert registry.parse("host").default_path == "cross-node"


def test_kernel_without_ipip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysinfo, "_config", lambda: {"CONFIG_NET_IPIP": "n", "CONFIG_VXLAN": "y"})
    with pytest.raises(EnvironmentProblem, match="calico:ipip needs IPIP tunnels .*without CONFIG_NET_IPIP"):
        kernel.require("calico:ipip", registry.parse("calico").requires)
    kernel.require("calico:vxlan", registry.parse("calico:vxlan").requires)  # y: fine
    # an option the configuration does not list was not built either
    assert kernel.missing((("macvlan devices", "CONFIG_MACVLAN"),)) == [("macvlan devices", "CONFIG_MACVLAN")]


def test_kernel_with_ipip_as_module_or_unknown_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysinfo, "_config", lambda: {"CONFIG_NET_IPIP": "m"})
    kernel.require("calico:ipip", registry.parse("calico").requires)
    monkeypatch.setattr(sysinfo, "_config", lambda: None)  # no configuration: the recipe's attempt decides
    kernel.require("calico:ipip", registry.parse("calico").requires)
