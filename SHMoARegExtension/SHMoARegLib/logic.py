"""SHMoARegLogic: register two volumes (and segmentations, landmarks) of a scene with the engine in a separate process.

Inputs are written with storage nodes to a temporary folder, the engine runs as a child
process (one per run, or with ``keepEngineWarm`` one warm engine kept between runs, :mod:`SHMoARegLib.warm`),
and its outputs come back as nodes (see :mod:`SHMoARegLib.results`). With
``waitForCompletion=False`` the caller drives the run with :meth:`SHMoARegLogic.poll` from its
main thread (the Slicer widget does it from a QTimer), so results are imported on that thread.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import slicer

from SHMoARegLib.landmarks import LandmarkPairs, pairLandmarks, writeLandmarks
from SHMoARegLib.options import RegistrationOptions, engineArguments
from shmoareg.protocol import DONE_EVENT, PROGRESS_EVENT, SERVE_COMMAND, ExitCode
from SHMoARegLib.process import EngineProcess, EngineRun, defaultEngineCommand, engineEnvironment
from SHMoARegLib.results import RegistrationResult, RunInputs, importResults
from SHMoARegLib.segmentations import matchLabels, segmentInfos, writeLabelmap
from SHMoARegLib.volumes import prealignment, writeTransform, writeVolume
from SHMoARegLib.warm import WarmEngine

ProgressCallback = Callable[[float, str], None]
OUTPUT_FOLDER = "output"


class RegistrationError(RuntimeError):
    """The engine failed; ``message`` is its one-line explanation, ``exitCode`` its exit status."""

    def __init__(self, message: str, exitCode: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.exitCode = exitCode


class RegistrationCancelled(RegistrationError):
    """The run was cancelled; the scene is as it was before it started."""


@dataclass
class _Run:
    process: EngineRun
    workDirectory: Path
    inputs: RunInputs
    options: RegistrationOptions
    progressCallback: Optional[ProgressCallback]


class RegistrationRunner:
    """Registration of scene nodes with the SHMoAReg engine process; one run at a time.

    With ``keepEngineWarm`` the runs go to one engine process kept between them (started by the first run or by
    :meth:`startEngine`, ended by :meth:`stopEngine`), else each run starts its own.
    The Slicer module's logic (``SHMoARegLogic`` in ``SHMoAReg.py``) is this runner plus the parameter node.
    """

    def __init__(self, scene: slicer.vtkMRMLScene, engineCommand: Optional[Sequence[str]] = None,
                 keepEngineWarm: bool = False) -> None:
        self.scene = scene
        # Command prefix that runs the engine's CLI; None means ``<PythonSlicer or python> -m shmoareg``.
        self.engineCommand = list(engineCommand) if engineCommand else None
        # Parent folder of the runs' temporary folders; None means the system's temporary folder.
        self.temporaryDirectory: Optional[str] = None
        self._run: Optional[_Run] = None
        self._keepEngineWarm = keepEngineWarm
        self._engine: Optional[WarmEngine] = None

    @property
    def keepEngineWarm(self) -> bool:
        """Whether runs go to a warm engine kept between them; turning it off ends that engine (after a running
        registration)."""
        return self._keepEngineWarm

    @keepEngineWarm.setter
    def keepEngineWarm(self, keep: bool) -> None:
        self._keepEngineWarm = bool(keep)
        if not keep and not self.isRunning:
            self.stopEngine()

    @property
    def engineProcessId(self) -> Optional[int]:
        """Process id of the warm engine while it runs (None without one)."""
        return self._engine.pid if self._engine is not None and self._engine.alive else None

    def startEngine(self) -> None:
        """Start the warm engine unless it runs or ``keepEngineWarm`` is off; it loads in the background. An engine
        that ended since the last run (killed, crashed) is replaced, and its end logged."""
        if not self._keepEngineWarm or (self._engine is not None and self._engine.alive):
            return
        if self._engine is not None:
            logging.warning("SHMoAReg: the registration engine had ended (%s); starting a new one",
                            self._engine.endMessage())
        self._engine = WarmEngine(self._engineCommand() + [SERVE_COMMAND], engineEnvironment())
        self._engine.start()

    def stopEngine(self) -> None:
        """End the warm engine (a running registration is cancelled first); nothing without one."""
        if self._engine is None:
            return
        self.cancel()
        self._engine.stop()
        self._engine = None

    @property
    def isRunning(self) -> bool:
        return self._run is not None

    @property
    def processId(self) -> Optional[int]:
        """Process id of the running engine (None when nothing runs)."""
        return self._run.process.pid if self._run is not None else None

    def register(self, fixed: slicer.vtkMRMLScalarVolumeNode, moving: slicer.vtkMRMLScalarVolumeNode,
                 fixedSegmentation: Optional[slicer.vtkMRMLSegmentationNode] = None,
                 movingSegmentation: Optional[slicer.vtkMRMLSegmentationNode] = None,
                 fixedLandmarks: Optional[slicer.vtkMRMLMarkupsFiducialNode] = None,
                 movingLandmarks: Optional[slicer.vtkMRMLMarkupsFiducialNode] = None,
                 options: Optional[RegistrationOptions] = None, waitForCompletion: bool = True,
                 progressCallback: Optional[ProgressCallback] = None) -> Optional[RegistrationResult]:
        """Register ``moving`` onto ``fixed`` with ``options`` (the defaults when None).

        Landmark lists (both or neither) give the TRE before and after; they are paired as
        :mod:`SHMoARegLib.landmarks` explains, and checked before anything runs.

        Waits and returns the result, or with ``waitForCompletion=False`` returns None at once
        (call :meth:`poll` until it returns the result). ``progressCallback(fraction, message)``
        is called on the thread that waits or polls. Raises :class:`RegistrationError` with the
        engine's message when it fails, :class:`RegistrationCancelled` when cancelled.
        """
        if self._run is not None:
            raise RuntimeError("a registration is already running; wait for it or cancel it first")
        runOptions = options if options is not None else RegistrationOptions()
        if not isinstance(runOptions, RegistrationOptions):
            raise TypeError(f"options must be a RegistrationOptions, not {type(runOptions).__name__}")
        inputs = RunInputs(fixed, moving, fixedSegmentation, movingSegmentation, fixedLandmarks, movingLandmarks)
        self._validate(inputs)
        landmarks = pairLandmarks(fixedLandmarks, movingLandmarks) if fixedLandmarks is not None else None
        workDirectory = Path(tempfile.mkdtemp(prefix="SHMoAReg-", dir=self.temporaryDirectory))
        try:
            process = self._launch(self._writeInputs(inputs, workDirectory, runOptions, landmarks), workDirectory)
        except BaseException:
            shutil.rmtree(workDirectory, ignore_errors=True)
            raise
        self._run = _Run(process, workDirectory, inputs, runOptions, progressCallback)
        if not waitForCompletion:
            return None
        try:
            while True:
                result = self.poll(timeout=0.1)
                if result is not None:
                    return result
                if self._run is None:
                    raise RegistrationCancelled("the registration was cancelled", ExitCode.CANCELLED)
        except BaseException:
            self.cancel()  # e.g. the progress callback raised or the script was interrupted
            raise

    def poll(self, timeout: float = 0.0) -> Optional[RegistrationResult]:
        """Hand out progress and, once the engine ended, import its results (or raise its error).

        Returns None while running (or when nothing runs), the result once, when finished.
        """
        run = self._run
        if run is None:
            return None
        for event in run.process.events(timeout):
            if run.progressCallback is not None and event.event in (PROGRESS_EVENT, DONE_EVENT):
                run.progressCallback(event.fraction, event.message)
            if self._run is not run:  # the callback cancelled the run
                return None
        if not run.process.finished:
            return None
        self._run = None
        try:
            return self._finish(run)
        finally:
            self._ended(run)

    def cancel(self) -> bool:
        """Stop the running registration (its own process tree, or the warm engine's work on it); False when nothing
        ran."""
        run = self._run
        if run is None:
            return False
        self._run = None
        run.process.cancel()
        self._ended(run)
        logging.info("SHMoAReg: registration cancelled")
        return True

    def saveTransform(self, transformNode: slicer.vtkMRMLTransformNode, path: str) -> None:
        """Write a transform node to an ITK file (``.h5``), readable by ITK, SimpleITK and Slicer."""
        writeTransform(transformNode, Path(path))

    def _engineCommand(self) -> list[str]:
        return list(self.engineCommand) if self.engineCommand else defaultEngineCommand()

    def _launch(self, arguments: list[str], workDirectory: Path) -> EngineRun:
        """A started run of the engine ``arguments``: on the warm engine (started now if needed), else in its own
        process."""
        if self._keepEngineWarm:
            self.startEngine()
            return self._engine.submit(arguments)
        process = EngineProcess(self._engineCommand() + arguments, engineEnvironment(), str(workDirectory))
        process.start()
        return process

    def _validate(self, inputs: RunInputs) -> None:
        for role, node in (("fixed volume", inputs.fixed), ("moving volume", inputs.moving)):
            if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
                raise ValueError(f"choose a scalar volume as the {role}")
            if node.GetScene() is not self.scene:
                raise ValueError(f"the {role} {node.GetName()!r} is not in this logic's scene")
            image = node.GetImageData()
            if image is None or image.GetNumberOfPoints() == 0:
                raise ValueError(f"the {role} {node.GetName()!r} has no image data")
            if image.GetNumberOfScalarComponents() != 1:
                raise ValueError(f"the {role} {node.GetName()!r} has {image.GetNumberOfScalarComponents()} "
                                 "components per voxel; choose a grey-level volume")
        if inputs.fixed is inputs.moving:
            raise ValueError("the fixed and moving volumes are the same node; choose two volumes")
        for node in (inputs.moving, inputs.movingSegmentation):
            if node is not None:
                prealignment(node, inputs.fixed.GetParentTransformNode())  # a nonlinear placement is refused
        for role, node in (("fixed segmentation", inputs.fixedSegmentation),
                           ("moving segmentation", inputs.movingSegmentation)):
            if node is None:
                continue
            if not node.IsA("vtkMRMLSegmentationNode"):
                raise ValueError(f"the {role} must be a segmentation node")
            if node.GetSegmentation().GetNumberOfSegments() == 0:
                raise ValueError(f"the {role} {node.GetName()!r} has no segments")
        if (inputs.fixedLandmarks is None) != (inputs.movingLandmarks is None):
            missing = "moving" if inputs.movingLandmarks is None else "fixed"
            raise ValueError(f"choose the {missing} landmarks too: TRE needs a point list for each volume")

    def _writeInputs(self, inputs: RunInputs, workDirectory: Path, options: RegistrationOptions,
                     landmarks: Optional[LandmarkPairs]) -> list[str]:
        """Write the inputs for the engine; returns its arguments."""
        fixedPath, movingPath = workDirectory / "fixed.nrrd", workDirectory / "moving.nrrd"
        writeVolume(inputs.fixed, fixedPath)
        # The moving volume as displayed in the fixed volume's frame: a pre-alignment the user made is kept.
        movingFrame = prealignment(inputs.moving, inputs.fixed.GetParentTransformNode())
        writeVolume(inputs.moving, movingPath, movingFrame)
        fixedSegmentationPath = movingSegmentationPath = None
        if inputs.movingSegmentation is not None:
            inputs.movingSegments = segmentInfos(inputs.movingSegmentation)
            movingSegmentationPath = workDirectory / "moving_seg.nrrd"
            writeLabelmap(inputs.movingSegmentation, inputs.movingSegments, inputs.moving, movingSegmentationPath,
                          movingFrame)
        if inputs.fixedSegmentation is not None:
            inputs.fixedSegments = matchLabels(inputs.fixedSegmentation, inputs.movingSegments)
            fixedSegmentationPath = workDirectory / "fixed_seg.nrrd"
            writeLabelmap(inputs.fixedSegmentation, inputs.fixedSegments, inputs.fixed, fixedSegmentationPath)
        fixedLandmarksPath = movingLandmarksPath = None
        if landmarks is not None:
            inputs.landmarkNames = landmarks.displayNames
            fixedLandmarksPath = workDirectory / "fixed_landmarks.csv"
            movingLandmarksPath = workDirectory / "moving_landmarks.csv"
            writeLandmarks(landmarks.fixedRows, fixedLandmarksPath)
            writeLandmarks(landmarks.movingRows, movingLandmarksPath)
        return engineArguments(options, fixedPath, movingPath, workDirectory / OUTPUT_FOLDER,
                               fixedSegmentationPath, movingSegmentationPath, fixedLandmarksPath, movingLandmarksPath)

    def _finish(self, run: _Run) -> RegistrationResult:
        code = run.process.returnCode
        if code != ExitCode.OK:
            raise _errorFor(code, run.process.errorMessage(), run.process.killedBySystem())
        outputDirectory = run.workDirectory / OUTPUT_FOLDER
        try:
            result = importResults(self.scene, outputDirectory, run.inputs, run.options.importGateMaps)
        except (RuntimeError, ValueError, OSError) as error:
            raise RegistrationError(f"cannot load the registration results: {error}", code) from error
        if run.options.keepTemporaryFiles:
            result.outputDirectory = str(outputDirectory)
        return result

    def _ended(self, run: _Run) -> None:
        """Remove the run's temporary files (unless kept); end the warm engine if it was turned off meanwhile."""
        if run.options.keepTemporaryFiles:
            logging.info("SHMoAReg: temporary files kept in %s", run.workDirectory)
        else:
            shutil.rmtree(run.workDirectory, ignore_errors=True)
        if not self._keepEngineWarm:
            self.stopEngine()


def _errorFor(code: int, message: str, killed: bool) -> RegistrationError:
    """The exception for an engine that ended with ``code`` (``killed``: from outside, by the system)."""
    if code == ExitCode.CANCELLED:
        return RegistrationCancelled(message, code)
    if killed:
        return RegistrationError("the registration process was killed by the system, which usually means it ran "
                                 "out of memory; try the CPU device or a smaller image", code)
    return RegistrationError(message, code)
