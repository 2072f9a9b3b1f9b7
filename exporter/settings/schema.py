"""What the files the exporter reads have in common: strict YAML, schemas, one error style.

Each file (the web configuration, the quota file) is a pydantic model built on ``Schema``: an
unknown key is refused by name, a key of the format that the exporter cannot honour is refused
with the reason, and a mistake becomes a ``FileError`` whose fields say which file, which key
and what is wrong. Its text is one line built from those fields; a caller that needs to know
which key reads ``error.key`` instead of taking the text apart.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

SchemaT = TypeVar("SchemaT", bound="Schema")

# pydantic's wording for the mistakes a hand-edited file has most, in the files' own terms.
_WORDING: Mapping[str, str] = {
    "missing": "is required",
    "extra_forbidden": "unknown key",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "dict_type": "must be a mapping of keys to values",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


class FileError(ValueError):
    """A file that cannot be used.

    ``path`` is the file; ``key`` the dotted key in it that is wrong (``servers[0].quota``),
    ``""`` for the document as a whole, or ``None`` when the file cannot be read as YAML at all;
    ``problem`` what is wrong, without any value that could be a secret. ``str()`` is one line.
    """

    def __init__(self, path: Path | None, key: str | None, problem: str) -> None:
        super().__init__(path, key, problem)
        self.path = path
        self.key = key
        self.problem = problem

    def __str__(self) -> str:
        if self.key is None:
            return self.problem
        return f"{self.key or 'the file'}: {self.problem}"


class KeyProblem(ValueError):
    """Raised by a validator of a mapping about one key in it, so that the error names that key."""

    def __init__(self, key: object, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


class Schema(BaseModel):
    """A mapping in a file: known keys only, each checked by its type.

    Subclasses name the keys of their format that the exporter refuses (``refused``: key ->
    why), may word the refusal of an unknown key in their own terms (``unknown_key``, with
    ``{known}`` for the keys it knows), and may treat a blank value as a key left out
    (``blank_is_unset``), as exporter-toolkit's files do.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    refused: ClassVar[Mapping[str, str]] = {}
    unknown_key: ClassVar[str] = "unknown key (known: {known})"
    blank_is_unset: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _known_keys_only(cls, data: Any) -> Any:
        # extra="forbid" would refuse the same keys; this says which keys would do, or why a
        # key of the format is refused, in words a person editing the file can act on.
        if not isinstance(data, dict):
            return data
        known = [field.alias or name for name, field in cls.model_fields.items()]
        for key in data:
            if key in cls.refused:
                raise KeyProblem(key, cls.refused[key])
            if key not in known:
                raise KeyProblem(key, cls.unknown_key.format(known=", ".join(known)))
        if cls.blank_is_unset:
            return {key: value for key, value in data.items() if value not in (None, "", [])}
        return data


def one_of(choices: Sequence[str]) -> BeforeValidator:
    """Refuse anything but ``choices`` as ``must be one of a, b, c``; goes with a ``Literal``.

    pydantic's own message quotes the choices in a sentence; this one lists them as the
    documentation does.
    """
    names = ", ".join(choices)

    def check(value: object) -> object:
        if not isinstance(value, str) or value not in choices:
            raise PydanticCustomError("one_of", "must be one of {choices}", {"choices": names})
        return value

    return BeforeValidator(check)


def describe(error: ValidationError) -> list[tuple[str, str]]:
    """``(dotted key, problem)`` for each mistake in ``error``, never quoting the input.

    A validator's own ``ValueError`` is the problem as it wrote it; a ``KeyProblem`` adds its
    key to the place; pydantic's messages for the common mistakes are reworded.
    """
    found = []
    for detail in error.errors(include_input=False, include_url=False):
        loc: tuple[object, ...] = tuple(detail["loc"])
        raised = detail.get("ctx", {}).get("error")
        if isinstance(raised, KeyProblem):
            loc, problem = (*loc, raised.key), raised.problem
        elif isinstance(raised, ValueError):
            problem = str(raised)
        else:
            problem = _WORDING.get(detail["type"], detail["msg"])
        found.append((dotted(loc), problem))
    return found


def dotted(loc: Sequence[object]) -> str:
    """``servers[0].quota.incoming`` from ``("servers", 0, "quota", "incoming")``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def load_file(path: Path, schema: type[SchemaT], error: type[FileError]) -> SchemaT:
    """Read the YAML file at ``path`` and check it against ``schema``; ``error`` if unusable.

    An empty file is an empty mapping. The first mistake is reported, as ``error(path, key,
    problem)``.
    """
    document = read_yaml(path, error)
    try:
        return schema.model_validate({} if document is None else document)
    except ValidationError as invalid:
        key, problem = describe(invalid)[0]
        raise error(path, key, problem) from None


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice, where the last one would win."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              _mapping_without_duplicates)  # fmt: skip


def read_yaml(path: Path, error: type[FileError]) -> object:
    """The YAML document in ``path``, with every key given once; ``error`` if unreadable."""
    try:
        text = path.read_bytes()
    except OSError as failure:
        raise error(path, None, f"cannot read {path}: {failure.strerror}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as failure:
        # str(failure) quotes the offending line, which may hold a password: position only.
        mark = failure.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = failure.problem or failure.context or "unreadable"
        raise error(path, None, f"{path} is not valid YAML{where}: {problem}") from None
    except yaml.YAMLError:
        raise error(path, None, f"{path} is not valid YAML (or not UTF-8 text)") from None
