"""Tests of the loss weightings (mtl.weighting)."""
