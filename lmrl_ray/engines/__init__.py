"""Inference engines: plain classes that turn prompts into completions with token ids and
log-probs, hold a policy version and take new weights.

`base.py` is the interface; `hf_engine.py` (Hugging Face, CPU or GPU, value-guided
decoding; its KV cache in `kv_cache.py`) and `vllm_engine.py` (vLLM, CUDA, optional
extra) implement it; `factory.make_engine` picks one. The Ray shell around them (pools,
weight transport) is `lmrl_ray.actors`.
"""
