"""Axis-angle <-> rotation matrix <-> 6D, as thin wrappers over ``roma``.

Convention (ACTOR / PyTorch3D, reference/infant.md §2): matrices act on column vectors
(``R @ v``); the 6D representation is the first two **rows** of the matrix, ``R[..., :2, :]``
flattened, and 6D -> matrix Gram-Schmidt-orthonormalises those two rows and stacks
``b1, b2, b1 x b2`` as rows. roma's ``special_gramschmidt`` works on columns, hence the
transposes.
"""

from __future__ import annotations

import roma
import torch


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors (angle = norm, radians) -> (..., 3, 3)."""
    _check_last(axis_angle, (3,), "axis_angle")
    return roma.rotvec_to_rotmat(axis_angle)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) rotation vectors with angle in [0, pi]."""
    _check_last(matrix, (3, 3), "matrix")
    return roma.rotmat_to_rotvec(matrix)


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two rows."""
    _check_last(matrix, (3, 3), "matrix")
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3): rows b1 = a1/|a1|, b2 = the part of a2 orthogonal to b1, b3 = b1 x b2."""
    _check_last(rot6d, (6,), "rot6d")
    rows = rot6d.reshape(*rot6d.shape[:-1], 2, 3)
    return roma.special_gramschmidt(rows.transpose(-1, -2)).transpose(-1, -2)


def axis_angle_to_rot6d(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 6)."""
    return matrix_to_rot6d(axis_angle_to_matrix(axis_angle))


def rot6d_to_axis_angle(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3)."""
    return matrix_to_axis_angle(rot6d_to_matrix(rot6d))


def _check_last(tensor: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape[-len(shape):]) != shape or tensor.ndim < len(shape):
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, shape))}), got {tuple(tensor.shape)}")
