"""gridkit: 2-D grids of characters (maps, mazes, images)."""

from .grid import Grid, manhattan

__all__ = ["Grid", "manhattan"]
