"""Property tests of ``--cfg-options`` parsing: any text gives a value or the documented one-line ConfigError."""

import ast
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from densevision.config import parse_cfg_options
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
