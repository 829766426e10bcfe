"""Tests of attention-head masking, importance and pruning (mtl.attention_heads)."""
