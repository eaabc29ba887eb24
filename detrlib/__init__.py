"""detrlib: DETR from the ground up, the library behind the DETR book."""
from detrlib.config import Config, DataConfig, ModelConfig, TrainConfig, get_profile

__version__ = "0.1.0"

__all__ = ["Config", "DataConfig", "ModelConfig", "TrainConfig", "get_profile"]
