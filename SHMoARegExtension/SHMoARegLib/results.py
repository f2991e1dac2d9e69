"""Engine outputs into the scene: transform, warped images, Jacobian and uncertainty maps, evaluation tables,
the network's maps (and SHMoAReg's gate maps) with their table, in one folder.

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
from SHMoARegLib.maps import MapInfo, importModelMaps, readMapsInfo
from SHMoARegLib.routing import RoutingInfo, gateDescription, importGateMaps, readRoutingInfo
from SHMoARegLib.scene import SceneChanges, placeInFolder, uniqueFolderName
from SHMoARegLib.segmentations import SegmentInfo, readSegmentation
from SHMoARegLib.utilisation import utilisationChart, utilisationTable
from SHMoARegLib.volumes import (RESULT_ATTRIBUTE, copyDisplay, isIdentity, prealignment, readTransform,
                                 readVolume)
from shmoareg.protocol import (COMPLETION_MARKER, JACOBIAN_FILE, TRANSFORM_FILE, UNCERTAINTY_FILE, WARPED_FILE,
                               WARPED_SEGMENTATION_FILE)



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


@dataclass(frozen=True)
class OverlayChoice:
    """A map the panel can show over the fixed volume: its key, menu label, description and node."""

    key: str
    label: str
    description: str
    node: slicer.vtkMRMLVolumeNode


@dataclass
class RegistrationResult:
    """Nodes made by one registration.

    ``mapNodes`` are the network's maps by name (``maps.json``; SHMoAReg's arg-max expert maps are
    ``level{L}_{a}_expert``), label maps for categorical maps and scalar volumes otherwise, ``maps`` their
    descriptions; ``gateNodes`` SHMoAReg's gate maps by key (``level{L}_{a}_gate{E}``), when asked for, and
    ``routing`` its ``routing.json`` (None for other networks);
    ``utilisationTableNode`` one row per map (category shares, scalar statistics; :mod:`SHMoARegLib.utilisation`).
    ``jacobianNode`` is the transform's Jacobian determinant (shown blue-white-red around 1, folding in
    green); ``uncertaintyNode`` (mm) exists when asked for; the landmark and segment tables when the run
    had landmarks or segmentations (see :mod:`SHMoARegLib.evaluation`).
    """

    transformNode: slicer.vtkMRMLTransformNode
    warpedVolumeNode: slicer.vtkMRMLScalarVolumeNode
    warpedSegmentationNode: Optional[slicer.vtkMRMLSegmentationNode]
    mapNodes: dict[str, slicer.vtkMRMLVolumeNode]
    utilisationTableNode: Optional[slicer.vtkMRMLTableNode]
    summary: dict
    folderItemId: int = 0
    mapColorTableNodes: list[slicer.vtkMRMLColorTableNode] = field(default_factory=list)
    gateNodes: dict[str, slicer.vtkMRMLScalarVolumeNode] = field(default_factory=dict)
    maps: list[MapInfo] = field(default_factory=list)
    routing: Optional[RoutingInfo] = None
    utilisationChartNode: Optional[slicer.vtkMRMLPlotChartNode] = None
    outputDirectory: Optional[str] = None
    jacobianNode: Optional[slicer.vtkMRMLScalarVolumeNode] = None
    uncertaintyNode: Optional[slicer.vtkMRMLScalarVolumeNode] = None
    landmarkTableNode: Optional[slicer.vtkMRMLTableNode] = None
    segmentTableNode: Optional[slicer.vtkMRMLTableNode] = None

    def overlayChoices(self) -> list[OverlayChoice]:
        """The maps to offer as overlays: the network's maps in the engine's order, then the gate maps."""
        choices = [OverlayChoice(info.name, info.label, info.description, self.mapNodes[info.name])
                   for info in self.maps if info.name in self.mapNodes]
        for key, node in self.gateNodes.items():
            description = gateDescription(key, self.routing) if self.routing is not None else key
            choices.append(OverlayChoice(key, key, description, node))
        return choices


def importResults(scene: slicer.vtkMRMLScene, outputDirectory: Path, inputs: RunInputs,
                  includeGateMaps: bool = True) -> RegistrationResult:
    """Load a finished run's outputs; the moving volume (and segmentation) then observe the new transform."""
    outputDirectory = Path(outputDirectory)
    summaryPath = outputDirectory / COMPLETION_MARKER
    if not summaryPath.is_file():
        raise RuntimeError(f"the registration engine wrote no {COMPLETION_MARKER} in {outputDirectory}; "
                           "its outputs are incomplete")
    summary = json.loads(summaryPath.read_text())
    maps = readMapsInfo(outputDirectory)
    routing = readRoutingInfo(outputDirectory)
    pairName = inputs.pairName
    changes = SceneChanges(scene)
    try:
        folder = changes.createFolder(uniqueFolderName(scene, pairName))
        fixedParent = inputs.fixed.GetTransformNodeID()
        transform = readTransform(scene, outputDirectory / TRANSFORM_FILE,
                                  scene.GenerateUniqueName(f"{pairName} transform"))
        transform.SetAttribute(RESULT_ATTRIBUTE, "1")
        transform.SetNodeReferenceID(transform.GetMovingNodeReferenceRole(), inputs.moving.GetID())
        transform.SetNodeReferenceID(transform.GetFixedNodeReferenceRole(), inputs.fixed.GetID())
        warpedVolume = readVolume(scene, outputDirectory / WARPED_FILE,
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
        mapNodes: dict[str, slicer.vtkMRMLVolumeNode] = {}
        gateNodes: dict[str, slicer.vtkMRMLScalarVolumeNode] = {}
        colors: list[slicer.vtkMRMLColorTableNode] = []
        table = chart = None
        if maps is not None or routing is not None:
            mapsFolder = changes.createFolder("Maps", folder)
            if maps is not None:
                mapNodes, colors = importModelMaps(scene, maps, pairName)
            if routing is not None and includeGateMaps:
                gateNodes = importGateMaps(scene, outputDirectory, routing, pairName)
            for node in [*colors, *mapNodes.values(), *gateNodes.values()]:
                placeInFolder(scene, node, mapsFolder)
            outputs += [*mapNodes.values(), *gateNodes.values()]
        if maps is not None and maps.maps:
            networkShare = summary.get("network_share")
            if networkShare is None and routing is not None:
                networkShare = routing.networkShare
            title = f"{pairName} {'expert utilisation' if routing is not None else 'map statistics'}"
            table = utilisationTable(scene, maps, scene.GenerateUniqueName(title), networkShare)
            chartNodes = utilisationChart(scene, table, maps, title)
            chart = chartNodes[0]
            for node in [table, *chartNodes]:
                placeInFolder(scene, node, folder)
        for node in outputs:
            # Outputs live in the fixed image's space, wherever the fixed image is placed.
            node.SetAndObserveTransformNodeID(fixedParent)
        summary["routing"] = asdict(routing) if routing is not None else None
        # A moving node pre-aligned by the user (linear transforms relative to the fixed volume's frame) keeps
        # that pre-alignment: a copy of it, under the new transform, places the node.
        movingNodes = [node for node in (inputs.moving, inputs.movingSegmentation) if node is not None]
        placements, byMatrix = {}, {}
        for node in movingNodes:
            matrix = prealignment(node, inputs.fixed.GetParentTransformNode())
            key = tuple(matrix.GetElement(row, column) for row in range(4) for column in range(4))
            if isIdentity(matrix):
                byMatrix[key] = transform
            elif key not in byMatrix:  # one copy for nodes placed alike (the volume and its segmentation)
                kept = scene.AddNewNodeByClass(
                    "vtkMRMLLinearTransformNode", scene.GenerateUniqueName(f"{node.GetName()} pre-alignment"))
                kept.SetMatrixTransformToParent(matrix)
                kept.SetAndObserveTransformNodeID(transform.GetID())
                placeInFolder(scene, kept, folder)
                byMatrix[key] = kept
            placements[node.GetID()] = byMatrix[key]
    except BaseException:
        changes.rollback()
        raise
    # Last, when nothing can fail any more: show the moving images through the new transform.
    for node in movingNodes:
        node.SetAndObserveTransformNodeID(placements[node.GetID()].GetID())
    return RegistrationResult(transform, warpedVolume, warpedSegmentation, mapNodes, table, summary,
                              folderItemId=folder, mapColorTableNodes=colors, gateNodes=gateNodes,
                              maps=maps.maps if maps is not None else [], routing=routing, utilisationChartNode=chart,
                              jacobianNode=jacobian, uncertaintyNode=uncertainty, landmarkTableNode=landmarks,
                              segmentTableNode=segments)


def describeNetworkShare(summary: dict) -> Optional[str]:
    """What the network's maps show, from ``summary.json``: the network's prediction, its refinement on the pair
    and the network share. None for a run without a network."""
    share = summary.get("network_share")
    if share is None:
        return None
    steps = summary.get("method", {}).get("refine_steps", 0)
    if summary.get("network_prediction") == "rejected":
        return ("The network's maps are those of its prediction, which was not used: it matched the pair "
                f"worse than no deformation, so the registration is the refinement's alone ({steps} steps from "
                "the affine; network share 0).")
    refinement = (f"refined afterwards by {steps} step{'s' if steps != 1 else ''} on the pair" if steps
                  else "not refined afterwards")
    return (f"The network's maps are those of its prediction, {refinement}; the prediction accounts for "
            f"{100 * share:.0f} % of the final deformation beyond the affine (network share {share:.2f}).")


def _showUncertainty(node: slicer.vtkMRMLScalarVolumeNode) -> None:
    """Inferno from 0 mm (black) to the map's largest value."""
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(infernoColorNode(node.GetScene()).GetID())
    display.AutoWindowLevelOff()
    largest = float(node.GetImageData().GetScalarRange()[1])
    display.SetWindowLevelMinMax(0.0, largest if largest > 0.0 else 1.0)
