import pytest

from tests.tool_loader import load_tool


@pytest.fixture(scope="module")
def model_info():
    return load_tool("model_info")


@pytest.mark.parametrize(
    ("name", "num_classes", "trainable", "with_statistics"),
    [
        ("densenet121", 1000, 7_978_856, 8_062_504),
        ("fcdensenet56", 11, 1_376_795, 1_397_963),
        ("fcdensenet103", 11, 9_322_091, 9_425_163),  # the paper's 9.4 M counted BatchNorm statistics too
    ],
)
def test_counts_match_the_reference_figures(model_info, name, num_classes, trainable, with_statistics):
    assert model_info.describe(name, num_classes) == {
        "model": name,
        "trainable": trainable,
        "with BN statistics": with_statistics,
    }


def test_prints_a_table_and_names_unknown_models(model_info, capsys):
    assert model_info.main(["fcdensenet67", "--num-classes", "11"]) == 0
    assert "3,463,243" in capsys.readouterr().out
    assert model_info.main(["densnet121"]) == 1
    assert "did you mean 'densenet121'" in capsys.readouterr().err
