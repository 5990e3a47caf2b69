"""The container image and the compose files, built and run for real (``make test-image``).

The image is built from the repository's Containerfile on a Debian base made here (no registry
of images is reachable; see image_support.py), then:

- run as users run it (its default command, a published port): ``/healthz`` and its
  ``HEALTHCHECK`` answer, a real song uploaded with the Python client comes back as stems that
  add up to it, it runs as a non-root user, and stops cleanly;
- ``demixer models pull`` in it writes to the model volume (tried against a local mirror);
- ``compose.scale-out.yaml`` under podman-compose, with stand-ins for the two images it names
  from registries (Debian's PostgreSQL and PyPI's rclone, built here): two API replicas, two
  worker replicas; a job runs on PostgreSQL + S3, the worker running it is killed, and the
  other one completes it.

Not part of ``make test`` (it takes minutes): deselected there by its ``image`` mark.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import soundfile as sf
from image_support import REPO, Podman, pip_build_options

from audiofiles import stempeg_example
from demixer import Client
from demixer.audio import load
from demixer.models.registry import get_spec
from local_origin import local_origin
from servers import free_port, rclone_binary

pytestmark = pytest.mark.image

IMAGE = "localhost/demixer:image-test"
PROJECT = "demixer-image-test"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image")


@pytest.fixture(scope="module")
def podman(work: Path) -> Podman:
    return Podman(work)


@pytest.fixture(scope="module")
def base(podman: Podman) -> str:
    return podman.base_image()


@pytest.fixture(scope="module")
def image(podman: Podman, base: str, work: Path) -> str:
    # PyPI's torch 2.13.0 for Linux is the CUDA build: the CPU wheel comes from the host's pip
    # settings (a local wheel directory here), as `make install` gets it.
    podman.build(
        "--network",
        "host",
        "--build-arg",
        f"BASE={base}",
        "--build-arg",
        "TORCH_INDEX=https://pypi.org/simple",
        *pip_build_options(work),
        "--tag",
        IMAGE,
        "--file",
        str(REPO / "Containerfile"),
        str(REPO),
        log=work / "build.log",
    )
    return IMAGE


def song(path: Path, seconds: float) -> Path:
    """The MUSDB18 excerpt stempeg ships, tiled to ``seconds``, as 16-bit WAV."""
    audio, rate = load(stempeg_example())
    count = int(seconds * rate)
    tiled = np.tile(audio, (1, -(-count // audio.shape[1])))[:, :count]
    sf.write(str(path), tiled.T, rate, subtype="PCM_16")
    return path


def assert_stems_add_up(paths: dict[str, Path], original: Path) -> None:
    """``vocals`` + ``residual`` decode to the song's rate and length and add back to it."""
    assert set(paths) == {"vocals", "residual"}
    mix, rate = sf.read(str(original), dtype="float32", always_2d=True)
    total = np.zeros_like(mix)
    for path in paths.values():
        stem, stem_rate = sf.read(str(path), dtype="float32", always_2d=True)
        assert stem_rate == rate and stem.shape == mix.shape
        assert np.abs(stem).max() > 0.01  # real audio, not silence
        total += stem
    # 16-bit stems: each rounded to 1/32768; the mix itself too.
    assert np.abs(total - mix).max() < 4 / 32768


