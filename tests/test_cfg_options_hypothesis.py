"""Property tests of ``--cfg-options``: any text parses to a value or is the documented one-line ConfigError, and any
override takes effect wherever the config uses what it changes, or is refused in one line."""

import ast
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from densevision.config import load_config, parse_cfg_options
from densevision.registry import ConfigError

# Values near the grammar's edges: literal openers and closers, quotes, signs, digits, separators, plain words.
VALUE_TEXT = st.one_of(
    st.text(),
    st.text(alphabet="[](){}'\",:=.+-_ eEjx0123456789abcNoneTrue\\\n\t", max_size=30),
    st.lists(
        st.sampled_from(["[", "]", "(", ")", "{", "}", "'", '"', ",", ":", "1", "-2.5e3", "None", "x", " "]),
        max_size=12,
    ).map("".join),
)
KEY_TEXT = st.one_of(st.text(min_size=1), st.text(alphabet=string.ascii_lowercase + "._0", min_size=1, max_size=12))
LITERAL_START = "[({'\"+-0123456789"
# No example database: the tests leave no .hypothesis/ folder behind, and each run draws its own examples.
CHECK = settings(max_examples=200, deadline=None, database=None)


def _documented_error(err: ConfigError, item: str) -> bool:
    message = str(err)
    if "\n" in message or "\r" in message:
        return False
    if "must look like key=value" in message:
        return repr(item) in message
    key, _, raw = item.partition("=")
    return message.startswith(f"cannot parse the value {raw.strip()!r} of config option {key.strip()!r}: ")


@CHECK
@given(key=KEY_TEXT, value=VALUE_TEXT)
def test_any_key_value_parses_or_is_a_one_line_config_error(key: str, value: str) -> None:
    item = f"{key}={value}"
    try:
        parsed = parse_cfg_options([item])
    except ConfigError as err:
        assert _documented_error(err, item), str(err)
        return
    ((parsed_key, parsed_value),) = parsed.items()
    raw = item.partition("=")[2].strip()
    assert parsed_key == item.partition("=")[0].strip()
    try:
        expected = ast.literal_eval(raw)
    except Exception:  # not a literal: the text itself, and it does not start like one
        assert parsed_value == raw and (raw == "" or raw[0] not in LITERAL_START)
    else:
        assert repr(parsed_value) == repr(expected)  # repr: nan inside a list is not equal to itself


@CHECK
@given(item=st.text())
def test_any_text_parses_or_is_a_one_line_config_error(item: str) -> None:
    try:
        parsed = parse_cfg_options([item])
    except ConfigError as err:
        assert _documented_error(err, item), str(err)
    else:
        assert len(parsed) == 1


@CHECK
@given(word=st.text(alphabet=string.ascii_letters + "/_.", min_size=1, max_size=20))
def test_plain_words_and_paths_stay_strings(word: str) -> None:
    value = parse_cfg_options([f"k={word}"])["k"]
    try:
        ast.literal_eval(word)
    except Exception:
        assert value == word.strip()


LAYERED = """
data_root = "data"
pipeline = [dict(type="Flip", p=0.5)]
dataset = dict(type="Set", root=data_root, pipeline=pipeline)
train_dataloader = dict(batch_size=2, dataset=dataset)
test_dataloader = dict(batch_size=1, dataset=dataset)
"""
KEY_PART = st.sampled_from(
    ["data_root", "pipeline", "dataset", "train_dataloader", "batch_size", "root", "type", "p", "0", "1", "x", "batch"]
)
REFUSALS = ("unknown config key ", "config key ", "override ")


@pytest.fixture(scope="module")
def layered_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "layered.py"
    path.write_text(LAYERED)
    return path


def _at(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


@CHECK
@given(parts=st.lists(KEY_PART, min_size=1, max_size=4), add=st.booleans(), value=st.integers())
def test_an_override_reaches_every_value_built_from_it_or_is_one_refusal_line(
    layered_config: Path, parts: list[str], add: bool, value: int
) -> None:
    key = ".".join(parts)
    try:
        cfg = load_config(layered_config, [f"{'+' if add else ''}{key}={value}"])
    except ConfigError as err:
        assert "\n" not in str(err) and str(err).startswith(REFUSALS), str(err)
        return
    assert _at(cfg, key) == value
    rest = ".".join(parts[1:])
    for loader in ("train_dataloader", "test_dataloader"):  # both read the variables the override changed
        if parts[0] == "dataset":
            assert _at(cfg[loader], f"dataset.{rest}" if rest else "dataset") == value
        elif parts[0] == "pipeline":
            assert _at(cfg[loader], f"dataset.pipeline.{rest}" if rest else "dataset.pipeline") == value
        elif parts[0] == "data_root":
            assert _at(cfg[loader], "dataset.root") == value
