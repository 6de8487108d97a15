"""The RL math, pure functions of tensors: group advantages, KL estimators, policy losses and their aggregation with
normalisers that make micro-batch losses add up exactly (``algorithms``, whose registry keys are the config's
choices), rollout correction (``rollout_correction``), masked reductions (``masking``), and the typed batch records
that cross Ray with the mini-batch plan of an update (``batch``)."""
