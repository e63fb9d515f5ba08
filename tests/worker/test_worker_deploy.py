"""Deployment as documented: the Celery configuration, the Dockerfile stages, docker-compose.yml (checked
by the compose CLI when installed, and parsed), and the service commands' start-up errors."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from backend.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_worker_config_is_json_only_one_job_at_a_time_with_late_acks(tmp_path):
    from worker.app import worker_config

    embedded = worker_config(Settings(data_dir=tmp_path))
    served = worker_config(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0"))
    for config in (embedded, served):
        assert config["accept_content"] == ["json"] and config["task_serializer"] == "json"
        assert config["task_acks_late"] is True and config["worker_prefetch_multiplier"] == 1
        assert config["worker_pool"] == "solo" and config["worker_concurrency"] == 1
        assert [q.name for q in config["task_queues"]] == ["trace", "train", "train-multi"]
        assert config["task_routes"]["experiment.run"] == {"queue": "train"}
        assert config["task_routes"]["trace.run"] == config["task_routes"]["inspect.run"] == {"queue": "trace"}
    options = embedded["broker_transport_options"]
    assert embedded["broker_url"] == "filesystem://"
    assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path.resolve() / "broker" / "queue")
    assert options["polling_interval"] <= 0.2
    assert served["broker_url"].startswith("redis://")
    assert served["broker_transport_options"]["visibility_timeout"] >= 3600


def _stages(dockerfile: str) -> dict[str, str]:
    """Dockerfile text by stage name (``FROM ... AS name`` to the next FROM)."""
    stages: dict[str, list[str]] = {}
    current = None
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#"):
            continue  # comments: only instructions count
        if line.upper().startswith("FROM "):
            current = line.split()[-1]
            stages[current] = []
        if current is not None:
            stages[current].append(line)
    return {name: "\n".join(lines) for name, lines in stages.items()}


def test_dockerfile_api_stage_has_no_torch_and_reads_the_extras_from_pyproject():
    stages = _stages((REPO / "Dockerfile").read_text())
    assert {"base", "api", "worker", "engine"} <= set(stages)
    api = stages["api"]
    assert "FROM base AS api" in api
    # torch is named once, in the build-time check that it did not get in.
    assert api.count("torch") == 2 and "find_spec('torch')" in api and "torch found in the api image" in api
    assert "pip install --no-deps ." in api
    assert "tomllib" in api and "['service']" in api and "['dashboard']" in api
    assert "COPY worker" not in api  # the web image carries no worker code
    worker = stages["worker"]
    assert 'pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"' in worker
    assert "cu1" in worker and '".[service,gpu,lm-eval]"' in worker and "COPY frontend" not in worker
    # The extras the api stage installs exist and hold the web stack but no ML package.
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = " ".join(extras["service"] + extras["dashboard"])
    assert "fastapi" in wanted and "dash" in wanted and "torch" not in wanted and "transformers" not in wanted


def test_every_image_installs_the_locked_versions():
    """Each pip install of a stage reads constraints.txt, except torch's own (pinned to its index) and
    the api stage's --no-deps install of the package itself."""
    stages = _stages((REPO / "Dockerfile").read_text())
    for name in ("api", "worker", "engine"):
        text = stages[name].replace("\\\n", " ")
        assert "COPY pyproject.toml README.md constraints.txt ./" in text, name
        installs = [cmd.strip() for line in text.splitlines() for cmd in line.split("&&") if "pip install" in cmd]
        assert installs, name
        for command in installs:
            if "torch==" in command or "--no-deps" in command:
                continue
            assert "-c constraints.txt" in command, (name, command)


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services_health_checks_and_gpu_reservation():
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "redis", "api", "dashboard", "worker"} <= set(services)
    for name in ("postgres", "redis", "api", "dashboard", "worker"):
        check = services[name]["healthcheck"]
        assert check["test"] and check["interval"] and check["retries"] >= 3, name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "/api/v1/health" in " ".join(services["api"]["healthcheck"]["test"])
    assert "deploy" not in services["api"] and "deploy" not in services["dashboard"]  # no GPU for the web parts
    assert services["api"]["build"]["target"] == "api" and services["worker"]["build"]["target"] == "worker"
    assert services["dashboard"]["image"] == services["api"]["image"]  # the same torch-free image
    env = services["worker"]["environment"]
    assert env["LAYERTRACER_BROKER_URL"].startswith("redis://redis:")
    assert env["LAYERTRACER_DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["LAYERTRACER_DATABASE_URL"]
    assert services["api"]["environment"] == env  # one environment for both sides of the queue
    assert services["dashboard"]["environment"]["LAYERTRACER_API_URL"] == "http://api:8000"
    for name in ("api", "worker"):
        for dep in ("postgres", "redis"):
            assert services[name]["depends_on"][dep] == {"condition": "service_healthy"}
    worker_mounts = " ".join(services["worker"]["volumes"])
    assert "data:/data" in worker_mounts and "model-cache:/cache/huggingface" in worker_mounts
    assert ":/models:ro" in worker_mounts
    assert {"data", "pgdata", "model-cache"} <= set(compose["volumes"])


def _devices(service: dict) -> list[dict]:
    return service["deploy"]["resources"]["reservations"]["devices"]


def _enabled(services: dict, profiles: set[str]) -> list[str]:
    """The services ``docker compose --profile P ... up`` starts: those without profiles, and those
    naming one of the enabled profiles (the compose specification's rule)."""
    return [name for name, service in services.items()
            if not service.get("profiles") or profiles & set(service["profiles"])]


@pytest.mark.parametrize("profiles, gpus", [(set(), 1), ({"gpus-2"}, 2), ({"gpus-4"}, 4), ({"gpus-8"}, 8)])
def test_compose_gives_every_gpu_its_own_worker(profiles, gpus):
    """Each single-GPU worker reserves one device of its own (not `count: 1`, which gives every replica
    the same GPU: docker/compose#11863) and consumes the one-process queues; a profile starts GPUs 0..N-1."""
    from layertracer.spec.jobs import ALL_QUEUES, MULTI_PROCESS_QUEUE

    services = _compose()["services"]
    single = [name for name in _enabled(services, profiles)
              if services[name].get("build", {}).get("target") == "worker"]
    assert len(single) == gpus
    ids = []
    for name in single:
        (device,) = _devices(services[name])
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and "count" not in device
        ids += device["device_ids"]
        queues = services[name]["command"][services[name]["command"].index("--queues") + 1].split(",")
        assert set(queues) == set(ALL_QUEUES) - {MULTI_PROCESS_QUEUE}, name
        assert "data:/data" in services[name]["volumes"]  # job folders on the storage the API shares
    assert sorted(ids, key=int) == [str(i) for i in range(gpus)]


def test_compose_multi_gpu_worker_takes_the_multi_process_queue():
    from layertracer.spec.jobs import MULTI_PROCESS_QUEUE

    services = _compose()["services"]
    assert "worker-multi" not in _enabled(services, set())  # opt-in: it takes every GPU of its host
    multi = services["worker-multi"]
    assert "worker-multi" in _enabled(services, {"multi-gpu"})
    assert multi["command"][-2:] == ["--queues", MULTI_PROCESS_QUEUE]
    assert _devices(multi) == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert multi["shm_size"] and multi["environment"] == services["api"]["environment"]
    assert "data:/data" in multi["volumes"]


def test_compose_cli_accepts_the_file():
    if shutil.which("docker-compose"):
        command = ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"]
    else:
        pytest.skip("no compose CLI installed (CI installs docker-compose)")
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = subprocess.run(command[:-1], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert rendered.returncode == 0
    parsed = yaml.safe_load(rendered.stdout)
    assert parsed["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layertracer", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def test_up_with_the_port_taken_is_a_one_line_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli("up", "--data-dir", str(tmp_path), "--port", str(port))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: port {port} on 127.0.0.1 is already in use; stop what uses it or pick another with --port"]
    assert not (tmp_path / "layertracer.db").exists()  # nothing was started


def test_worker_refuses_unknown_queues(tmp_path):
    result = _cli("worker", "--data-dir", str(tmp_path), "--queues", "trace,gpu")
    assert result.returncode == 2 and "--queues takes trace, train, train-multi" in result.stderr
