"""detrlib: DETR from the ground up, the library behind the DETR book."""
from detrlib.checkpoint import load_official_checkpoint
from detrlib.config import Config, DataConfig, ModelConfig, TrainConfig, get_profile
from detrlib.criterion import SetCriterion, build_criterion
from detrlib.matcher import HungarianMatcher
from detrlib.model import DETR, PostProcess, build_model, count_parameters

__version__ = "0.1.0"

__all__ = ["Config", "DataConfig", "DETR", "HungarianMatcher", "ModelConfig", "PostProcess", "SetCriterion",
           "TrainConfig", "build_criterion", "build_model", "count_parameters", "get_profile",
           "load_official_checkpoint"]
