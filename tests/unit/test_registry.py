"""Model discovery and definition checks: which classes a project serves, and how."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import freight
from freight.errors import ModelDefinitionError
from freight.model import InputKind
from freight.registry import discover, import_model

Write = Callable[[str, str], str]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """An empty project directory, removed from sys.path and sys.modules afterwards."""
    directory = tmp_path / "project"
    directory.mkdir()
    before = set(sys.modules)
    yield directory
    for name in set(sys.modules) - before:
        del sys.modules[name]
    if str(directory.resolve()) in sys.path:
        sys.path.remove(str(directory.resolve()))


@pytest.fixture
def write(project: Path) -> Write:
    """Write a module with a unique name (imports are cached per name) and return that name."""

    def make(stem: str, source: str) -> str:
        name = f"{stem}_{uuid.uuid4().hex[:8]}"
        (project / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return make


MODEL = """
    import freight

    class {cls}(freight.Model):
        name = "{name}"

        def predict(self, input: dict) -> dict:
            return input
"""


def test_discovers_models_defined_in_top_level_modules(project: Path, write: Write) -> None:
    """Every Model subclass defined at the top of the directory is served, keyed by name."""
    first = write("alpha", MODEL.format(cls="Alpha", name="alpha"))
    second = write("beta", MODEL.format(cls="Beta", name="beta"))
    specs = discover(project)
    assert set(specs) == {"alpha", "beta"}
    assert specs["alpha"].ref == f"{first}:Alpha"
    assert specs["beta"].ref == f"{second}:Beta"
    assert specs["alpha"].input_kind == InputKind.JSON


def test_subdirectories_imported_and_private_classes_are_not_discovered(
    project: Path, write: Write
) -> None:
    """Models in subpackages, imported from elsewhere, or named with _ are skipped."""
    base = write("base", MODEL.format(cls="Base", name="base"))
    write(
        "user",
        f"""
        import freight
        from {base} import Base  # imported, not defined here

        class _Hidden(freight.Model):
            def predict(self, input: dict) -> dict:
                return input
        """,
    )
    (project / "sub").mkdir()
    (project / "sub" / "deep.py").write_text(textwrap.dedent(MODEL.format(cls="Deep", name="deep")))
    assert set(discover(project)) == {"base"}


def test_explicit_refs_replace_discovery(project: Path, write: Write) -> None:
    """Given refs, only those classes are served, even with others in the directory."""
    module = write("two", MODEL.format(cls="One", name="one") + MODEL.format(cls="Two", name="two"))
    specs = discover(project, [f"{module}:Two"])
    assert list(specs) == ["two"]


def test_two_models_of_one_name_is_an_error_naming_both(project: Path, write: Write) -> None:
    """A duplicate model name fails with both module:Class references."""
    first = write("a", MODEL.format(cls="First", name="same"))
    second = write("b", MODEL.format(cls="Second", name="same"))
    with pytest.raises(ModelDefinitionError) as info:
        discover(project)
    assert f"{first}:First" in info.value.message
    assert f"{second}:Second" in info.value.message
    assert info.value.detail["refs"] == [f"{first}:First", f"{second}:Second"]


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("no_colon", "is not 'module:Class'"),
        (":Cls", "is not 'module:Class'"),
        ("missing_module_xyz:Cls", "cannot import"),
    ],
)
def test_bad_refs_are_definition_errors(project: Path, ref: str, fragment: str) -> None:
    """A malformed or unimportable reference raises ModelDefinitionError carrying the ref."""
    with pytest.raises(ModelDefinitionError) as info:
        import_model(ref, project)
    assert fragment in info.value.message
    assert info.value.detail["ref"] == ref


def test_ref_to_something_not_a_model(project: Path, write: Write) -> None:
    """A ref to a missing attribute or a non-Model class is refused."""
    module = write("plain", "class NotAModel:\n    pass\n")
    for ref in (f"{module}:NotAModel", f"{module}:Absent"):
        with pytest.raises(ModelDefinitionError, match=r"not a freight\.Model subclass"):
            import_model(ref, project)


def test_module_that_fails_to_import_names_the_file(project: Path, write: Write) -> None:
    """A module raising at import makes discovery fail naming the file and the exception."""
    module = write("broken", "raise RuntimeError('boom at import')\n")
    with pytest.raises(ModelDefinitionError) as info:
        discover(project)
    assert f"{module}.py" in info.value.message and "RuntimeError" in info.value.message


def test_missing_project_directory(tmp_path: Path) -> None:
    """A project directory that does not exist is a definition error."""
    with pytest.raises(ModelDefinitionError, match="does not exist"):
        discover(tmp_path / "nowhere")


def test_class_without_predict_is_refused() -> None:
    """A model defining neither predict nor predict_batch fails validation."""

    class Empty(freight.Model):
        pass

    with pytest.raises(ModelDefinitionError, match="neither predict"):
        Empty.validate()


@pytest.mark.parametrize("name", ["Upper", "has space", "-leading", "a" * 64, "é"])
def test_invalid_model_names_are_refused(name: str) -> None:
    """Names must be lowercase letters, digits, . _ - (at most 63 characters)."""

    class Named(freight.Model):
        def predict(self, input: dict[str, Any]) -> dict[str, Any]:
            return input

    Named.name = name
    with pytest.raises(ModelDefinitionError, match="must be lowercase"):
        Named.validate()


def test_name_defaults_to_the_slugged_class_name() -> None:
    """Without ``name``, the class name in kebab case is the model name."""

    class ImageClassifier(freight.Model):
        def predict(self, input: dict[str, Any]) -> dict[str, Any]:
            return input

    assert ImageClassifier.model_name() == "image-classifier"
    ImageClassifier.validate()


def test_predict_without_an_input_parameter_is_refused() -> None:
    """predict must take an input."""

    class NoInput(freight.Model):
        def predict(self) -> None:  # type: ignore[override]
            return None

    with pytest.raises(ModelDefinitionError, match="takes no input"):
        NoInput.validate()


class _Dict(freight.Model):
    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        return input


class _Unannotated(freight.Model):
    def predict(self, input):  # type: ignore[no-untyped-def]
        return input


class _Bytes(freight.Model):
    def predict(self, input: bytes) -> bytes:
        return input


class _BatchBytes(freight.Model):
    def predict_batch(self, inputs: list[bytes]) -> list[bytes]:
        return inputs


class _BatchBare(freight.Model):
    def predict_batch(self, inputs: list) -> list:  # type: ignore[type-arg]
        return inputs


class _PathInput(freight.Model):
    def predict(self, input: Path) -> str:
        return str(input)


class _BatchPath(freight.Model):
    def predict_batch(self, inputs: list[Path]) -> list[str]:
        return [str(i) for i in inputs]


class _PayloadInput(freight.Model):
    def predict(self, input: freight.Payload) -> int:
        return input.size


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        (_Dict, InputKind.JSON),
        (_Unannotated, InputKind.JSON),
        (_Bytes, InputKind.BYTES),
        (_BatchBytes, InputKind.BYTES),
        (_BatchBare, InputKind.JSON),
        (_PathInput, InputKind.PATH),
        (_BatchPath, InputKind.PATH),
        (_PayloadInput, InputKind.PAYLOAD),
    ],
)
def test_input_kind_follows_the_annotation(model: type[freight.Model], kind: str) -> None:
    """The first parameter's annotation (the list item type for predict_batch) sets the kind."""
    assert model.input_kind() == kind


