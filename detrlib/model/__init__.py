"""DETR's pieces: backbone, position encoding, attention, transformer, the model itself, the
denoising queries of DN-DETR (chapter 5), and the registry of named parts with a variant's."""
from detrlib.model.attention import Attention, record_attention
from detrlib.model.backbone import Backbone, Joiner
from detrlib.model.conditional import ConditionalDecoderLayer
from detrlib.model.denoising import Denoiser
from detrlib.model.detr import DETR, MLP, LearnedQueries, PostProcess, build_model
from detrlib.model.parameters import count_parameters
from detrlib.model.position_encoding import PositionEmbeddingLearned, PositionEmbeddingSine
from detrlib.model.registry import register
from detrlib.model.transformer import Transformer

__all__ = ["Attention", "Backbone", "ConditionalDecoderLayer", "DETR", "Denoiser", "Joiner", "LearnedQueries", "MLP",
           "PositionEmbeddingLearned", "PositionEmbeddingSine", "PostProcess", "Transformer", "build_model",
           "count_parameters", "record_attention", "register"]
