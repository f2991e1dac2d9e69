"""The packaged module is complete and consistent: CMake lists, UI bindings, Python syntax, protocol constants."""

from __future__ import annotations

import ast
import dataclasses
import py_compile
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from SHMoARegLib import maps, options

MODULE_DIRECTORY = Path(__file__).resolve().parents[2]
REPOSITORY = MODULE_DIRECTORY.parent
MODULE_FILE = MODULE_DIRECTORY / "SHMoAReg.py"
UI_FILE = MODULE_DIRECTORY / "Resources" / "UI" / "SHMoAReg.ui"
# What the module folder ships besides Python: the template's Resources/ and the engine's package data.
RESOURCE_FOLDERS = ("Resources", "shmoareg/weights", "shmoareg/sample_data")


def cmakeList(variable: str) -> list[str]:
    """Entries of ``set(variable ...)`` in the module's CMakeLists.txt."""
    text = (MODULE_DIRECTORY / "CMakeLists.txt").read_text()
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.DOTALL)
    assert match, f"{variable} is not set in CMakeLists.txt"
    entries = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [entry.replace("${MODULE_NAME}", "SHMoAReg") for entry in entries if entry]


def filesUnder(folder: Path, pattern: str) -> set[str]:
    """Files of the module folder (relative to it) matching ``pattern`` below ``folder``; tests are not shipped."""
    return {path.relative_to(MODULE_DIRECTORY).as_posix() for path in folder.rglob(pattern)
            if path.is_file() and "__pycache__" not in path.parts
            and path.relative_to(MODULE_DIRECTORY).parts[0] != "Testing"}


def test_cmake_lists_every_python_file():
    listed = cmakeList("MODULE_PYTHON_SCRIPTS")
    assert len(listed) == len(set(listed)), "a script is listed twice"
    assert set(listed) == filesUnder(MODULE_DIRECTORY, "*.py")


def test_cmake_lists_every_resource_file():
    listed = cmakeList("MODULE_PYTHON_RESOURCES")
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert set(listed) == set().union(*(filesUnder(MODULE_DIRECTORY / folder, "*") for folder in RESOURCE_FOLDERS))


def test_the_module_follows_the_slicer_template_layout():
    """Icon and UI where ScriptedLoadableModule looks (``<module folder>/Resources``), so no path fallbacks."""
    assert (MODULE_DIRECTORY / "Resources" / "Icons" / "SHMoAReg.png").is_file() and UI_FILE.is_file()
    assert not (REPOSITORY / "Resources" / "Icons").exists() and not (REPOSITORY / "Resources" / "UI").exists()
    assert "def resourcePath" not in MODULE_FILE.read_text()


def test_pip_package_data_covers_the_shipped_engine_files():
    """pyproject.toml's package-data globs take every weights and sample file CMake installs."""
    tomllib = pytest.importorskip("tomllib")
    globs = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["shmoareg"]
    engine = MODULE_DIRECTORY / "shmoareg"
    for folder in RESOURCE_FOLDERS[1:]:
        for relative in filesUnder(MODULE_DIRECTORY / folder, "*"):
            assert any(Path(relative).relative_to("shmoareg").match(pattern) for pattern in globs), relative
    assert all(list(engine.glob(pattern)) for pattern in globs), "a package-data glob matches nothing"


def test_module_compiles_for_slicers_python(tmp_path):
    for path in [MODULE_FILE, *(MODULE_DIRECTORY / "SHMoARegLib").glob("*.py")]:
        py_compile.compile(str(path), cfile=str(tmp_path / f"{path.stem}.pyc"), doraise=True)
        tree = ast.parse(path.read_text())
        # Slicer 5.8 ships Python 3.9: no match statements, no X | Y unions evaluated at run time.
        assert not any(isinstance(node, getattr(ast, "Match", ())) for node in ast.walk(tree)), path


def test_library_never_imports_qt():
    for path in (MODULE_DIRECTORY / "SHMoARegLib").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                assert not {"qt", "ctk", "slicer.ScriptedLoadableModule"} & set(names), path


def _members(className: str) -> dict[str, ast.expr]:
    """Annotated members of a class of the module file, with their annotations."""
    tree = ast.parse(MODULE_FILE.read_text())
    cls = next(node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == className)
    return {statement.target.id: statement.annotation for statement in cls.body if isinstance(statement, ast.AnnAssign)}


