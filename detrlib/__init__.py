"""detrlib: DETR from the ground up, the library behind the DETR book."""
from detrlib.checkpoint import load_official_checkpoint
from detrlib.config import Config, DataConfig, ModelConfig, TrainConfig, get_profile
from detrlib.model import DETR, PostProcess, build_model, count_parameters

__version__ = "0.1.0"

__all__ = ["Config", "DataConfig", "DETR", "ModelConfig", "PostProcess", "TrainConfig", "build_model",
           "count_parameters", "get_profile", "load_official_checkpoint"]