def wait_http(
    url: str, timeout: float, status: int = 200, until: Callable[[Any], bool] | None = None
) -> httpx.Response:
    """The first answer with ``status`` (and whose JSON body satisfies ``until``, if given)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=5)
            if last.status_code == status and (until is None or until(last.json())):
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"{url} did not answer {status} in {timeout} s: {last!r}")


# --- the image alone --------------------------------------------------------------------------


def test_image_is_cpu_torch_with_spleeter_non_root_and_keeps_no_build_secrets(
    podman: Podman, image: str
) -> None:
    config = podman("image", "inspect", image, "--format", "json").stdout
    volumes_user_health = ('"/var/lib/demixer"', '"/models"', '"User": "10001:10001"')
    for expected in (*volumes_user_health, '"demixer-healthcheck"'):
        assert expected in config, expected
    assert "PIP_CONFIG_FILE" not in config and "PIP_CERT" not in config
    script = (
        "import importlib.metadata as m, os, torch\n"
        "names = sorted(d.metadata['Name'].lower() for d in m.distributions())\n"
        "print(torch.__version__, os.getuid(), [n for n in names if n.startswith('nvidia')])\n"
        "print(os.path.exists('/run/secrets/pipconf'), os.path.exists('/etc/pip.conf'))\n"
    )
    out = podman("run", "--rm", "--entrypoint", "python3", image, "-c", script).stdout
    assert out.split("\n")[:2] == ["2.13.0+cpu 10001 []", "False False"]
    listed = podman("run", "--rm", "-e", "COLUMNS=200", image, "models", "list").stdout
    assert re.search(r"spleeter-2stems +spleeter +yes ", listed), listed  # installed


def test_the_image_separates_a_song_uploaded_to_it(
    podman: Podman, image: str, tmp_path: Path
) -> None:
    port = free_port()
    name = f"{PROJECT}-embedded"
    podman("rm", "--force", "--volumes", name, check=False)
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--publish",
        f"127.0.0.1:{port}:8000",
        "--env",
        f"DEMIXER_PUBLIC_URL=http://127.0.0.1:{port}",
        image,  # its own command: serve on 0.0.0.0:8000 with one embedded worker
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_http(f"{base}/healthz", 120).json()["status"] == "ok"
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        ready = wait_http(f"{base}/readyz", 60).json()
        assert ready["checks"]["workers"] == {"ok": True, "detail": "1 live worker"}
        logs = podman("logs", name).stdout
        key = re.findall(r"^(dmx_\S+)$", logs, re.MULTILINE)
        assert len(key) == 1, logs  # printed once, on the first start
        path = song(tmp_path / "song.wav", 20.0)
        with Client(base, api_key=key[0], timeout=120) as client:
            paths = client.separate(path, stems=["vocals"], directory=tmp_path / "out")
        assert_stems_add_up(paths, path)
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        podman("stop", "--time", "30", name)
        state = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert state == "0", podman("logs", name).stderr[-3000:]
    finally:
        podman("rm", "--force", "--volumes", name, check=False)


def test_a_worker_container_alone_is_healthy_while_it_runs(podman: Podman, image: str) -> None:
    """A worker has no HTTP port: the image's HEALTHCHECK must not probe one for it (it did,
    so `docker run IMAGE worker` was reported unhealthy while working)."""
    name = f"{PROJECT}-worker-alone"
    podman("rm", "--force", "--volumes", name, check=False)
    podman("run", "--detach", "--name", name, image, "worker")
    try:
        state = podman("inspect", name, "--format", "{{.State.Running}}").stdout.strip()
        assert state == "true", podman("logs", name).stderr[-3000:]
        check = podman("healthcheck", "run", name, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        podman("rm", "--force", "--volumes", name, check=False)


def test_models_pull_writes_to_the_model_volume(podman: Podman, image: str) -> None:
    """No weights can be fetched here: the mirror serves the wrong bytes, so the pull in the
    container must reach it, refuse them (exit 4) and leave no file in the model volume."""
    volume = f"{PROJECT}-models"
    podman("volume", "rm", "--force", volume, check=False)
    weight = get_spec("htdemucs").weights[0]
    with local_origin() as origin:
        origin.files[urlsplit(weight.url).path.lstrip("/")] = (b"not the weights", "x/y")
        run = podman(
            "run",
            "--rm",
            "--network",
            "host",
            "--volume",
            f"{volume}:/models",
            "--env",
            f"DEMIXER_MODEL_BASE_URL={origin.url('')}",
            image,
            "models",
            "pull",
            "htdemucs",
            check=False,
        )
        mirror = origin.url(urlsplit(weight.url).path)
    try:
        said = run.stdout + run.stderr
        assert run.returncode == 4, said
        assert "[DOWNLOAD_FAILED]" in said and mirror in said, said
        files = podman(
            "run",
            "--rm",
            "--volume",
            f"{volume}:/models",
            "--entrypoint",
            "find",
            image,
            "/models",
            "-type",
            "f",
        ).stdout
        assert files == ""
    finally:
        podman("volume", "rm", "--force", volume, check=False)


# --- the scale-out stack ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standins(podman: Podman, base: str, work: Path) -> dict[str, str]:
    """Local images for the two services compose.scale-out.yaml takes from registries."""
    context = work / "standins"
    shutil.copytree(Path(__file__).parent / "standins", context)
    shutil.copy(rclone_binary(), context / "rclone")
    images = {}
    for name in ("postgres", "rclone"):
        tag = f"localhost/demixer-test-{name}:latest"
        podman.build(
            "--network",
            "host",
            "--build-arg",
            f"BASE={base}",
            "--tag",
            tag,
            "--file",
            str(context / f"{name}.Containerfile"),
            str(context),
            log=work / f"build-{name}.log",
        )
        images[name] = tag
    return images


def compose_command(file: str, project: str) -> list[str]:
    found = shutil.which("podman-compose", path=str(Path(sys.executable).parent))
    assert found, "podman-compose is not installed (make test-image installs it)"
    return [found, "--project-name", project, "--file", str(REPO / file)]


def compose_down(podman: Podman, command: list[str], env: dict[str, str], project: str) -> None:
    """Remove the project's containers with their anonymous volumes (the image's), its named
    volumes and its network: nothing is left on the machine."""
    label = f"label=io.podman.compose.project={project}"
    ids = podman("ps", "--all", "--quiet", "--filter", label).stdout.split()
    if ids:
        podman("rm", "--force", "--volumes", *ids, check=False)
    subprocess.run([*command, "down", "--volumes"], env=env, capture_output=True, timeout=300)
    podman("network", "rm", "--force", f"{project}_default", check=False)


def test_compose_yaml_runs_the_embedded_service(podman: Podman, image: str) -> None:
    port = free_port()
    project = f"{PROJECT}-embedded"
    env = {
        **podman.env,
        "DEMIXER_IMAGE": image,
        "DEMIXER_PORT": f"127.0.0.1:{port}",
        "DEMIXER_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    command = compose_command("compose.yaml", project)
    compose_down(podman, command, env, project)
    try:
        up = subprocess.run(
            [*command, "up", "--detach", "--no-build"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        ready = wait_http(f"http://127.0.0.1:{port}/readyz", 180).json()
        assert ready == {
            "status": "ready",
            "checks": {
                "database": {"ok": True, "detail": "ok"},
                "storage": {"ok": True, "detail": "ok"},
                "workers": {"ok": True, "detail": "1 live worker"},
            },
        }
        volumes = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
        assert {f"{project}_data", f"{project}_models"} <= set(volumes)
    finally:
        compose_down(podman, command, env, project)


@pytest.fixture
def stack(podman: Podman, image: str, standins: dict[str, str]) -> Iterator[dict[str, Any]]:
    s3_port = free_port()
    env = {
        **podman.env,
        "DEMIXER_IMAGE": image,
        "POSTGRES_IMAGE": standins["postgres"],
        "RCLONE_IMAGE": standins["rclone"],
        "POSTGRES_PASSWORD": "image-test-password",
        "S3_SECRET_KEY": "image-test-secret-key",
        "DEMIXER_S3_PORT": f"127.0.0.1:{s3_port}",
        "DEMIXER_S3_PUBLIC_URL": f"http://127.0.0.1:{s3_port}",
        "DEMIXER_API_PORTS": "127.0.0.1:",  # each replica a free host port
    }
    command = compose_command("compose.scale-out.yaml", PROJECT)
    compose_down(podman, command, env, PROJECT)
    up = subprocess.run(
        [*command, "up", "--detach"], env=env, capture_output=True, text=True, timeout=600
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        apis = []
        for n in (1, 2):
            mapped = podman("port", f"{PROJECT}_api_{n}", "8000").stdout.strip()
            apis.append(f"http://{mapped}")
        yield {"apis": apis, "s3": env["DEMIXER_S3_PUBLIC_URL"]}
    finally:
        for service in ("api", "worker"):  # shown when the test fails
            for n in (1, 2):
                logs = podman("logs", f"{PROJECT}_{service}_{n}", check=False)
                print(f"--- {service} {n}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        compose_down(podman, command, env, PROJECT)


def container_hostnames(podman: Podman, service: str) -> dict[str, str]:
    """hostname -> container name, for the service's replicas."""
    names = {}
    for n in (1, 2):
        name = f"{PROJECT}_{service}_{n}"
        names[podman("inspect", name, "--format", "{{.Config.Hostname}}").stdout.strip()] = name
    return names


