"""from_mapping: typed dataclasses from plain mappings, every problem one line naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from mordasr.schema import SchemaError, from_mapping


@dataclass
class Inner:
    top_k: int = 8
    scale: float = 1.0


@dataclass
class Outer:
    name: str
    mode: Literal["fast", "exact"] = "fast"
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    pair: tuple[float, float] = (0.0, 1.0)
    weights: dict[str, float] = field(default_factory=dict)
    folder: Path | None = None
    flag: bool = False


@dataclass
class Checked:
    size: int = 1

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("size must be >= 1")


@dataclass
class Holder:
    checked: Checked = field(default_factory=Checked)


def _error(cls: type, data: object, **kwargs: object) -> str:
    with pytest.raises(SchemaError) as caught:
        from_mapping(cls, data, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_absent_keys_take_the_fields_defaults() -> None:
    assert from_mapping(Outer, {"name": "a"}) == Outer(name="a")


def test_values_are_converted_to_their_fields_types() -> None:
    built = from_mapping(
        Outer,
        {
            "name": "a",
            "inner": {"top_k": 2, "scale": 3},
            "tags": ("x", "y"),
            "pair": [0, 0.5],
            "weights": {"l1": 1},
            "folder": "out",
        },
    )
    assert built.inner == Inner(top_k=2, scale=3.0) and isinstance(built.inner.scale, float)
    assert built.tags == ["x", "y"]
    assert built.pair == (0.0, 0.5)
    assert built.weights == {"l1": 1.0}
    assert built.folder == Path("out")


def test_an_unknown_key_is_named_with_the_closest_field() -> None:
    assert _error(Outer, {"name": "a", "nmae": "b"}) == "nmae: unknown key (did you mean 'name'?)"


def test_an_unknown_key_with_no_close_field_is_named_alone() -> None:
    assert _error(Outer, {"name": "a", "zzz": 1}) == "zzz: unknown key"


def test_a_missing_required_key_is_named() -> None:
    assert _error(Outer, {}) == "name: required key is missing"


def test_a_value_of_the_wrong_type_names_the_expected_type_and_the_value() -> None:
    assert _error(Outer, {"name": 3}) == "name: expected str, got int 3"


def test_a_nested_problem_names_the_dotted_key_path() -> None:
    message = _error(Outer, {"name": "a", "inner": {"top_k": "x"}})
    assert message == "inner.top_k: expected int, got str 'x'"


def test_the_source_and_the_outer_key_come_first() -> None:
    message = _error(Inner, {"top_k": "x"}, source="config.yaml", key="model.mor")
    assert message == "config.yaml: model.mor.top_k: expected int, got str 'x'"


def test_a_literal_takes_only_its_values() -> None:
    assert from_mapping(Outer, {"name": "a", "mode": "exact"}).mode == "exact"
    message = _error(Outer, {"name": "a", "mode": "slow"})
    assert message == "mode: expected one of 'fast', 'exact', got str 'slow'"


def test_an_optional_value_takes_null_or_its_type() -> None:
    assert from_mapping(Outer, {"name": "a", "limit": None}).limit is None
    assert from_mapping(Outer, {"name": "a", "limit": 4}).limit == 4
    message = _error(Outer, {"name": "a", "limit": 2.5})
    assert message == "limit: expected int or null, got float 2.5"


def test_bool_and_int_are_not_mistaken_for_each_other() -> None:
    assert _error(Outer, {"name": "a", "flag": 1}) == "flag: expected bool, got int 1"
    assert _error(Inner, {"top_k": True}) == "top_k: expected int, got bool True"


def test_a_list_item_of_the_wrong_type_is_named_by_its_index() -> None:
    assert _error(Outer, {"name": "a", "tags": ["x", 2]}) == "tags[1]: expected str, got int 2"


def test_a_tuple_of_the_wrong_length_is_refused() -> None:
    message = _error(Outer, {"name": "a", "pair": [0.5]})
    assert message == "pair: expected a list of 2 (float, float), got list [0.5]"


def test_a_number_written_as_text_gets_a_yaml_hint() -> None:
    message = _error(Inner, {"scale": "1e-4"})
    assert message.endswith("(YAML reads 1e-4 as a string: write 1.0e-4)")


def test_data_that_is_not_a_mapping_is_refused() -> None:
    assert _error(Inner, [1]) == "expected a mapping (Inner), got list [1]"


def test_a_post_init_error_is_named_by_the_dataclasss_place() -> None:
    assert _error(Holder, {"checked": {"size": 0}}) == "checked: size must be >= 1"


def test_the_callers_error_type_is_raised() -> None:
    class LoadError(Exception):
        pass

    with pytest.raises(LoadError, match=r"^f\.json: zzz: unknown key$"):
        from_mapping(Outer, {"zzz": 1}, source="f.json", error=LoadError)
