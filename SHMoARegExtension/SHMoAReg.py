"""SHMoAReg: deep-learning deformable registration with per-voxel network maps, as a 3D Slicer module.

The module is thin: the panel collects choices into a parameter node and drives
``SHMoARegLib.RegistrationRunner``, which writes the inputs, runs the engine (``shmoareg``) in a
separate PythonSlicer process and imports its results. By default that process stays loaded between
registrations (a warm engine, started when the module is entered); the setting KEEP_ENGINE_SETTING turns it
off. No ``from __future__ import annotations`` here: the parameter node wrapper reads the annotations at run
time (Slicer 5.8 ships Python 3.9).
"""

import logging
import time
import unittest
from typing import Annotated, Optional

import numpy as np
import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper, parameterPack
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

import SHMoARegLib
from SHMoARegLib.dependencies import installMissing, missingRequirements
from SHMoARegLib.process import pythonExecutable
from SHMoARegLib.synthetic import addSyntheticPair

STATUS_TIMER_MILLISECONDS = 200
# Application setting (QSettings, default on): keep one engine process loaded between registrations.
KEEP_ENGINE_SETTING = "SHMoAReg/KeepEngineRunning"


def keepEngineSetting() -> bool:
    """Whether the warm engine is on (the setting, default on)."""
    return slicer.util.settingsValue(KEEP_ENGINE_SETTING, True, converter=slicer.util.toBool)


#
# Module
#


