"""Config loader: precedence, one-line errors naming the key, YAML round trip, the shipped experiment files."""

import re
from pathlib import Path

import pytest

from rexthinker_rl.config import ConfigError, load_config, to_yaml, valid_keys

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_defaults_are_the_rex_thinker_recipe():
    config = load_config()
    assert (config.data.rollout_batch_size, config.rollout.n, config.actor.global_batch_size) == (64, 16, 64)
    assert config.actor.lr == 1e-6 and config.actor.weight_decay == 1e-2
    assert (config.actor.clip_ratio_low, config.actor.clip_ratio_high, config.actor.clip_ratio_dual) == (0.2, 0.3, 3.0)
    assert (config.algorithm.kl_mode, config.algorithm.kl_estimator, config.algorithm.kl_coef) == (
        "loss",
        "low_var_kl",
        1e-2,
    )
    assert (config.data.min_pixels, config.data.max_pixels) == (16 * 28 * 28, 1280 * 28 * 28)
    assert (config.rollout.tensor_parallel_size, config.rollout.gpu_memory_utilization) == (2, 0.6)
    assert (config.rollout.temperature, config.rollout.top_p) == (1.0, 0.99)
    assert config.derived.sequences_per_step == 64 * 16


def test_precedence_defaults_yaml_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("actor:\n  lr: 3.0e-6\ntrainer:\n  total_steps: 7\n")
    config = load_config(path, ["actor.lr=2e-6"])
    assert config.actor.lr == 2e-6  # override beats YAML
    assert config.trainer.total_steps == 7  # YAML beats default
    assert config.actor.weight_decay == 1e-2  # default kept


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["actor.lrr=1e-6"], "unknown config key 'actor.lrr' (did you mean actor.lr?)"),
        (["trainer.total_step=3"], "did you mean trainer.total_steps?"),
        (["acter.lr=1e-6"], "did you mean actor.lr?"),
    ],
)
def test_typo_names_the_nearest_key(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_typo_in_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rollout:\n  temprature: 0.7\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml: unknown config key 'rollout.temprature' \(did you mean rollout.temperature\?\)"
    ):
        load_config(path)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["rollout.n=sixteen"])
    message = str(info.value)
    assert "rollout.n" in message and "sixteen" in message and "\n" not in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("rollout.top_p=1.5", "rollout.top_p"),
        ("actor.lr=-1", "actor.lr"),
        ("rollout.engine=sglang", "rollout.engine"),
        ("algorithm.kl_estimator=k9", "algorithm.kl_estimator"),
        ("data.max_prompt_length=0", "data.max_prompt_length"),
        ("algorithm.adv_eps=0", "algorithm.adv_eps"),  # an all-equal group would divide 0 by 0
    ],
)
def test_bad_value_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_cross_section_rule():
    with pytest.raises(ConfigError, match="multiple of actor.global_batch_size"):
        load_config(None, ["data.rollout_batch_size=48", "actor.global_batch_size=32"])


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("actor: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["actor.lr"])


def test_round_trip_through_yaml(tmp_path):
    config = load_config(None, ["actor.lr=5e-6", "reward.components=[]", "reward.function=rewards.box:iou_f1"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(config))
    again = load_config(path)
    assert again == config


@pytest.mark.parametrize("name", ["grpo_tiny.yaml", "grpo_refcocog.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert config.derived.sequences_per_step == config.data.rollout_batch_size * config.rollout.n


def test_valid_keys_cover_nested_sections():
    keys = valid_keys()
    assert "model.lora.rank" in keys and "actor.clip_ratio_dual" in keys and "sft.lr" in keys


def test_derived_values_are_typed_and_follow_the_config():
    """config.derived: a frozen record computed once (not a dict), from which the runtime and trainer read topology."""
    import dataclasses

    derived = load_config(None, ["trainer.device=cpu"]).derived
    assert dataclasses.is_dataclass(derived) and derived.colocated and derived.sharded and not derived.on_gpu
    with pytest.raises(dataclasses.FrozenInstanceError):
        derived.colocated = False
    torch_run = load_config(None, ["actor.strategy=torch", "algorithm.kl_mode=none"]).derived
    assert torch_run.colocated and torch_run.actor_world_size == 1 and not torch_run.uses_reference  # one process
    torch_separate = ["actor.strategy=torch", "rollout.placement=separate"]
    assert not load_config(None, torch_separate).derived.colocated
    lora = load_config(None, ["model.lora.rank=8"]).derived
    assert lora.uses_reference and not lora.needs_reference_policy  # the actor with adapters off
    assert load_config(None, ["actor.ppo_epochs=2"]).derived.updates_per_step == 2
    assert not load_config(None, ["actor.ppo_epochs=2"]).derived.on_policy
    assert not load_config(None, ["algorithm.kl_mode=reward"]).derived.on_policy
    assert load_config(None, ["rollout.placement=separate", "trainer.device=cpu"]).derived.colocated is False


def test_colocated_tensor_parallelism_needs_cuda():
    from rexthinker_rl.runtime.topology import check_topology

    with pytest.raises(ConfigError, match="rollout.tensor_parallel_size=2 with rollout.placement=colocate needs CUDA"):
        check_topology(load_config(None, ["trainer.device=cpu"]))
    two_ranks = ["trainer.device=cpu", "trainer.n_gpus_per_node=2"]  # what 2 cores seat (check_local_resources)
    check_topology(load_config(None, [*two_ranks, "rollout.tensor_parallel_size=1"]))
    check_topology(load_config(None, [*two_ranks, "rollout.engine=hf"]))  # no vLLM groups to form


def test_a_group_of_one_is_refused():
    """rollout.n=1 gives every response advantage 0 (a group of one): it trained on nothing, silently (issue 28)."""
    with pytest.raises(ConfigError, match=r"^rollout.n=1 is invalid: expected a group size >= 2"):
        load_config(None, ["rollout.n=1"])
    assert load_config(None, ["rollout.n=2"]).rollout.n == 2


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optimizer.betas=[0.9,0.99]"], "unknown config section 'optimizer': the sections are data, model, "),
        (["optimizer.betas=[0.9,0.99]"], "; 'betas' is actor.betas"),
        (["trainr.seed=3"], "unknown config section 'trainr' (did you mean trainer.seed?)"),
    ],
)
def test_an_unknown_section_is_named_as_a_section(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_an_unknown_section_in_yaml_lists_the_sections(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("optim:\n  lr: 1.0e-6\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: unknown config section 'optim': the sections are data, model"):
        load_config(path)


@pytest.mark.parametrize(
    "override", ["trainer.seed=100000000000000000000000", "data.seed=-1", "rollout.seed=4294967296"]
)
def test_seeds_out_of_range_are_refused(override):
    """trainer.seed=10**23 loaded, then failed as "Overflow when unpacking long long" deep in seeding (issue 28)."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=.* is invalid: expected a seed in 0..4294967295"):
        load_config(None, [override])


def test_the_rules_name_exactly_the_registries_keys():
    """config_rules names the backends', engines' and AdamW kernels' keys itself (those modules import the config's types); a key
    added to a registry without the rule, or the other way round, fails here."""
    from rexthinker_rl.config.rules import ENGINE_NAMES, OPTIMIZER_IMPLS, STRATEGIES
    from rexthinker_rl.rollout import ENGINES
    from rexthinker_rl.train.backends import BACKENDS
    from rexthinker_rl.train.policy import ADAMW_KERNELS

    assert tuple(BACKENDS) == STRATEGIES and tuple(ENGINES) == ENGINE_NAMES
    assert tuple(ADAMW_KERNELS) == OPTIMIZER_IMPLS


def test_checking_a_config_changes_nothing():
    """A function replaces the default components in load_config (the saved config says what is scored); the rules
    only read: a config with both, built by hand, is refused and left as it was."""
    import copy

    from rexthinker_rl.config import Config
    from rexthinker_rl.config.rules import check

    assert load_config(None, ["reward.function=rewards.box:iou_f1"]).reward.components == []
    config = Config()
    config.reward.function = "rewards.box:iou_f1"
    before = copy.deepcopy(config)
    with pytest.raises(ConfigError, match="reward.function=rewards.box:iou_f1 and reward.components are both set"):
        check(config)
    assert config == before