def started_on(client: httpx.Client, request_id: str) -> list[str]:
    """The worker ids (``hostname:pid:random``) each attempt started on, in order."""
    logs = client.get(f"/v1/queue/requests/{request_id}/status", params={"logs": "true"})
    assert logs.status_code == 200, logs.text
    lines = [line["message"] for line in logs.json()["logs"] or []]
    return [m.rsplit(" on ", 1)[1] for m in lines if re.match(r"attempt \d+ started on ", m)]


def test_the_scale_out_stack_survives_a_killed_worker(
    podman: Podman, stack: dict[str, Any], tmp_path: Path
) -> None:
    first, second = stack["apis"]
    both = "2 live workers"
    for api in (first, second):  # both worker replicas register, seen by both APIs
        wait_http(f"{api}/readyz", 180, until=lambda r: r["checks"]["workers"]["detail"] == both)
    created = podman("exec", f"{PROJECT}_api_1", "demixer", "keys", "create").stdout
    key = created.strip().splitlines()[-1]
    path = song(tmp_path / "long.wav", 240.0)  # long enough to be killed while it runs
    headers = {"Authorization": f"Bearer {key}"}
    with (
        Client(second, api_key=key, timeout=120) as uploader,
        httpx.Client(base_url=first, headers=headers, timeout=30) as api,
    ):
        # Uploaded through one API replica straight to the bucket, followed through the other.
        info = uploader.upload(path)
        job = uploader.submit(info.file_id, stems=["vocals"], model="spleeter-2stems")
        deadline = time.monotonic() + 120
        while not (workers := started_on(api, job.request_id)):
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        hostname = workers[0].split(":")[0]
        replicas = container_hostnames(podman, "worker")
        victim = replicas.pop(hostname)
        podman("kill", "--signal", "KILL", victim)
        status = api.get(f"/v1/queue/requests/{job.request_id}/status").json()
        assert status["status"] == "IN_PROGRESS", status  # killed mid-job, not after it
        # Its lease runs out (30 s) and the other worker runs the job again.
        done = uploader.wait(job.request_id, timeout=600)
        assert done.status == "COMPLETED"
        attempts = started_on(api, job.request_id)
        assert [a.split(":")[0] for a in attempts] == [hostname, *replicas]
        # A killed container stays down (it was stopped by hand: no restart).
        state = podman("inspect", victim, "--format", "{{.State.Status}}").stdout.strip()
        assert state == "exited"
        paths = uploader.download(uploader.result(job.request_id), tmp_path / "stems")
        result = api.get(f"/v1/queue/requests/{job.request_id}/result").json()
        assert result["data"]["vocals"]["url"].startswith(stack["s3"])  # from the bucket
    assert_stems_add_up(paths, path)
    ready = wait_http(f"{first}/readyz", 60).json()
    assert ready["checks"]["workers"] == {"ok": True, "detail": "1 live worker"}