class SHMoAReg(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SHMoAReg"
        self.parent.categories = ["Registration"]
        self.parent.dependencies = []
        self.parent.contributors = ["SHMoAReg developers"]
        self.parent.helpText = """
Deformable registration of a moving volume (and segmentation) to a fixed one with a
mixture-of-experts registration network, run in a background process on the GPU when one is
available and on the CPU otherwise. Outputs: a displacement-field transform (usable in the
Transforms and Resample modules; the moving volume is placed under it, not modified), the warped
volume and segmentation, the Jacobian determinant (volume change, folding) and optionally an uncertainty
map, tables of landmark TRE (judged against AAPM TG-132) and of segment Dice/HD95 before and after,
and for network models their per-voxel maps (for SHMoAReg the expert chosen per level and displacement axis)
with a table and plot of category shares (expert utilisation) or of scalar statistics.
Checkerboard and difference views are one click away. All outputs of a run are in one subject-hierarchy folder.
"""
        self.parent.acknowledgementText = """
SHMoAReg follows "Spatially Heterogeneous Mixture of Attention experts for registration"
(arXiv 2509.20073). Built with PyTorch, SimpleITK and 3D Slicer.
"""


#
# Parameter node
#


# The defaults of every setting, defined once by the logic's typed options.
DEFAULT_OPTIONS = SHMoARegLib.RegistrationOptions()


@parameterPack
class SHMoARegOptions:
    """The run's settings in the forms the panel's controls hold (``refineSteps`` ENGINE_CHOOSES_STEPS: the
    engine's default; ``detail``: the smoothness slider's position). ``registrationOptions()`` gives the logic's
    typed options."""

    model: Annotated[str, Choice(list(SHMoARegLib.MODELS)), Default(DEFAULT_OPTIONS.model)]
    device: Annotated[str, Choice(list(SHMoARegLib.DEVICES)), Default(DEFAULT_OPTIONS.device)]
    refineSteps: Annotated[int, WithinRange(SHMoARegLib.ENGINE_CHOOSES_STEPS, 5000),
                           Default(SHMoARegLib.ENGINE_CHOOSES_STEPS)]
    similarity: Annotated[str, Choice(list(SHMoARegLib.SIMILARITIES)), Default(DEFAULT_OPTIONS.similarity)]
    detail: Annotated[int, WithinRange(*SHMoARegLib.DETAIL_RANGE), Default(0)]  # smoothness 2**-detail
    uncertainty: Annotated[bool, Default(DEFAULT_OPTIONS.uncertainty)]
    affine: Annotated[bool, Default(DEFAULT_OPTIONS.affine)]
    importGateMaps: Annotated[bool, Default(DEFAULT_OPTIONS.importGateMaps)]
    keepTemporaryFiles: Annotated[bool, Default(DEFAULT_OPTIONS.keepTemporaryFiles)]

    def registrationOptions(self):
        """The logic's ``SHMoARegLib.RegistrationOptions`` of these settings."""
        return SHMoARegLib.optionsFromPanel(
            refineSteps=self.refineSteps, detail=self.detail, model=self.model, device=self.device,
            similarity=self.similarity, uncertainty=self.uncertainty, affine=self.affine,
            importGateMaps=self.importGateMaps, keepTemporaryFiles=self.keepTemporaryFiles)


@parameterNodeWrapper
class SHMoARegParameterNode:
    """The panel's inputs and settings, saved with the scene."""

    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    fixedSegmentation: Optional[vtkMRMLSegmentationNode]
    movingSegmentation: Optional[vtkMRMLSegmentationNode]
    fixedLandmarks: Optional[vtkMRMLMarkupsFiducialNode]
    movingLandmarks: Optional[vtkMRMLMarkupsFiducialNode]
    options: SHMoARegOptions


#
# Widget
#


class SHMoARegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, settings, Register/Cancel with progress, map overlays and their table."""

    def __init__(self, parent=None) -> None:
        # Attributes first: without a parent, ScriptedLoadableModuleWidget.__init__ calls setup() itself.
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._result = None
        self._qualityNodes = {}  # checkerboard/difference volumes of the shown result, made on first use
        self._qualityOverlay = None  # the result's volume shown over the fixed one by the quality buttons
        self._runDevice = SHMoARegLib.DEFAULT_DEVICE
        self._installing = False  # Register is disabled while the engine's packages install
        self._overlayChoices = {}  # key -> SHMoARegLib OverlayChoice of the shown result
        self._timer = qt.QTimer()
        self._timer.setInterval(STATUS_TIMER_MILLISECONDS)
        # Its cooperative super().__init__() also initialises VTKObservationMixin (calling that again
        # afterwards would drop the observers setup() may already have added).
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SHMoAReg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SHMoARegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self._timer.connect("timeout()", self.onTimer)
        self.ui.registerButton.connect("clicked(bool)", self.onRegisterButton)
        self.ui.overlayMapComboBox.connect("currentIndexChanged(int)", self.onMapChoiceChanged)
        self.ui.showOverlayButton.connect("clicked(bool)", self.onShowOverlay)
        self.ui.overlayOpacitySlider.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.showPlotButton.connect("clicked(bool)", self.onShowPlot)
        self.ui.saveTransformButton.connect("clicked(bool)", self.onSaveTransform)
        self.ui.checkerboardButton.connect("clicked(bool)", self.onShowCheckerboard)
        self.ui.differenceButton.connect("clicked(bool)", self.onShowDifference)
        self.ui.jacobianButton.connect("clicked(bool)", lambda: self.showQualityOverlay(self._result.jacobianNode))
        self.ui.uncertaintyButton.connect("clicked(bool)",
                                          lambda: self.showQualityOverlay(self._result.uncertaintyNode))
        self.ui.qualityOpacitySlider.connect("valueChanged(double)", self.onQualityOpacityChanged)
        self.ui.keepEngineRunningCheckBox.checked = self.logic.keepEngineWarm
        self.ui.keepEngineRunningCheckBox.connect("toggled(bool)", self.onKeepEngineToggled)
        slicer.app.connect("aboutToQuit()", self.logic.stopEngine)
        self.ui.landmarkTableLabel.text = f"Landmark TRE (AAPM TG-132 tolerance: {SHMoARegLib.TG132_RULE})"
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._timer.stop()
        if self.logic is not None:
            slicer.app.disconnect("aboutToQuit()", self.logic.stopEngine)
            self.logic.cancel()
            self.logic.stopEngine()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        if not missingRequirements():  # the engine loads in the background, for a Register that starts at once
            self.logic.startEngine()

    def onKeepEngineToggled(self, keep: bool) -> None:
        qt.QSettings().setValue(KEEP_ENGINE_SETTING, keep)
        self.logic.keepEngineWarm = keep

    def exit(self) -> None:
        # A running registration goes on (the timer keeps polling); only the GUI binding stops.
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        if self.logic.cancel():
            self.finishRun("Cancelled: the scene was closed.")
        self.showResult(None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.fixedVolume:
            firstVolume = SHMoARegLib.defaultFixedVolume(slicer.mrmlScene)
            if firstVolume:
                self._parameterNode.fixedVolume = firstVolume

    def setParameterNode(self, parameterNode: Optional[SHMoARegParameterNode]) -> None:
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateRegisterButton)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateRegisterButton)
        self.updateRegisterButton()

    def updateRegisterButton(self, caller=None, event=None) -> None:
        """Register needs two different volumes; while running the button is Cancel."""
        if self.logic.isRunning:
            self.ui.registerButton.text = "Cancel"
            self.ui.registerButton.toolTip = "Stop the registration; the scene is left as it was."
            self.ui.registerButton.enabled = True
            return
        self.ui.registerButton.text = "Register"
        if self._installing:
            self.ui.registerButton.enabled = False
            self.ui.registerButton.toolTip = "Installing the packages the registration needs..."
            return
        parameters = self._parameterNode
        ready = bool(parameters and parameters.fixedVolume and parameters.movingVolume
                     and parameters.fixedVolume != parameters.movingVolume)
        self.ui.registerButton.enabled = ready
        self.ui.registerButton.toolTip = ("Register the moving volume to the fixed one in a background process."
                                          if ready else "Choose two different volumes.")

    # Running

    def onRegisterButton(self) -> None:
        if self.logic.isRunning:
            self.logic.cancel()
            self.finishRun("Cancelled; the scene is as it was.")
            return
        with slicer.util.tryWithErrorDisplay("Cannot start the registration.", waitCursor=True):
            if not self.ensureDependencies():
                return
            parameters = self._parameterNode
            self.ui.statusTextEdit.clear()
            self.ui.progressBar.value = 0
            self.log(f"Registering {parameters.movingVolume.GetName()} to {parameters.fixedVolume.GetName()}...")
            options = parameters.options.registrationOptions()
            self._runDevice = options.device
            self.logic.register(
                parameters.fixedVolume, parameters.movingVolume, parameters.fixedSegmentation,
                parameters.movingSegmentation, parameters.fixedLandmarks, parameters.movingLandmarks,
                options=options, waitForCompletion=False, progressCallback=self.onProgress)
            self._timer.start()
            self.updateRegisterButton()

    def onTimer(self) -> None:
        """Drain the engine's progress on the GUI thread; import the results when it has finished."""
        try:
            result = self.logic.poll()
        except SHMoARegLib.RegistrationCancelled as error:
            self.finishRun(f"Cancelled: {error.message}")
            return
        except SHMoARegLib.RegistrationError as error:
            self.finishRun(f"Failed: {error.message}")
            slicer.util.errorDisplay(f"Registration failed:\n{error.message}")
            return
        except Exception as error:
            logging.exception("SHMoAReg: importing the results failed")
            self.finishRun(f"Failed: {error}")
            slicer.util.errorDisplay(f"Registration failed:\n{error}")
            return
        if result is not None:
            self.finishRun(self.describe(result))
            self.showResult(result)

    def onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        lines = self.ui.statusTextEdit.toPlainText().splitlines()
        if message and (not lines or lines[-1] != message):
            self.log(message)

    def finishRun(self, message: str) -> None:
        self._timer.stop()
        self.log(message)
        self.updateRegisterButton()

    def log(self, message: str) -> None:
        self.ui.statusTextEdit.appendPlainText(message)
        logging.info("SHMoAReg: %s", message)

    def describe(self, result) -> str:
        """Summary line of a finished run, with a note when no GPU was used."""
        summary = result.summary
        seconds = summary.get("seconds", {}).get("total")
        lines = [f"Done{f' in {seconds:.1f} s' if seconds is not None else ''} on {summary.get('device', '?')}."]
        if self._runDevice == SHMoARegLib.DEFAULT_DEVICE and summary.get("device") == "cpu":
            lines.append("No CUDA GPU was found, so the CPU was used (slower, same result).")
        lines += SHMoARegLib.describeMetrics(summary)
        networkShare = SHMoARegLib.describeNetworkShare(summary)
        if networkShare is not None:
            lines.append(networkShare)
        return " ".join(lines)

    def ensureDependencies(self) -> bool:
        """Ask before installing the engine's missing packages; never touches numpy, SimpleITK or VTK.

        Register stays disabled while the packages install (pip's output keeps the event loop running).
        """
        missing = missingRequirements()
        if not missing:
            return True
        names = ", ".join(requirement.specifier for requirement in missing)
        if not slicer.util.confirmOkCancelDisplay(
                f"SHMoAReg needs these Python packages: {names}.\n\nInstall them now? This can take several "
                "minutes. Slicer's own numpy, SimpleITK and VTK are not changed."):
            return False
        self._installing = True
        self.updateRegisterButton()
        try:
            installMissing(missing, pythonExecutable(), self.log, self._runInstallCommand, self._torchInstaller())
        finally:
            self._installing = False
            self.updateRegisterButton()
        return True

    @staticmethod
    def _runInstallCommand(command: list) -> None:
        slicer.util.logProcessOutput(slicer.util.launchConsoleProcess(command, useStartupEnvironment=False))

    @staticmethod
    def _torchInstaller():
        """SlicerPyTorch's installer (it picks the CUDA build), or None without that extension."""
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            return None
        return lambda version: PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=version) is not None

    # Results

    def showResult(self, result) -> None:
        """Fill the quality and results sections and show the fixed volume with the aligned moving volume."""
        self._result = result
        self._qualityNodes = {}
        self._qualityOverlay = None
        self.ui.qualityCollapsibleButton.enabled = result is not None
        self.ui.uncertaintyButton.enabled = bool(result and result.uncertaintyNode)
        self.ui.landmarkTableView.setMRMLTableNode(result.landmarkTableNode if result else None)
        self.ui.segmentTableView.setMRMLTableNode(result.segmentTableNode if result else None)
        self.ui.resultsCollapsibleButton.enabled = result is not None
        choices = result.overlayChoices() if result else []
        self._overlayChoices = {choice.key: choice for choice in choices}
        self.ui.overlayMapComboBox.clear()
        for choice in choices:
            self.ui.overlayMapComboBox.addItem(choice.label, choice.key)
        self.onMapChoiceChanged()
        self.ui.utilisationTableView.setMRMLTableNode(result.utilisationTableNode if result else None)
        self.ui.routingNoteLabel.text = (SHMoARegLib.describeNetworkShare(result.summary) or "") if result else ""
        for widget in (self.ui.showOverlayButton, self.ui.overlayMapComboBox, self.ui.overlayOpacitySlider):
            widget.enabled = bool(choices)
        self.ui.showPlotButton.enabled = bool(result and result.utilisationChartNode)
        if result is None:
            return
        moving = result.transformNode.GetNodeReference(result.transformNode.GetMovingNodeReferenceRole())
        slicer.util.setSliceViewerLayers(background=self.fixedVolume(), foreground=moving, foregroundOpacity=0.5,
                                         fit=True)

    def fixedVolume(self):
        """The fixed volume of the shown result."""
        transform = self._result.transformNode
        return transform.GetNodeReference(transform.GetFixedNodeReferenceRole())

    def onShowCheckerboard(self) -> None:
        with slicer.util.tryWithErrorDisplay("Cannot show the checkerboard.", waitCursor=True):
            self.showQualityVolume("checkerboard", SHMoARegLib.checkerboardVolume)

    def onShowDifference(self) -> None:
        with slicer.util.tryWithErrorDisplay("Cannot show the difference.", waitCursor=True):
            self.showQualityVolume("difference", SHMoARegLib.differenceVolume)

    def showQualityVolume(self, kind: str, make) -> None:
        """Show the result's ``kind`` volume (made by ``make(scene, fixed, warped)`` on first use) alone."""
        node = self._qualityNodes.get(kind)
        if node is None or not slicer.mrmlScene.IsNodePresent(node):
            node = make(slicer.mrmlScene, self.fixedVolume(), self._result.warpedVolumeNode)
            self._qualityNodes[kind] = node
        self._qualityOverlay = None
        slicer.util.setSliceViewerLayers(background=node, foreground=None, label=None)

    def showQualityOverlay(self, node) -> None:
        """Show ``node`` (the Jacobian or uncertainty map) over the fixed volume with the chosen opacity."""
        self._qualityOverlay = node
        slicer.util.setSliceViewerLayers(background=self.fixedVolume(), foreground=node, label=None,
                                         foregroundOpacity=self.ui.qualityOpacitySlider.value)

    def onQualityOpacityChanged(self, value: float) -> None:
        if self._qualityOverlay is not None and slicer.mrmlScene.IsNodePresent(self._qualityOverlay):
            self.showQualityOverlay(self._qualityOverlay)

    def onMapChoiceChanged(self, index=None) -> None:
        """Show what the chosen map means under the menu."""
        choice = self._overlayChoices.get(self.ui.overlayMapComboBox.currentData)
        self.ui.overlayDescriptionLabel.text = choice.description if choice is not None else ""

    def selectedMapNode(self):
        choice = self._overlayChoices.get(self.ui.overlayMapComboBox.currentData)
        if choice is None or not slicer.mrmlScene.IsNodePresent(choice.node):
            return None
        return choice.node

    def onShowOverlay(self) -> None:
        node = self.selectedMapNode()
        if node is None:
            return
        self._qualityOverlay = None
        fixed = self.fixedVolume()
        opacity = self.ui.overlayOpacitySlider.value
        if node.IsA("vtkMRMLLabelMapVolumeNode"):
            slicer.util.setSliceViewerLayers(background=fixed, foreground=None, label=node, labelOpacity=opacity)
        else:
            slicer.util.setSliceViewerLayers(background=fixed, foreground=node, foregroundOpacity=opacity, label=None)

    def onOpacityChanged(self, value: float) -> None:
        if self.selectedMapNode() is not None:
            self.onShowOverlay()

    def onShowPlot(self) -> None:
        if self._result is not None and self._result.utilisationChartNode is not None:
            slicer.modules.plots.logic().ShowChartInLayout(self._result.utilisationChartNode)

    def onSaveTransform(self) -> None:
        if self._result is None:
            return
        transform = self._result.transformNode
        path = qt.QFileDialog.getSaveFileName(None, "Save transform", f"{transform.GetName()}.h5",
                                              "ITK transform (*.h5)")
        if path:
            with slicer.util.tryWithErrorDisplay("Cannot save the transform.", waitCursor=True):
                self.logic.saveTransform(transform, path)
                self.log(f"Transform saved to {path}")


