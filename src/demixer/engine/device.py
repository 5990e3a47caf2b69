"""Which torch device a separation runs on, from what the user asked for and what torch sees."""

from __future__ import annotations

from demixer.errors import DeviceUnavailable

__all__ = ["resolve_device"]


def resolve_device(setting: str) -> tuple[str, str]:
    """The torch device for a ``--device`` / ``DEMIXER_DEVICE`` value, and how to name it.

    ``cpu`` (the default) never imports torch. ``auto`` is the first CUDA GPU when torch sees
    one, else the CPU; ``cuda``/``cuda:N`` must exist. Returns e.g. ``("cuda:0",
    "cuda:0 (NVIDIA H100 80GB HBM3)")`` or ``("cpu", "cpu")``.

    Raises:
        DeviceUnavailable: a CUDA device torch does not see (a CPU-only torch, no such GPU).
    """
    wanted = setting.strip().lower()
    if wanted == "cpu":
        return "cpu", "cpu"
    import torch

    if wanted == "auto":
        if not torch.cuda.is_available():
            return "cpu", "cpu"
        wanted = "cuda"
    if not wanted.startswith("cuda"):  # mps, xpu…: usable when torch can put a tensor there
        try:
            torch.empty(0, device=wanted)
        except (RuntimeError, ValueError):  # torch's own words run to a page: not shown
            raise DeviceUnavailable(
                f"device {setting!r} is not one torch {torch.__version__} can use here; "
                "use cpu, cuda, cuda:N or auto"
            ) from None
        return wanted, wanted
    if not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"device {setting!r} was asked for but torch sees no CUDA GPU here "
            f"(torch {torch.__version__}); use cpu or auto"
        )
    try:
        index = torch.device(wanted).index or 0
    except RuntimeError as exc:  # "cuda:x", "cuda:-1"
        raise DeviceUnavailable(f"{setting!r} is not a device name: {exc}") from None
    if index >= torch.cuda.device_count():
        raise DeviceUnavailable(
            f"device {setting!r} was asked for but torch sees {torch.cuda.device_count()} GPU(s)"
        )
    # This initialises CUDA in the calling process: a worker's children are spawned, so safe.
    return f"cuda:{index}", f"cuda:{index} ({torch.cuda.get_device_name(index)})"
