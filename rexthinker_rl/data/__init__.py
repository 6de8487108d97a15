"""The data path, from a dataset row to the prompt a model sees: reading rows (``rows``: parquet, shards, JSONL),
decoding pictures (``images``), the resized frame every box lives in (``frames``), box hints (``hints``), text a row
must not carry (``reserved``), prompt presets kept as data (``prompts``, ``assets/``), a parquet set's recorded frame
(``parquet_meta``), the RL dataset and its resumable sampler (``dataset``), and the data settings a checkpoint's
position depends on (``position``)."""
