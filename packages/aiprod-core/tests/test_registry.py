"""Plugin discovery: entry points, broken plugins, duplicates, allow/block lists, strict mode."""

import importlib.metadata as md
import json
import types

import pytest
import toy
from click.testing import CliRunner

from aiprod_core import ComponentSpec, hookimpl, registry
from aiprod_core.errors import ConfigError, PluginError


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch):
    """CI runs with AIPROD_STRICT_PLUGINS=1; these tests set the switches themselves."""
    for var in ("AIPROD_STRICT_PLUGINS", "AIPROD_LOAD_PLUGINS", "AIPROD_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)


def _plugin(name, kind="toy"):
    @hookimpl
    def aiprod_register_components():
        return [ComponentSpec(kind=kind, name=name, factory=toy.Toy, config_model=toy.ToyConfig, presets={"tiny": {}})]

    return types.SimpleNamespace(aiprod_register_components=aiprod_register_components, __name__=f"plugin_{name}")


def _fake_entry_points(monkeypatch, eps):
    monkeypatch.setattr(registry.md, "entry_points", lambda group: [e for e in eps if e.group == group])


def test_duplicate_component_names_both_distributions():
    reg = registry.Registry()
    reg.register_module(_plugin("same"), "a", distribution="dist-a")
    with pytest.raises(PluginError) as err:
        reg.register_module(_plugin("same"), "b", distribution="dist-b")
    assert "dist-a" in str(err.value) and "dist-b" in str(err.value)
    reg.register_module(_plugin("same", kind="other-kind"), "c", distribution="dist-c")  # other kind: fine


def test_unmarked_functions_are_ignored():
    mod = types.SimpleNamespace(aiprod_register_components=lambda: 1 / 0, __name__="unmarked")
    reg = registry.Registry()
    reg.register_module(mod, "unmarked")
    assert reg.components == {}


def test_broken_plugin_is_reported_and_others_load(monkeypatch):
    eps = [
        md.EntryPoint("core", "aiprod_core.plugin", "aiprod"),
        md.EntryPoint("broken", "aiprod_no_such_module_xyz", "aiprod"),
        md.EntryPoint("toy", "toy", "aiprod"),
    ]
    _fake_entry_points(monkeypatch, eps)
    reg = registry.Registry().load_entrypoints()
    assert ("toy", "toy") in reg.components
    broken = next(p for p in reg.plugins if p.name == "broken")
    assert "ModuleNotFoundError" in broken.error
    assert len(reg.errors) == 1

    monkeypatch.setattr(registry, "_REGISTRY", reg)
    from aiprod_core.cli import cli

    res = CliRunner().invoke(cli, ["plugins", "--json"])
    assert res.exit_code == 0
    payload = json.loads(res.output)
    assert any(p["name"] == "broken" and p["error"] for p in payload["plugins"])
    res = CliRunner().invoke(cli, ["plugins"])
    assert "broken" in res.output and "ERROR" in res.output and "toy" in res.output


def test_strict_mode_reraises(monkeypatch):
    _fake_entry_points(monkeypatch, [md.EntryPoint("broken", "aiprod_no_such_module_xyz", "aiprod")])
    monkeypatch.setenv("AIPROD_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="broken"):
        registry.Registry().load_entrypoints()


def test_allow_and_block_lists(monkeypatch):
    eps = [md.EntryPoint("core", "aiprod_core.plugin", "aiprod"), md.EntryPoint("toy", "toy", "aiprod")]
    _fake_entry_points(monkeypatch, eps)
    monkeypatch.setenv("AIPROD_DISABLE_PLUGINS", "toy")
    assert [p.name for p in registry.Registry().load_entrypoints().plugins] == ["core"]
    monkeypatch.delenv("AIPROD_DISABLE_PLUGINS")
    monkeypatch.setenv("AIPROD_LOAD_PLUGINS", "nothing-else")
    assert [p.name for p in registry.Registry().load_entrypoints().plugins] == ["core"]
    monkeypatch.setenv("AIPROD_LOAD_PLUGINS", "toy")
    assert [p.name for p in registry.Registry().load_entrypoints().plugins] == ["core", "toy"]


def test_unknown_component_lists_installed():
    reg = registry.Registry()
    reg.register_module(toy, "toy")
    with pytest.raises(ConfigError) as err:
        reg.component("toy", "nope")
    assert "installed: toy (toy)" in str(err.value)


def test_plugin_commands_are_added(monkeypatch):
    import click

    @hookimpl
    def aiprod_register_commands(cli):
        @cli.command("hello-plugin")
        def hello():
            click.echo("hi from plugin")

    reg = registry.Registry()
    reg.register_module(types.SimpleNamespace(aiprod_register_commands=aiprod_register_commands, __name__="cmds"), "cmds")
    group = click.Group()
    reg.add_commands(group)
    assert CliRunner().invoke(group, ["hello-plugin"]).output == "hi from plugin\n"


# -- issue 19: first-party names cannot be taken over; unresolvable factories are load errors -------------------
class _EP:
    """An entry point with a distribution (importlib's own needs an installed one)."""

    group = "aiprod"

    def __init__(self, name, module, dist):
        self.name, self.value, self._module = name, module.__name__, module
        self.dist = types.SimpleNamespace(name=dist, version="1.0")

    def load(self):
        return self._module


def _claims(tag):
    from aiprod_core import PipelineSpec

    @hookimpl
    def aiprod_register_components():
        return [ComponentSpec(kind="speech-synthesizer", name="fastspeech2-hifigan", factory=toy.Toy,
                              config_model=toy.ToyConfig, description=tag),
                ComponentSpec(kind="toy", name=f"only-{tag}", factory=toy.Toy, config_model=toy.ToyConfig)]

    @hookimpl
    def aiprod_register_pipelines():
        return [PipelineSpec(name="tts", config_model=toy.ToyPipelineConfig, run=toy.run_toy, description=tag)]

    return types.SimpleNamespace(aiprod_register_components=aiprod_register_components,
                                 aiprod_register_pipelines=aiprod_register_pipelines, __name__=f"plugin_{tag}")


@pytest.mark.parametrize("third_party_name", ["aaa", "zzz"])
def test_first_party_wins_a_clash_whatever_the_entry_point_order(monkeypatch, capsys, third_party_name):
    eps = [_EP("tts", _claims("first"), "aiprod-tts"), _EP(third_party_name, _claims("third"), "evil-tts")]
    _fake_entry_points(monkeypatch, eps)
    reg = registry.Registry().load_entrypoints()
    comp = reg.component("speech-synthesizer", "fastspeech2-hifigan")
    assert comp.distribution == "aiprod-tts" and comp.description == "first"
    assert reg.pipeline("tts").distribution == "aiprod-tts"
    assert ("toy", "only-third") in reg.components  # the rest of the third-party plugin still loads
    assert len(reg.warnings) == 2 and all("'aiprod-tts'" in w and "'evil-tts'" in w for w in reg.warnings)
    assert "aiprod: warning:" in capsys.readouterr().err
    third = next(p for p in reg.plugins if p.distribution == "evil-tts")
    assert third.warnings and "speech-synthesizer/fastspeech2-hifigan" not in third.components

    monkeypatch.setenv("AIPROD_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="'aiprod-tts'.*'evil-tts'"):
        registry.Registry().load_entrypoints()


def test_first_party_registered_after_a_third_party_replaces_it():
    reg = registry.Registry()
    reg.register_module(_claims("third"), "evil", distribution="evil-tts")
    reg.register_module(_claims("first"), "tts", distribution="aiprod_tts")  # the name normalises
    assert reg.component("speech-synthesizer", "fastspeech2-hifigan").description == "first"
    evil = next(p for p in reg.plugins if p.name == "evil")
    assert evil.components == ["toy/only-third"] and evil.pipelines == []


def test_a_factory_whose_module_does_not_exist_is_a_load_error(monkeypatch):
    @hookimpl
    def aiprod_register_components():
        return [ComponentSpec(kind="toy", name="ghost", factory="aiprod_no_such_module_xyz.model:Ghost",
                              config_model=toy.ToyConfig),
                ComponentSpec(kind="toy", name="real", factory=toy.Toy, config_model=toy.ToyConfig)]

    mod = types.SimpleNamespace(aiprod_register_components=aiprod_register_components, __name__="ghosts")
    _fake_entry_points(monkeypatch, [_EP("ghosts", mod, "ghost-dist")])
    reg = registry.Registry().load_entrypoints()
    info = reg.plugins[0]
    assert info.error and "No module named 'aiprod_no_such_module_xyz'" in info.error and "ghost" in info.error
    assert ("toy", "real") in reg.components and ("toy", "ghost") not in reg.components
    from aiprod_core.cli import cli

    monkeypatch.setattr(registry, "_REGISTRY", reg)
    assert "ERROR" in CliRunner().invoke(cli, ["plugins"]).output  # never listed as ok
    monkeypatch.setenv("AIPROD_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="aiprod_no_such_module_xyz"):
        registry.Registry().load_entrypoints()


def test_a_broken_module_at_use_time_is_one_line():
    spec = ComponentSpec(kind="toy", name="x", factory="json:no_such_attr", config_model=toy.ToyConfig)
    with pytest.raises(PluginError, match="cannot load 'json:no_such_attr'"):
        spec.load_factory()
