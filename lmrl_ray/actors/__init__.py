"""Ray actors that act: inference engines, engine pools and simulator replicas.

`engine.py` is the interface; `hf_engine.py` (Hugging Face, CPU or GPU) and
`vllm_engine.py` (vLLM, CUDA, optional extra) implement it; `factory.make_engine`
picks one; `pool.py` serves engines as Ray actors and `weights.py` broadcasts weights.
"""