def test_batching_and_replicas_are_validated() -> None:
    """Impossible batching or replica settings fail when the class is defined."""
    with pytest.raises(ModelDefinitionError):
        freight.Batching(max_size=0)
    with pytest.raises(ModelDefinitionError):
        freight.Batching(max_wait_ms=-1)
    with pytest.raises(ModelDefinitionError):
        freight.Replicas(min=3, max=2)
    with pytest.raises(ModelDefinitionError):
        freight.Replicas(min=0, max=0)


def test_spec_carries_the_class_settings(project: Path, write: Write) -> None:
    """The spec records batching, replicas, timeout and attempts as the class declares them."""
    module = write(
        "tuned",
        """
        import freight

        class Tuned(freight.Model):
            batching = freight.Batching(max_size=8, max_wait_ms=5)
            replicas = freight.Replicas(min=0, max=3)
            timeout_s = 2.5
            max_attempts = 1

            def predict_batch(self, inputs: list[bytes]) -> list[bytes]:
                return inputs
        """,
    )
    spec = discover(project)["tuned"]
    assert spec.ref == f"{module}:Tuned"
    assert spec.input_kind == InputKind.BYTES
    assert spec.batching == freight.Batching(max_size=8, max_wait_ms=5)
    assert spec.replicas == freight.Replicas(min=0, max=3)
    assert (spec.timeout_s, spec.max_attempts) == (2.5, 1)
