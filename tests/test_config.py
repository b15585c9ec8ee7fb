"""Config loading: every error names its key path; hostile input never crashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamkit.config import AppConfig, load_config, parse_config
from streamkit.errors import ConfigError

GOOD = """
feeds:
  - exchange: binance
    symbols: [BTC-USDT]
    channels: [trades, bbo]
    transport: {recv_queue_size: 1024}
    stale_after: 5
sinks:
  - type: jsonl
    path: out.jsonl
"""


def problems(text: str | bytes) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


def test_good_config_is_typed() -> None:
    config = parse_config(GOOD)
    assert isinstance(config, AppConfig)
    assert config.feeds[0].transport.recv_queue_size == 1024
    assert config.feeds[0].stale_after == 5.0
    assert config.sinks[0].path == "out.jsonl"  # type: ignore[union-attr]
    # unspecified transport options keep curl_cffi 0.16's defaults, pinned
    assert config.feeds[0].transport.send_queue_size == 128
    assert config.feeds[0].transport.max_message_size == 4 * 1024 * 1024


def test_unknown_nested_key_names_path_and_suggests() -> None:
    text = GOOD.replace("recv_queue_size", "recv_queue_sise")
    [(path, msg)] = problems(text)
    assert path == "feeds[0].transport.recv_queue_sise"
    assert "unknown key" in msg and "recv_queue_size" in msg


def test_wrong_type_names_path() -> None:
    [(path, msg)] = problems(GOOD.replace("stale_after: 5", "stale_after: soon"))
    assert path == "feeds[0].stale_after"
    assert "float" in msg


def test_out_of_range_value() -> None:
    [(path, msg)] = problems(GOOD.replace("recv_queue_size: 1024", "recv_queue_size: 0"))
    assert path == "feeds[0].transport.recv_queue_size"
    assert ">= 1" in msg


def test_missing_required_key() -> None:
    [(path, msg)] = problems("feeds: [{exchange: binance, channels: [trades]}]")
    assert path == "feeds[0].symbols"
    assert "missing" in msg


def test_unknown_top_level_key_suggests() -> None:
    [(path, msg)] = problems("feedz: []")
    assert path == "feedz"
    assert "feeds" in msg


def test_unknown_sink_type() -> None:
    [(path, msg)] = problems(GOOD.replace("type: jsonl", "type: kafka"))
    assert path == "sinks[0].type"
    assert "kafka" in msg


def test_empty_and_non_mapping_files() -> None:
    assert "empty" in problems("")[0][1]
    assert "mapping" in problems("- a\n- b\n")[0][1]


def test_non_utf8_bytes() -> None:
    [(_path, msg)] = problems(b"feeds: \xff\xfe")
    assert "UTF-8" in msg


def test_yaml_alias_bomb_is_refused_without_expanding() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    [(_path, msg)] = problems(bomb)
    assert "aliases" in msg


def test_invalid_yaml_syntax() -> None:
    [(_path, msg)] = problems("feeds: [unclosed")
    assert "invalid YAML" in msg


def test_simulator_url_needs_simulator_section() -> None:
    text = GOOD.replace("stale_after: 5", "stale_after: 5\n    url: simulator")
    [(path, _msg)] = problems(text)
    assert path == "feeds[0].url"


def test_duplicate_feed_names() -> None:
    text = """
feeds:
  - {exchange: binance, symbols: [A-B], channels: [trades]}
  - {exchange: binance, symbols: [C-D], channels: [trades]}
"""
    [(path, _msg)] = problems(text)
    assert path == "feeds[1].name"


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (2 * 1024 * 1024))
    with pytest.raises(ConfigError, match="1 MiB"):
        load_config(huge)
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    assert load_config(good).feeds[0].exchange == "binance"


def test_demo_config_is_valid() -> None:
    config = load_config(Path(__file__).parent.parent / "examples" / "demo.yaml")
    assert config.simulator is not None
    assert config.feeds[0].url == "simulator"


def test_readme_config_example_is_valid() -> None:
    """The README's annotated config must stay a config that loads."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text[text.index("## Configuration") :]
    start = section.index("```yaml") + len("```yaml")
    config = parse_config(section[start : section.index("```", start)])
    assert [s.__struct_config__.tag for s in config.sinks] == ["jsonl", "console", "nats", "redis"]
    assert config.metrics is not None and config.simulators
