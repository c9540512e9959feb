"""A bad config is refused at start with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadowgrpc.config import ConfigError, Settings


def test_example_config_loads():
    from importlib import resources

    s = Settings.load(resources.files("shadowgrpc.examples").joinpath("shadow.toml"))
    fraud = s.route_for("fraud")
    assert fraud is not None and fraud.live.version == "1" and fraud.live.address == s.default_live
    assert [(t.name, t.version, t.sample_rate, t.noise_floor) for t in fraud.shadows] == [
        ("fraud-v2", "2", 1.0, False),
        ("fraud-v1-aa", "1", 0.25, True),
    ]
    assert s.admin_listen.startswith("127.0.0.1:")


@pytest.mark.parametrize(
    "doc, key",
    [
        ({"server": {"listen": "nope"}}, "server.listen"),
        ({"server": {"default_live": "0.0.0.0:8001"}}, "server.default_live"),
        ({"server": {"admin_listen": "0.0.0.0:8001"}}, "server.admin_listen"),
        ({"server": {"bogus": 1}}, "server.bogus"),
        ({"server": {"upstream_compression": "lz4"}}, "server.upstream_compression"),
        ({"routes": [{"live": {}}]}, "routes[0].model"),
        ({"routes": [{"model": "m", "shadows": [{"sample_rate": 1.5}]}]}, "routes[0].shadows[0].sample_rate"),
        ({"routes": [{"model": "m", "shadows": [{"max_in_flight": 0}]}]}, "routes[0].shadows[0].max_in_flight"),
        ({"routes": [{"model": "m", "shadows": [{"deadline_ms": "fast"}]}]}, "routes[0].shadows[0].deadline_ms"),
        ({"routes": [{"model": "m", "shadows": [{"version": "v2"}]}]}, "routes[0].shadows[0].version"),
        ({"routes": [{"model": "m", "shadows": [{"name": "a"}, {"name": "a"}]}]}, "routes[0].shadows[1].name"),
        ({"routes": [{"model": "m"}, {"model": "m"}]}, "routes[1].model"),
        ({"routes": [{"model": "m", "live": {"version": "1"}, "shadows": [{"version": "1"}]}]}, "routes[0].shadows[0].version"),
        ({"routes": {"model": "m"}}, "routes"),
        ({"server": {"poll_s": 0}}, "server.poll_s"),
        ({"routes": [{"model": "m", "live": {"version": "1"}, "shadow": "oldest"}]}, "routes[0].shadow"),
        ({"routes": [{"model": "m", "shadow": "newest"}]}, "routes[0].shadow"),  # live not pinned: newest would be live
        ({"routes": [{"model": "m", "live": {"version": "1"}, "shadow": {"newest": 1, "versions": ["2"]}}]}, "routes[0].shadow"),
        ({"routes": [{"model": "m", "live": {"version": "1"}, "shadow": {"versions": ["1"]}}]}, "routes[0].shadow.versions"),
        ({"routes": [{"model": "m", "live": {"version": "1"}, "shadow": {"versions": ["v2"]}}]}, "routes[0].shadow.versions"),
        ({"routes": [{"model": "m", "live": {"version": "1"}, "shadow": {"newest": 0}}]}, "routes[0].shadow.newest"),
        ({"routes": [{"model": "m", "live": {"version": "1"}, "shadow": {"newest": 1, "load": True}}]}, "routes[0].shadow.load"),
        ({"routes": [{"model": "m", "live": {"version": "1"}, "shadow": {"newest": 1, "bogus": 1}}]}, "routes[0].shadow.bogus"),
    ],
)
def test_bad_config_names_the_key(doc, key):
    with pytest.raises(ConfigError) as e:
        Settings.from_dict(doc)
    assert str(e.value).startswith(key + ":"), str(e.value)


def test_a_noise_floor_target_must_say_so():
    doc = {"routes": [{"model": "m", "live": {"version": "1"}, "shadows": [{"name": "aa", "version": "1", "noise_floor": True}]}]}
    assert Settings.from_dict(doc).routes[0].shadows[0].noise_floor is True
    doc["routes"][0]["shadows"][0]["noise_floor"] = "yes"
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.shadows\[0\]\.noise_floor: must be true or false"):
        Settings.from_dict(doc)


def test_unreadable_and_invalid_toml(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config"):
        Settings.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nlisten=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(bad)


def test_serve_refuses_bad_config(tmp_path: Path, capsys):
    from shadowgrpc.cli import main

    bad = tmp_path / "c.toml"
    bad.write_text('[[routes]]\nmodel = "m"\n[[routes.shadows]]\nsample_rate = 2\n')
    assert main(["serve", "--config", str(bad)]) == 2
    assert "routes[0].shadows[0].sample_rate: must be in [0, 1]" in capsys.readouterr().err


def test_log_table_defaults_and_errors_name_the_key():
    from shadowgrpc.config import Settings

    assert not Settings.from_dict({}).log.enabled
    log = Settings.from_dict({"log": {"path": "/x", "sample_rate": 0.25, "keep_inputs": True}}).log
    assert (log.path, log.sample_rate, log.keep_inputs, log.flush_rows, log.flush_s, log.max_disk_mb) == ("/x", 0.25, True, 20000, 5.0, 10240)
    for bad, msg in [
        ({"sample_rate": 0.5}, "log.path: required"),
        ({"path": "/x", "sample_rate": 2}, "log.sample_rate"),
        ({"path": "/x", "flush_rows": 0}, "log.flush_rows"),
        ({"path": "/x", "keep_inputs": "yes"}, "log.keep_inputs: must be true or false"),
        ({"path": "/x", "flush": 1}, "log.flush: unknown key"),
    ]:
        with pytest.raises(ConfigError, match=msg.replace(".", r"\.")):
            Settings.from_dict({"log": bad})


def test_auto_shadow_config():
    s = Settings.from_dict({"server": {"poll_s": 2}, "routes": [
        {"model": "fraud", "live": {"version": "1"}, "shadow": "newest"},
        {"model": "b", "live": {"model": "fraud", "version": "1"},
         "shadow": {"newest": 2, "model": "fraud_next", "load": True, "repository": "/models", "sample_rate": 0.5, "deadline_ms": 250}},
        {"model": "c", "live": {"version": "1"}, "shadow": {"versions": ["3", "4"]}},
    ]})  # fmt: skip
    a, b, c = (r.auto for r in s.routes)
    assert s.poll_s == 2 and (a.policy, a.model, a.address, a.load) == ("newest", "fraud", s.default_live, False)
    assert (b.policy, b.model, b.load, b.repository, b.sample_rate, b.deadline_s) == ("newest 2", "fraud_next", True, "/models", 0.5, 0.25)
    assert c.policy == "versions 3,4" and c.versions == ("3", "4")
    # another model needs no pinned live version: its versions are never live's
    assert Settings.from_dict({"routes": [{"model": "m", "shadow": {"newest": 1, "model": "m2"}}]}).routes[0].auto.model == "m2"
