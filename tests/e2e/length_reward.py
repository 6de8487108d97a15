"""A reward for the end-to-end test: the random tiny model never earns the box reward, so score length instead."""


def shorter_is_better(inputs, max_chars: int = 200):
    return [{"overall": max(0.0, 1.0 - len(item["response"]) / max_chars)} for item in inputs]
