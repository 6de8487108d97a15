"""The model: loading a Qwen2.5-VL folder the one way every component does (``loading``), the tiny and real-shape
builders for offline tests (``tiny``, ``shapes``), LoRA adapters and their views (``lora``), EasyR1 checkpoints read
safely (``easyr1_checkpoint``), and the one forward every path uses: log-probs and entropy of response tokens in the
padded and packed layouts, the LM head in token chunks (``logprobs``)."""
