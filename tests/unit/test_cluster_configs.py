"""The launcher configs pass Ray's own validation (what `ray up` runs), so a typo in a key fails here."""

from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


@pytest.mark.parametrize("name", ["cluster.yaml", "local.yaml"])
def test_launcher_config_is_valid(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(config))


@pytest.mark.parametrize("name", ["cluster.yaml", "local.yaml"])
def test_a_misspelled_key_fails_validation(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    config["head_start_ray_comands"] = config.pop("head_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def test_learner_node_type_carries_the_learner_resource():
    config = yaml.safe_load((CLUSTER / "cluster.yaml").read_text())
    assert config["available_node_types"]["gpu_learner"]["resources"] == {"learner": 1}


def test_the_aws_cluster_runs_ray_with_token_auth():
    """Every `ray start` and the service use Ray's token (mounted on every node at Ray's default path, 0600)."""
    config = yaml.safe_load((CLUSTER / "cluster.yaml").read_text())
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    users = [c for c in starts if "ray start" in c or "rayac serve" in c]
    assert len(users) == 3 and all("RAY_AUTH_MODE=token" in c for c in users), users
    assert not any("RAY_AUTH_MODE=disabled" in c for c in starts)
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "cluster/.ray_token"
    assert "chmod 600 ~/.ray/auth_token" in config["setup_commands"]
