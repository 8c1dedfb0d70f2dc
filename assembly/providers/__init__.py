"""Model backends behind one async protocol (see base.Model and types)."""

from assembly.providers.base import Model
from assembly.providers.registry import ModelPool, ModelSpec, load_model, parse_model_spec
from assembly.providers.types import GenerateRequest, GenerateResponse, Message, ModelError, Usage

__all__ = [
    "GenerateRequest",
    "GenerateResponse",
    "Message",
    "Model",
    "ModelError",
    "ModelPool",
    "ModelSpec",
    "Usage",
    "load_model",
    "parse_model_spec",
]
