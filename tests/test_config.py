import dataclasses
import typing

import pytest

from align.config import ConfigError, TrainConfig, load_config, parse_override
from align.rm.train import Config as RMConfig


def test_overrides_reach_nested_fields_and_coerce_types(tmp_path):
    config = load_config(RMConfig, None, ["loss.type=margin", "loss.margin_scale=0.25", "batch_size=4",
                                          "learning_rate=1e-4", "heads=[overall,faithfulness]", "resume=true"])
    assert config.loss.type == "margin" and config.loss.margin_scale == 0.25
    assert config.batch_size == 4 and config.learning_rate == pytest.approx(1e-4)
    assert config.heads == ["overall", "faithfulness"] and config.resume is True


def test_yaml_file_then_overrides_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("batch_size: 16\nloss:\n  type: flip\n  flag_threshold: -0.5\n")
    config = load_config(RMConfig, str(path), ["batch_size=2"])
    assert config.batch_size == 2
    assert config.loss.type == "flip" and config.loss.flag_threshold == -0.5


@pytest.mark.parametrize("override, message", [
    ("learning_rat=1e-5", "learning_rat: unknown key (did you mean learning_rate"),
    ("loss.typo=1", "loss.typo: unknown key"),
    ("batch_size=two", "batch_size: expected an integer"),
    ("learning_rate=-1e-5", "learning_rate: expected a positive number"),
    ("loss.type=huber", "loss.type: expected one of"),
    ("resume=maybe", "resume: expected true or false"),
    ("data=/nonexistent/pairs.jsonl", "data: file not found: /nonexistent/pairs.jsonl"),
    ("eval_fraction=1.5", "eval_fraction: expected a number in [0, 1)"),
    ("loss.flag_quantile=2", "loss.flag_quantile: expected a number in (0, 1)"),
    ("heads=[a,a]", "heads: expected distinct head names"),
])
def test_bad_values_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(RMConfig, None, [override])
    assert message in str(error.value)


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(RMConfig, str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(RMConfig, str(bad))


def test_parse_override_reads_yaml_scalars():
    assert parse_override("a.b=0.5") == ("a.b", 0.5)
    assert parse_override("name=hello world") == ("name", "hello world")
    assert parse_override("empty=") == ("empty", None)
    with pytest.raises(ConfigError):
        parse_override("novalue")


def _all_fields(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield cls, f
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _all_fields(hints[f.name])


@pytest.mark.parametrize("config_class", [TrainConfig, RMConfig])
def test_every_field_is_documented(config_class):
    undocumented = [f"{cls.__name__}.{f.name}" for cls, f in _all_fields(config_class) if not f.metadata.get("help")]
    assert undocumented == []
