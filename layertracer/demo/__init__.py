"""The offline demo world: generated fact corpora, a trained tokenizer and a small demo model."""

from layertracer.demo.model import DemoRecipe, build_demo_model, cached_demo_model

__all__ = ["DemoRecipe", "build_demo_model", "cached_demo_model"]
