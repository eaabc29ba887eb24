"""detrlib: DETR from the ground up, the library behind the DETR book."""
from detrlib.config import Config, DataConfig, ModelConfig, TrainConfig, get_profile
from detrlib.criterion import SetCriterion, build_criterion
from detrlib.matcher import HungarianMatcher

__version__ = "0.1.0"

__all__ = ["Config", "DataConfig", "ModelConfig", "TrainConfig", "get_profile",
           "HungarianMatcher", "SetCriterion", "build_criterion"]
