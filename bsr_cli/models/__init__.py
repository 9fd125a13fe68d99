"""The model zoo: one module per paper family, each registering its named variants."""
import importlib
import importlib.util

from bsr_cli.models.registry import create_model, get_model_info, list_models, register_model

# importing a family module registers its models
from bsr_cli.models import srresnet, ma2019, e2fif, bbcu, ebsr, scales, abnn, light_fp  # noqa: E402,F401

if importlib.util.find_spec("bsr_cli.models.swinir") is not None:  # the transformer family
    importlib.import_module("bsr_cli.models.swinir")

__all__ = ["create_model", "list_models", "get_model_info", "register_model"]
