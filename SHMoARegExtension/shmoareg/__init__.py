"""SHMoAReg registration engine: numpy, torch and SimpleITK only (never imports Slicer)."""

__version__ = "0.1.0"
