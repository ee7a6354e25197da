"""Geometric verification: Numba RANSAC over point correspondences."""
