"""Tests of task grouping (mtl.grouping) and the planted-groups source."""
