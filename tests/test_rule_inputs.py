"""Optional rule inputs as the scripts read them."""

from types import SimpleNamespace

from copydetect.rule_inputs import input_files, optional_file


def test_absent_empty_single_and_listed_inputs() -> None:
    inputs = SimpleNamespace(empty=[], one="a.csv", many=["a.csv", "b.csv"])
    assert input_files(inputs, "missing") == [] and input_files(inputs, "empty") == []
    assert input_files(inputs, "one") == ["a.csv"]
    assert input_files(inputs, "many") == ["a.csv", "b.csv"]
    assert optional_file(inputs, "empty") is None and optional_file(inputs, "many") == "a.csv"
