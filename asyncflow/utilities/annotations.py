"""Parameter annotations (Prefect's `prefect.utilities.annotations`)."""

from .._annotations import BaseAnnotation as BaseAnnotation
from .._annotations import allow_failure as allow_failure
from .._annotations import opaque as opaque
from .._annotations import quote as quote
from .._annotations import unmapped as unmapped

__all__ = ["BaseAnnotation", "allow_failure", "opaque", "quote", "unmapped"]
