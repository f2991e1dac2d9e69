"""Small pieces of SHMoARegLib: options, engine arguments, progress parsing, routing keys, dependencies."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

from SHMoARegLib import RegistrationOptions, parseRoutingKey, routingKey
from SHMoARegLib.dependencies import (
    ENGINE_REQUIREMENTS,
    PROTECTED_PACKAGES,
    Requirement,
    installMissing,
    missingRequirements,
    pipInstallCommands,
)
from SHMoARegLib.options import (DETAIL_RANGE, ENGINE_CHOOSES_STEPS, engineArguments, optionsFromPanel,
                                 smoothnessFromDetail)
from SHMoARegLib.process import (
    ENGINE_PARENT_DIRECTORY,
    EngineProcess,
    ProgressEvent,
    engineEnvironment,
    pythonExecutable,
)
from SHMoARegLib.results import describeNetworkShare
from SHMoARegLib.routing import readRoutingInfo


def test_options_are_checked():
    with pytest.raises(ValueError, match="device"):
        RegistrationOptions(device="gpu")
    with pytest.raises(ValueError, match="refineSteps"):
        RegistrationOptions(refineSteps=-3)
    with pytest.raises(ValueError, match="similarity must be one of auto, lncc, mind, ngf, not 'ncc'"):
        RegistrationOptions(similarity="ncc")
    for smoothness in (0, -1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match="smoothness must be a number above 0"):
            RegistrationOptions(smoothness=smoothness)


def test_quality_options_reach_the_engine_explicitly():
    default = engineArguments(RegistrationOptions(), Path("f"), Path("m"), Path("o"))
    assert default[default.index("--similarity") + 1] == "auto"
    assert default[default.index("--smoothness") + 1] == "1.0"
    assert "--no-uncertainty" in default and "--uncertainty" not in default
    assert "--fixed-landmarks" not in default and "--moving-landmarks" not in default
    chosen = engineArguments(RegistrationOptions(similarity="mind", smoothness=0.25, uncertainty=True),
                             Path("f"), Path("m"), Path("o"), fixedLandmarks=Path("fl.csv"),
                             movingLandmarks=Path("ml.csv"))
    assert chosen[chosen.index("--similarity") + 1] == "mind"
    assert chosen[chosen.index("--smoothness") + 1] == "0.25"
    assert "--uncertainty" in chosen and "--no-uncertainty" not in chosen
    assert chosen[chosen.index("--fixed-landmarks") + 1] == "fl.csv"
    assert chosen[chosen.index("--moving-landmarks") + 1] == "ml.csv"
    with pytest.raises(ValueError, match="both landmark files"):
        engineArguments(RegistrationOptions(), Path("f"), Path("m"), Path("o"), fixedLandmarks=Path("fl.csv"))


def test_detail_slider_maps_to_smoothness_on_a_log_scale():
    assert DETAIL_RANGE == (-2, 2)
    assert [smoothnessFromDetail(position) for position in range(-2, 3)] == [4.0, 2.0, 1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="between -2 and 2"):
        smoothnessFromDetail(3)


def test_the_panels_settings_become_typed_options():
    """The options pack keeps the spin box's "engine's default" and the slider's position; the logic gets
    refineSteps None and the smoothness weight."""
    default = optionsFromPanel(refineSteps=ENGINE_CHOOSES_STEPS, detail=0)
    assert default == RegistrationOptions() and default.refineSteps is None
    chosen = optionsFromPanel(refineSteps=0, detail=2, model="unet", device="cpu", uncertainty=True, affine=False)
    assert chosen == RegistrationOptions(model="unet", device="cpu", refineSteps=0, smoothness=0.25,
                                         uncertainty=True, affine=False)
    with pytest.raises(ValueError, match="refineSteps must be 0 or more, or -1"):
        optionsFromPanel(refineSteps=-2, detail=0)
    with pytest.raises(ValueError, match="similarity must be one of"):
        optionsFromPanel(refineSteps=10, detail=0, similarity="mse")


def test_engine_arguments_follow_the_command_line():
    arguments = engineArguments(RegistrationOptions(device="cpu", refineSteps=0, affine=False, importGateMaps=True),
                                Path("f.nrrd"), Path("m.nrrd"), Path("out"), movingSegmentation=Path("ms.nrrd"))
    assert arguments[0] == "register"
    assert arguments[arguments.index("--refine-steps") + 1] == "0"
    assert "--no-affine" in arguments and "--fixed-seg" not in arguments
    assert arguments[arguments.index("--moving-seg") + 1] == "ms.nrrd"
    assert arguments[arguments.index("--progress") + 1] == "json"
    assert arguments[arguments.index("--routing-maps") + 1] == "full"
    assert "--refine-steps" not in engineArguments(RegistrationOptions(), Path("f"), Path("m"), Path("o"))
    default = engineArguments(RegistrationOptions(), Path("f"), Path("m"), Path("o"))
    assert default[default.index("--routing-maps") + 1] == "experts"
    assert default[default.index("--model") + 1] == "shmoareg"


def test_the_engine_runs_with_this_python_and_finds_its_package():
    assert pythonExecutable() == sys.executable  # no slicer.app here
    assert (ENGINE_PARENT_DIRECTORY / "shmoareg" / "__main__.py").is_file()
    assert engineEnvironment()["PYTHONPATH"].split(os.pathsep)[0] == str(ENGINE_PARENT_DIRECTORY)


def test_progress_lines_are_parsed_and_other_lines_ignored():
    event = ProgressEvent.fromLine('{"event": "error", "stage": "load", "exit_code": 2, "message": "bad"}')
    assert (event.event, event.exitCode, event.message) == ("error", 2, "bad")
    assert ProgressEvent.fromLine("Warning: something from a library") is None
    assert ProgressEvent.fromLine("[1, 2]") is None


def test_error_message_falls_back_to_the_last_stderr_line():
    process = EngineProcess([sys.executable, "-c", "import sys; print('first', file=sys.stderr); "
                                                   "print('last line', file=sys.stderr); sys.exit(4)"])
    process.start()
    while not process.finished:
        process.events(timeout=0.1)
    assert process.returnCode == 4 and process.errorMessage() == "last line"


def test_routing_keys_round_trip():
    assert routingKey(2, "y") == "level2_y_expert"
    assert parseRoutingKey(routingKey(3, "z", 4)) == (3, "z", 4)
    assert parseRoutingKey("level0_x_expert") == (0, "x", None)
    with pytest.raises(ValueError):
        parseRoutingKey("level0_w_expert")


def test_routing_json_is_optional_but_must_be_consistent(tmp_path):
    assert readRoutingInfo(tmp_path) is None
    (tmp_path / "routing.json").write_text(
        '{"experts": [{"name": "a", "kernel_size": 3, "dilation": 1, "receptive_field": 3}], '
        '"utilisation": {"0": {"x": [0.5, 0.5]}}}')
    with pytest.raises(ValueError, match="2 values for 1 experts"):
        readRoutingInfo(tmp_path)


def test_network_share_is_optional_in_routing_json_but_must_be_a_share(tmp_path):
    expert = '{"name": "a", "kernel_size": 3, "dilation": 1, "receptive_field": 3}'
    (tmp_path / "routing.json").write_text(f'{{"experts": [{expert}], "utilisation": {{"1": {{"x": [1.0]}}}}}}')
    assert readRoutingInfo(tmp_path).networkShare is None
    (tmp_path / "routing.json").write_text(
        f'{{"experts": [{expert}], "utilisation": {{"1": {{"x": [1.0]}}}}, "network_share": 1.5}}')
    with pytest.raises(ValueError, match="network_share"):
        readRoutingInfo(tmp_path)


def test_network_share_sentence_follows_the_refinement():
    assert describeNetworkShare({"network_share": None, "method": {"refine_steps": 50}}) is None
    unrefined = describeNetworkShare({"network_share": 1.0, "method": {"refine_steps": 0}})
    assert unrefined == ("The network's maps are those of its prediction, not refined afterwards; the "
                         "prediction accounts for 100 % of the final deformation beyond the affine "
                         "(network share 1.00).")
    assert "refined afterwards by 1 step on the pair" in describeNetworkShare(
        {"network_share": 0.5, "method": {"refine_steps": 1}, "network_prediction": "used"})
    rejected = describeNetworkShare({"network_share": 0.0, "method": {"refine_steps": 50},
                                     "network_prediction": "rejected"})
    assert "which was not used" in rejected and "50 steps from the affine" in rejected


def test_missing_packages_are_found_without_importing_them():
    installed = {"torch"}
    missing = missingRequirements(isInstalled=lambda module: module in installed)
    assert [requirement.module for requirement in missing] == ["safetensors", "yaml", "psutil"]


def test_missing_packages_install_through_slicer_pytorch_when_it_is_there_and_pip_otherwise():
    """Issue 12, point 3: the installation moved from the widget into SHMoARegLib (the widget only asks)."""
    for torchInstaller, expectedPip in ((None, [["install", "torch>=2.1,<3"], ["install", "--no-deps", "psutil>=5.9"]]),
                                        (lambda version: True, [["install", "--no-deps", "psutil>=5.9"]])):
        installed, commands, torchVersions = {"safetensors", "yaml"}, [], []

        def run(command):
            commands.append(command[3:])
            installed.update({"torch", "psutil"} & {word.split(">")[0] for word in command})

        def viaExtension(version, install=torchInstaller):
            torchVersions.append(version)
            installed.add("torch")
            return install(version)

        missing = missingRequirements(isInstalled=lambda module: module in installed)
        installMissing(missing, "python", lambda line: None, run, viaExtension if torchInstaller else None,
                       isInstalled=lambda module: module in installed)
        assert commands == expectedPip
        assert torchVersions == ([">=2.1,<3"] if torchInstaller else [])
    with pytest.raises(RuntimeError, match="still missing after installation: psutil"):
        installMissing([ENGINE_REQUIREMENTS[-1]], "python", lambda line: None, lambda command: None,
                       isInstalled=lambda module: False)
    with pytest.raises(RuntimeError, match="PyTorch could not be installed"):
        installMissing([ENGINE_REQUIREMENTS[0]], "python", lambda line: None, lambda command: None,
                       installTorch=lambda version: False)


def _moduleLevelImports(module: str) -> set[str]:
    package = ENGINE_PARENT_DIRECTORY.joinpath(*module.split("."))
    path = package / "__init__.py" if package.is_dir() else package.with_suffix(".py")
    names = set()
    for node in ast.parse(path.read_text()).body:  # module level only: lazy optional imports are allowed
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names if node.module.startswith("shmoareg")}
    return names


def test_requirements_cover_what_the_registration_engine_imports():
    """Every third-party module that ``shmoareg register`` imports (from its CLI and pipeline) can be installed."""
    seen, pending, thirdParty = set(), ["shmoareg.cli", "shmoareg.pipeline"], set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _moduleLevelImports(module):
            if name.split(".")[0] != "shmoareg":
                thirdParty.add(name.split(".")[0])
            elif ENGINE_PARENT_DIRECTORY.joinpath(*name.split(".")).with_suffix(".py").is_file() or \
                    ENGINE_PARENT_DIRECTORY.joinpath(*name.split(".")).is_dir():
                pending.append(name)
    thirdParty -= set(sys.stdlib_module_names) | {"__future__"}
    assert "torch" in thirdParty
    assert thirdParty <= {r.module for r in ENGINE_REQUIREMENTS} | set(PROTECTED_PACKAGES)


def test_install_commands_never_touch_slicers_packages():
    commands = pipInstallCommands("PythonSlicer", list(ENGINE_REQUIREMENTS))
    assert commands == [["PythonSlicer", "-m", "pip", "install", "torch>=2.1,<3"],
                        ["PythonSlicer", "-m", "pip", "install", "--no-deps", "safetensors>=0.4", "PyYAML>=6", "psutil>=5.9"]]
    # A package depending on numpy goes without dependencies so Slicer's numpy stays.
    monai = Requirement("monai", "monai>=1.3,<2")
    assert pipInstallCommands("PythonSlicer", [monai]) == [["PythonSlicer", "-m", "pip", "install", "--no-deps",
                                                             "monai>=1.3,<2"]]
    with pytest.raises(ValueError, match="numpy"):
        pipInstallCommands("PythonSlicer", [Requirement("numpy", "numpy>=2")])
    with pytest.raises(ValueError, match="(?i)simpleitk"):
        pipInstallCommands("PythonSlicer", [Requirement("SimpleITK", "simpleitk==2.4", installWithDependencies=True)])