#
# Logic
#


class SHMoARegLogic(SHMoARegLib.RegistrationRunner, ScriptedLoadableModuleLogic):
    """The module's logic: parameter node access plus registration (see ``SHMoARegLib.RegistrationRunner``).

    ``slicer.util.getModuleLogic("SHMoAReg").register(fixed, moving)`` registers from scripts.
    ScriptedLoadableModuleLogic comes last in the bases: its ``__init__`` calls ``super().__init__()``
    with no arguments, which must reach ``object``, not ``SHMoARegLib.RegistrationRunner(scene)``.
    """

    def __init__(self, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        SHMoARegLib.RegistrationRunner.__init__(self, scene or slicer.mrmlScene, keepEngineWarm=keepEngineSetting())
        self.temporaryDirectory = slicer.app.temporaryPath

    def getParameterNode(self):
        return SHMoARegParameterNode(super().getParameterNode())


#
# Self-test
#


class SHMoARegTest(ScriptedLoadableModuleTest):
    """Registers a small synthetic pair on the CPU (needs the engine's packages, not a GPU)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        # Called directly by "Reload and Test" (not by a unittest runner), so a skip is reported here.
        self.setUp()
        self.test_OptionsPackGivesTheDefaultOptions()
        try:
            self.test_RegisterSyntheticPair()
        except unittest.SkipTest as skipped:
            self.delayDisplay(f"Test skipped: {skipped}")

    def test_OptionsPackGivesTheDefaultOptions(self):
        """A fresh parameter node's settings are the logic's defaults, and a changed setting reaches the options."""
        parameters = SHMoARegLogic().getParameterNode()
        self.assertEqual(parameters.options.registrationOptions(), SHMoARegLib.RegistrationOptions())
        parameters.options.refineSteps = 0
        parameters.options.detail = 1
        self.assertEqual(parameters.options.registrationOptions(),
                         SHMoARegLib.RegistrationOptions(refineSteps=0, smoothness=0.5))

    def test_RegisterSyntheticPair(self):
        missing = missingRequirements()
        if missing:
            self.skipTest("engine packages missing: " + ", ".join(requirement.module for requirement in missing))
        self.delayDisplay("Registering a synthetic pair on the CPU")
        scene = slicer.mrmlScene
        pair = addSyntheticPair(scene)
        logic = SHMoARegLogic(scene)
        started = time.time()
        try:
            result = logic.register(pair.fixed, pair.moving, pair.fixedSegmentation, pair.movingSegmentation,
                                    options=SHMoARegLib.RegistrationOptions(device="cpu", refineSteps=60))
        finally:
            logic.stopEngine()
        self.assertLess(time.time() - started, 60.0)
        self.assertEqual(pair.moving.GetTransformNodeID(), result.transformNode.GetID())

        fixed = slicer.util.arrayFromVolume(pair.fixed).astype(float)
        errors = []
        for transform in (None, result.transformNode):
            clone = slicer.vtkSlicerVolumesLogic.CloneVolume(scene, pair.moving, "clone")
            clone.SetAndObserveTransformNodeID(transform.GetID() if transform else None)
            resampled = slicer.vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume(clone, pair.fixed)
            errors.append(np.mean((slicer.util.arrayFromVolume(resampled) - fixed) ** 2))
        self.assertLess(errors[1], 0.3 * errors[0])
        for fixedPoint, movingPoint in pair.landmarks:
            world = [0.0, 0.0, 0.0]
            pair.moving.TransformPointToWorld(movingPoint, world)
            self.assertLess(np.linalg.norm(np.array(world) - fixedPoint), 1.5)
        self.assertEqual(result.jacobianNode.GetImageData().GetDimensions(), pair.fixed.GetImageData().GetDimensions())
        self.assertIsNotNone(result.segmentTableNode)
        self.assertIsNone(result.uncertaintyNode)  # not asked for
        checkerboard = SHMoARegLib.checkerboardVolume(scene, pair.fixed, result.warpedVolumeNode)
        self.assertEqual(checkerboard.GetImageData().GetDimensions(), pair.fixed.GetImageData().GetDimensions())
        self.delayDisplay("Test passed")