def _parameterNames() -> set[str]:
    """The parameter node's names as the GUI binds them: a parameter pack's members as ``pack.member``."""
    names = set()
    for name, annotation in _members("SHMoARegParameterNode").items():
        if isinstance(annotation, ast.Name) and annotation.id == "SHMoARegOptions":
            names |= {f"{name}.{member}" for member in _members("SHMoARegOptions")}
        else:
            names.add(name)
    return names


def test_the_options_pack_holds_every_registration_option_in_the_panels_form():
    """Issue 12: the parameter node holds the typed options as a parameter pack; each RegistrationOptions field is
    one of its members (smoothness as the slider's detail position), and the conversion passes every member."""
    members = set(_members("SHMoARegOptions"))
    fields = {field.name for field in dataclasses.fields(options.RegistrationOptions)}
    assert members == (fields - {"smoothness"}) | {"detail"}
    conversion = re.search(r"def registrationOptions\(self\):.*?optionsFromPanel\((.*?)\)\n", MODULE_FILE.read_text(),
                           re.DOTALL)
    assert conversion and set(re.findall(r"(\w+)=self\.(\w+)", conversion.group(1))) == {(m, m) for m in members}
    spinBox = _uiWidgets()["refineStepsSpinBox"]
    minimum = next(prop for prop in spinBox.findall("property") if prop.get("name") == "minimum")
    assert int(minimum.find("number").text) == options.ENGINE_CHOOSES_STEPS


def _uiWidgets() -> dict[str, ElementTree.Element]:
    return {widget.get("name"): widget for widget in ElementTree.parse(UI_FILE).iter("widget")}


def test_ui_binds_every_parameter_and_names_every_widget_the_module_uses():
    bound = set()
    for widget in _uiWidgets().values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound.add(prop.find("string").text)
    assert bound == _parameterNames()
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    assert used <= set(_uiWidgets())


def test_the_model_choice_is_the_engines_registry():
    registry = pytest.importorskip("shmoareg.models.registry")
    assert sorted(options.MODELS) == sorted(("none", *registry.MODEL_NAMES))
    assert options.MODELS[0] == registry.MODEL_NAMES[0] == options.DEFAULT_MODEL


PROTOCOL_LITERALS = re.compile(r"""["'](transform\.h5|summary\.json|maps\.json|routing\.json|jacobian\.nii|"""
                               r"""warped_moving[^"']*|uncertainty\.nii\.gz|displacement\.nii)["']|\b130\b""")


def test_the_slicer_module_takes_the_protocol_from_the_engine_and_nothing_else():
    """Issue 12: exit codes and output names are defined once, in shmoareg.protocol (standard library only)."""
    sources = sorted((MODULE_DIRECTORY / "SHMoARegLib").glob("*.py")) + [MODULE_FILE]
    for path in sources:
        text = path.read_text()
        assert not PROTOCOL_LITERALS.search(text), f"{path.name} repeats a protocol value"
        engine_imports = {node.module for node in ast.walk(ast.parse(text))
                          if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shmoareg")}
        assert engine_imports <= {"shmoareg.protocol", "shmoareg.resources"}, f"{path.name} imports {engine_imports}"
    standard_library_only = {"protocol": {"__future__", "enum", "typing"},
                             "resources": {"__future__", "pathlib", "shmoareg"}}
    for name, allowed in standard_library_only.items():
        tree = ast.parse((MODULE_DIRECTORY / "shmoareg" / f"{name}.py").read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names} | {node.module.split(".")[0] for node in ast.walk(tree)
                                                if isinstance(node, ast.ImportFrom) and node.module}
        assert imported <= allowed, f"{name}.py imports {imported - allowed}"


def test_the_colour_map_rule_gives_only_the_protocols_colour_maps():
    model_maps = pytest.importorskip("shmoareg.model_maps")
    assert {model_maps.colour_map_for(units) for units in ("", "nats", "mm", "voxels")} == set(maps.COLOUR_MAPS)


def test_quality_options_match_the_engine_parser():
    """--similarity choices and default, --smoothness and --uncertainty defaults as the engine declares them."""
    cli = pytest.importorskip("shmoareg.cli")
    subparsers = next(action for action in cli.build_parser()._actions if action.dest == "command")
    register = {action.dest: action for action in subparsers.choices["register"]._actions}
    assert tuple(register["similarity"].choices) == options.SIMILARITIES
    assert register["similarity"].default == options.SIMILARITIES[0] == options.RegistrationOptions().similarity
    assert register["smoothness"].default == options.DEFAULT_SMOOTHNESS == options.RegistrationOptions().smoothness
    assert register["uncertainty"].default is False and options.RegistrationOptions().uncertainty is False
    assert "--no-uncertainty" in register["uncertainty"].option_strings
