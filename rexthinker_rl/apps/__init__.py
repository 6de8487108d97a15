"""The commands people run (console scripts in pyproject.toml): train and SFT (``cli``), convert, plan, infer, the
Gradio demo, the rollout viewer, drawing boxes (``visualize``), the tiny model (``tiny_cli``), and how every command
ends, with one line instead of a traceback (``console``)."""
