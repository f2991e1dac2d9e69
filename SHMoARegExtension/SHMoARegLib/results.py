"""Engine outputs into the scene: transform, warped images, Jacobian and uncertainty maps, evaluation tables,
routing maps and utilisation, in one folder.

Either every node of a run is added or none: a failure part-way removes what was added.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import slicer

from SHMoARegLib.colors import infernoColorNode, showWithJacobianColors
from SHMoARegLib.evaluation import landmarkTable, segmentTable
from SHMoARegLib.routing import importRoutingMaps, readRoutingInfo
from SHMoARegLib.scene import SceneChanges, placeInFolder, uniqueFolderName
from SHMoARegLib.segmentations import SegmentInfo, readSegmentation
from SHMoARegLib.utilisation import utilisationChart, utilisationTable
from SHMoARegLib.volumes import copyDisplay, readTransform, readVolume

TRANSFORM_FILE = "transform.h5"
WARPED_VOLUME_FILE = "warped_moving.nii.gz"
WARPED_SEGMENTATION_FILE = "warped_moving_seg.nii.gz"
SUMMARY_FILE = "summary.json"
JACOBIAN_FILE = "jacobian.nii"
UNCERTAINTY_FILE = "uncertainty.nii.gz"


@dataclass
class RunInputs:
    """The input nodes of a run, the segments as written for the engine and, by the label written for the
    engine, the name of each landmark."""

    fixed: slicer.vtkMRMLScalarVolumeNode
    moving: slicer.vtkMRMLScalarVolumeNode
    fixedSegmentation: Optional[slicer.vtkMRMLSegmentationNode] = None
    movingSegmentation: Optional[slicer.vtkMRMLSegmentationNode] = None
    fixedLandmarks: Optional[slicer.vtkMRMLMarkupsFiducialNode] = None
    movingLandmarks: Optional[slicer.vtkMRMLMarkupsFiducialNode] = None
    movingSegments: list[SegmentInfo] = field(default_factory=list)
    fixedSegments: list[SegmentInfo] = field(default_factory=list)
    landmarkNames: dict[str, str] = field(default_factory=dict)

    @property
    def pairName(self) -> str:
        return f"{self.moving.GetName()} to {self.fixed.GetName()}"

    @property
    def segmentNames(self) -> dict[int, str]:
        """Segment name by the label written for the engine (fixed-only segments included)."""
        return {info.label: info.name for info in [*self.fixedSegments, *self.movingSegments]}


@dataclass
class RegistrationResult:
    """Nodes made by one registration; ``routingNodes`` is keyed like ``level0_x_expert``/``level0_x_gate1``.

    ``jacobianNode`` is the transform's Jacobian determinant (shown blue-white-red around 1, folding in
    green); ``uncertaintyNode`` (mm) exists when asked for; the landmark and segment tables when the run
    had landmarks or segmentations (see :mod:`SHMoARegLib.evaluation`).
    """

    transformNode: slicer.vtkMRMLTransformNode
    warpedVolumeNode: slicer.vtkMRMLScalarVolumeNode
    warpedSegmentationNode: Optional[slicer.vtkMRMLSegmentationNode]
    routingNodes: dict[str, slicer.vtkMRMLVolumeNode]
    utilisationTableNode: Optional[slicer.vtkMRMLTableNode]
    summary: dict
    folderItemId: int = 0
    expertColorTableNode: Optional[slicer.vtkMRMLColorTableNode] = None
    utilisationChartNode: Optional[slicer.vtkMRMLPlotChartNode] = None
    outputDirectory: Optional[str] = None
    jacobianNode: Optional[slicer.vtkMRMLScalarVolumeNode] = None
    uncertaintyNode: Optional[slicer.vtkMRMLScalarVolumeNode] = None
    landmarkTableNode: Optional[slicer.vtkMRMLTableNode] = None
    segmentTableNode: Optional[slicer.vtkMRMLTableNode] = None


def importResults(scene: slicer.vtkMRMLScene, outputDirectory: Path, inputs: RunInputs,
                  includeGateMaps: bool = True) -> RegistrationResult:
    """Load a finished run's outputs; the moving volume (and segmentation) then observe the new transform."""
    outputDirectory = Path(outputDirectory)
    summaryPath = outputDirectory / SUMMARY_FILE
    if not summaryPath.is_file():
        raise RuntimeError(f"the registration engine wrote no {SUMMARY_FILE} in {outputDirectory}; "
                           "its outputs are incomplete")
    summary = json.loads(summaryPath.read_text())
    routing = readRoutingInfo(outputDirectory)
    pairName = inputs.pairName
    changes = SceneChanges(scene)
    try:
        folder = changes.createFolder(uniqueFolderName(scene, pairName))
        fixedParent = inputs.fixed.GetTransformNodeID()
        transform = readTransform(scene, outputDirectory / TRANSFORM_FILE,
                                  scene.GenerateUniqueName(f"{pairName} transform"))
        transform.SetNodeReferenceID(transform.GetMovingNodeReferenceRole(), inputs.moving.GetID())
        transform.SetNodeReferenceID(transform.GetFixedNodeReferenceRole(), inputs.fixed.GetID())
        warpedVolume = readVolume(scene, outputDirectory / WARPED_VOLUME_FILE,
                                  scene.GenerateUniqueName(f"{inputs.moving.GetName()} warped"))
        copyDisplay(inputs.moving, warpedVolume)
        outputs = [transform, warpedVolume]
        warpedSegmentation = None
        if inputs.movingSegmentation is not None:
            warpedPath = outputDirectory / WARPED_SEGMENTATION_FILE
            if not warpedPath.is_file():
                raise RuntimeError(f"the registration engine wrote no {WARPED_SEGMENTATION_FILE}")
            warpedSegmentation = readSegmentation(
                scene, warpedPath, scene.GenerateUniqueName(f"{inputs.movingSegmentation.GetName()} warped"),
                inputs.movingSegments, inputs.fixed)
            outputs.append(warpedSegmentation)
        jacobian = readVolume(scene, outputDirectory / JACOBIAN_FILE,
                              scene.GenerateUniqueName(f"{pairName} Jacobian determinant"))
        showWithJacobianColors(jacobian.GetDisplayNode())
        outputs.append(jacobian)
        uncertainty = None
        if (outputDirectory / UNCERTAINTY_FILE).is_file():
            uncertainty = readVolume(scene, outputDirectory / UNCERTAINTY_FILE,
                                     scene.GenerateUniqueName(f"{pairName} uncertainty (mm)"))
            _showUncertainty(uncertainty)
            outputs.append(uncertainty)
        for node in outputs:
            placeInFolder(scene, node, folder)
        metrics = summary.get("metrics") or {}
        landmarks = landmarkTable(scene, metrics, inputs.landmarkNames,
                                  scene.GenerateUniqueName(f"{pairName} landmark TRE"))
        segments = segmentTable(scene, metrics, inputs.segmentNames,
                                scene.GenerateUniqueName(f"{pairName} segment overlap"))
        for node in (landmarks, segments):
            if node is not None:
                placeInFolder(scene, node, folder)
        routingNodes: dict[str, slicer.vtkMRMLVolumeNode] = {}
        table = chart = colors = None
        if routing is not None:
            routingFolder = changes.createFolder("Routing", folder)
            routingNodes, colors = importRoutingMaps(scene, outputDirectory, routing, pairName, includeGateMaps)
            for node in [colors, *routingNodes.values()]:
                placeInFolder(scene, node, routingFolder)
            outputs += routingNodes.values()
            table = utilisationTable(scene, routing, scene.GenerateUniqueName(f"{pairName} expert utilisation"))
            chartNodes = utilisationChart(scene, table, colors, f"{pairName} expert utilisation")
            chart = chartNodes[0]
            for node in [table, *chartNodes]:
                placeInFolder(scene, node, folder)
        for node in outputs:
            # Outputs live in the fixed image's space, wherever the fixed image is placed.
            node.SetAndObserveTransformNodeID(fixedParent)
        summary["routing"] = asdict(routing) if routing is not None else None
    except BaseException:
        changes.rollback()
        raise
    # Last, when nothing can fail any more: show the moving images through the new transform.
    for movingNode in (inputs.moving, inputs.movingSegmentation):
        if movingNode is not None:
            movingNode.SetAndObserveTransformNodeID(transform.GetID())
    return RegistrationResult(transform, warpedVolume, warpedSegmentation, routingNodes, table, summary,
                              folderItemId=folder, expertColorTableNode=colors, utilisationChartNode=chart,
                              jacobianNode=jacobian, uncertaintyNode=uncertainty, landmarkTableNode=landmarks,
                              segmentTableNode=segments)


