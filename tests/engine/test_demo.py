"""The demo model: trained from the recipe, cached by its key, rebuilt when the recipe changes."""

from dataclasses import replace

import layertracer as lt
from layertracer.demo.model import DemoRecipe, build_demo_model, cached_demo_model, demo_corpus

TINY = DemoRecipe(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                  vocab_size=400, block_size=32, steps=2, batch_size=4, repeats=1)


def test_corpus_is_deterministic_and_holds_the_facts():
    documents = demo_corpus(TINY)
    assert documents == demo_corpus(TINY)
    text = "\n".join(documents)
    assert "The capital of France is Paris" in text and "法国的首都是巴黎" in text
    with_exams = demo_corpus(replace(TINY, exam_repeats=1))
    assert any(d.startswith("以下是中国关于") and "答案：" in d for d in with_exams)


def test_build_caches_by_recipe(tmp_path):
    folder = build_demo_model(tmp_path / "demo", recipe=TINY)
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert cached_demo_model(folder, TINY) == folder
    assert build_demo_model(tmp_path / "demo", recipe=TINY) == folder
    assert weights.stat().st_mtime_ns == stamp  # reused, not retrained
    assert cached_demo_model(folder, replace(TINY, steps=3)) is None
    loaded = lt.load_model(str(folder), device="cpu", dtype="float32")
    assert loaded.info.architecture == "Qwen3ForCausalLM" and loaded.info.num_layers == 2
    result = lt.trace(loaded, "antonyms_zh", options=lt.TraceOptions(similarity=False, position_view=False))
    assert result.num_layers == 2 and not (tmp_path / "demo.tmp").exists()
