"""Scene bookkeeping: undo every node a step added, and the subject-hierarchy folder of a run."""

from __future__ import annotations

from typing import Optional

import slicer
import vtk


def _nodeIds(scene: slicer.vtkMRMLScene) -> set[str]:
    return {scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())}


def subjectHierarchy(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLSubjectHierarchyNode:
    """The scene's subject-hierarchy node (created when missing, as Slicer does)."""
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


class SceneChanges:
    """Records the nodes and folders added after construction so that they can all be removed.

    Singleton nodes (selection, interaction, ...) and the subject-hierarchy node (created here
    when missing) are never removed: Slicer creates them on first use and expects them to stay.
    """

    def __init__(self, scene: slicer.vtkMRMLScene) -> None:
        self.scene = scene
        subjectHierarchy(scene)
        self._before = _nodeIds(scene)
        self._folders: list[int] = []

    def addedNodes(self) -> list[slicer.vtkMRMLNode]:
        """Nodes added since construction, in the order the scene holds them."""
        added = []
        for index in range(self.scene.GetNumberOfNodes()):
            node = self.scene.GetNthNode(index)
            if node.GetID() not in self._before and not node.GetSingletonTag():
                added.append(node)
        return added

    def createFolder(self, name: str, parent: Optional[int] = None) -> int:
        """A subject-hierarchy folder (under the scene item by default) that rollback removes."""
        hierarchy = subjectHierarchy(self.scene)
        folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID() if parent is None else parent, name)
        self._folders.append(folder)
        return folder

    def rollback(self) -> None:
        """Remove every added node (newest first) with its subject-hierarchy item, then the folders."""
        hierarchy = subjectHierarchy(self.scene)
        for node in reversed(self.addedNodes()):
            item = hierarchy.GetItemByDataNode(node)
            if item:  # removed explicitly: only the Slicer application removes items with their nodes
                hierarchy.RemoveItem(item, False, False)
            if self.scene.IsNodePresent(node):
                self.scene.RemoveNode(node)
        for folder in reversed(self._folders):
            hierarchy.RemoveItem(folder, False, False)
        self._folders = []


def placeInFolder(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLNode, folder: int) -> None:
    """Put ``node`` under ``folder`` (creating its subject-hierarchy item when Slicer has not)."""
    hierarchy = subjectHierarchy(scene)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, folder)
    else:
        hierarchy.CreateItem(folder, node)


def uniqueFolderName(scene: slicer.vtkMRMLScene, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``... when a top-level folder already has it."""
    hierarchy = subjectHierarchy(scene)
    candidate, number = name, 1
    while hierarchy.GetItemChildWithName(hierarchy.GetSceneItemID(), candidate):
        number += 1
        candidate = f"{name} ({number})"
    return candidate


def folderChildren(scene: slicer.vtkMRMLScene, folder: int) -> list[slicer.vtkMRMLNode]:
    """Data nodes anywhere under ``folder``."""
    hierarchy = subjectHierarchy(scene)
    items = vtk.vtkIdList()
    hierarchy.GetItemChildren(folder, items, True)
    nodes = (hierarchy.GetItemDataNode(items.GetId(index)) for index in range(items.GetNumberOfIds()))
    return [node for node in nodes if node is not None]