def describeNetworkShare(summary: dict) -> Optional[str]:
    """What the routing maps show, from ``summary.json``: the network's prediction, its refinement on the pair
    and the network share. None for a run without a network."""
    share = summary.get("network_share")
    if share is None:
        return None
    steps = summary.get("method", {}).get("refine_steps", 0)
    if summary.get("network_prediction") == "rejected":
        return ("The routing maps are those of the network's prediction, which was not used: it matched the pair "
                f"worse than no deformation, so the registration is the refinement's alone ({steps} steps from "
                "the affine; network share 0).")
    refinement = (f"refined afterwards by {steps} step{'s' if steps != 1 else ''} on the pair" if steps
                  else "not refined afterwards")
    return (f"The routing maps are those of the network's prediction, {refinement}; the prediction accounts for "
            f"{100 * share:.0f} % of the final deformation beyond the affine (network share {share:.2f}).")


def _showUncertainty(node: slicer.vtkMRMLScalarVolumeNode) -> None:
    """Inferno from 0 mm (black) to the map's largest value."""
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(infernoColorNode(node.GetScene()).GetID())
    display.AutoWindowLevelOff()
    largest = float(node.GetImageData().GetScalarRange()[1])
    display.SetWindowLevelMinMax(0.0, largest if largest > 0.0 else 1.0)
