"""Estimators that turn face feature vectors into age and gender."""

from ._ordinal import OrdinalLogisticRegression

__all__ = ["OrdinalLogisticRegression"]
